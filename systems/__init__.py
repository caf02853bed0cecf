"""Dynamical systems that generate trajectories (numpy + scipy only)."""
