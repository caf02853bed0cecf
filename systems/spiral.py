"""Cubic spiral: the torchdiffeq ODE demo system."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._registry import register
from .base import System

__all__ = ["Spiral"]


@register
@dataclass(frozen=True)
class Spiral(System):
    """``(x, y)' = (x³, y³) A`` (row vector times ``A``); dissipative.

    ``A`` is stored as a tuple of tuples so the dataclass stays hashable;
    lists are converted.
    """

    A: tuple[tuple[float, float], tuple[float, float]] = ((-0.1, 2.0), (-2.0, -0.1))

    name = "spiral"
    state_names = ("x", "y")
    initial_state = (2.0, 0.0)
    t_span = (0.0, 25.0)
    n_t = 1000
    description = "(x, y)' = (x³, y³) A, A = [[−0.1, 2], [−2, −0.1]]"

    def __post_init__(self) -> None:
        matrix = np.asarray(self.A, dtype=np.float64)
        if matrix.shape != (2, 2):
            raise ValueError(f"spiral: A must be 2x2, got shape {matrix.shape}")
        object.__setattr__(self, "A", tuple(tuple(float(v) for v in row) for row in matrix))

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        return (np.asarray(y) ** 3) @ np.asarray(self.A)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2); ``J[i, k] = 3 y_k² A[k, i]``."""
        return np.asarray(self.A).T * (3 * np.asarray(y) ** 2)[..., None, :]
