"""Matplotlib figures. Every function takes data and returns a Figure."""

from .compare import plot_loss_comparison
from .forecast import forecast_figure
from .run import learned_vector_field, loss_curves, phase_portrait, trajectory_fit, vector_field_error

__all__ = ["forecast_figure", "learned_vector_field", "loss_curves", "phase_portrait", "plot_loss_comparison",
           "trajectory_fit", "vector_field_error"]
