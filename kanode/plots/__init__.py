"""Matplotlib figures. Every function takes data and returns a Figure."""

from .compare import plot_loss_comparison
from .run import loss_curves, phase_portrait, trajectory_fit, vector_field_error

__all__ = ["loss_curves", "phase_portrait", "plot_loss_comparison", "trajectory_fit",
           "vector_field_error"]
