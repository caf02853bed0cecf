"""FitzHugh–Nagumo excitable neuron model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._registry import register
from .base import System

__all__ = ["FitzHughNagumo"]


@register
@dataclass(frozen=True)
class FitzHughNagumo(System):
    """``v' = v − v³/3 − w + I``, ``w' = (v + a − b w)/τ``; dissipative."""

    a: float = 0.7
    b: float = 0.8
    tau: float = 12.5
    I: float = 0.5  # external current

    name = "fitzhugh_nagumo"
    state_names = ("v", "w")
    initial_state = (1.0, 1.0)
    t_span = (0.0, 80.0)
    n_t = 401
    description = "v' = v − v³/3 − w + I ; w' = (v + a − b w)/τ"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        v, w = y[..., 0], y[..., 1]
        return np.stack([v - v**3 / 3 - w + self.I,
                         (v + self.a - self.b * w) / self.tau], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        v = y[..., 0]
        ones = np.ones_like(v)
        row0 = np.stack([1 - v**2, -ones], axis=-1)
        row1 = np.stack([ones / self.tau, -self.b / self.tau * ones], axis=-1)
        return np.stack([row0, row1], axis=-2)
