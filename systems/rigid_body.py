"""Euler equations of a free rigid body."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._registry import register
from .base import System

__all__ = ["RigidBody"]


@register
@dataclass(frozen=True)
class RigidBody(System):
    """``y1' = I1 y2 y3``, ``y2' = I2 y1 y3``, ``y3' = I3 y1 y2``.

    Quadratic first integrals ``I2 y1² − I1 y2²`` and ``I3 y1² − I1 y3²``.
    """

    I1: float = -2.0
    I2: float = 1.25
    I3: float = -0.5

    name = "rigid_body"
    state_names = ("y1", "y2", "y3")
    initial_state = (1.0, 0.0, 0.9)
    t_span = (0.0, 20.0)
    n_t = 201
    description = "y1' = I1 y2 y3 ; y2' = I2 y1 y3 ; y3' = I3 y1 y2"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 3) -> (..., 3)."""
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        return np.stack([self.I1 * y2 * y3, self.I2 * y1 * y3, self.I3 * y1 * y2], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 3) -> (..., 3, 3)."""
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        zero = np.zeros_like(y1)
        return np.stack([
            np.stack([zero, self.I1 * y3, self.I1 * y2], axis=-1),
            np.stack([self.I2 * y3, zero, self.I2 * y1], axis=-1),
            np.stack([self.I3 * y2, self.I3 * y1, zero], axis=-1),
        ], axis=-2)

    def invariants(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """``{"C12", "C13"}``, each of shape ``y.shape[:-1]``."""
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        return {"C12": self.I2 * y1**2 - self.I1 * y2**2,
                "C13": self.I3 * y1**2 - self.I1 * y3**2}
