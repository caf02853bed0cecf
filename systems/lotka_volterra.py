"""Lotka–Volterra predator–prey model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._registry import register
from .base import System

__all__ = ["LotkaVolterra"]


@register
@dataclass(frozen=True)
class LotkaVolterra(System):
    """``x' = αx − βxy``, ``y' = δxy − γy`` (prey ``x``, predator ``y``).

    First integral ``V = δx − γ ln x + βy − α ln y`` on ``x, y > 0``.
    """

    alpha: float = 1.5
    beta: float = 1.0
    gamma: float = 3.0
    delta: float = 1.0

    name = "lotka_volterra"
    state_names = ("x", "y")
    initial_state = (1.0, 1.0)
    t_span = (0.0, 14.0)
    n_t = 141  # Δt = 0.1
    description = "x' = αx − βxy ; y' = δxy − γy"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, p = y[..., 0], y[..., 1]
        return np.stack([self.alpha * x - self.beta * x * p,
                         self.delta * x * p - self.gamma * p], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x, p = y[..., 0], y[..., 1]
        row0 = np.stack([self.alpha - self.beta * p, -self.beta * x], axis=-1)
        row1 = np.stack([self.delta * p, self.delta * x - self.gamma], axis=-1)
        return np.stack([row0, row1], axis=-2)

    def invariants(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """``{"V": (...)}`` for ``y`` (..., 2) with positive entries."""
        x, p = y[..., 0], y[..., 1]
        return {"V": self.delta * x - self.gamma * np.log(x)
                + self.beta * p - self.alpha * np.log(p)}

    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Log-uniform multiplicative: ``y0 * exp(spread * U(-1, 1))``, stays positive."""
        return self.y0 * np.exp(spread * rng.uniform(-1.0, 1.0, size=(n, self.dim)))
