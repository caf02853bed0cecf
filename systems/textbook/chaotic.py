"""Three-dimensional chaotic flows, on ranges short enough to be predictable."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._registry import register
from ._base import TextbookSystem, number as _n

__all__ = ["Lorenz", "Rossler"]


@register
@dataclass(frozen=True)
class Lorenz(TextbookSystem):
    """``x' = σ(y − x)``, ``y' = x(ρ − z) − y``, ``z' = xy − βz`` (Strogatz ch. 9), simulated for
    about two Lyapunov times (largest exponent ≈ 0.9)."""

    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0

    name = "lorenz"
    state_names = ("x", "y", "z")
    initial_state = (-8.0, 8.0, 27.0)
    test_state = (1.0, 1.0, 20.0)
    t_span = (0.0, 2.5)
    n_t = 251
    description = "x' = σ(y − x) ; y' = x(ρ − z) − y ; z' = xy − βz"
    source = "Strogatz, Nonlinear Dynamics and Chaos, ch. 9"

    @property
    def phase_pairs(self) -> tuple[tuple[int, int], ...]:
        return ((0, 2),)

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 3) -> (..., 3)."""
        x, w, z = y[..., 0], y[..., 1], y[..., 2]
        return np.stack([self.sigma * (w - x), x * (self.rho - z) - w, x * w - self.beta * z], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 3) -> (..., 3, 3)."""
        x, w, z = y[..., 0], y[..., 1], y[..., 2]
        one = np.ones_like(x)
        rows = [np.stack([-self.sigma * one, self.sigma * one, 0 * x], axis=-1),
                np.stack([self.rho - z, -one, -x], axis=-1),
                np.stack([w, x, -self.beta * one], axis=-1)]
        return np.stack(rows, axis=-2)

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.sigma)}*(y - x)", f"x*({_n(self.rho)} - z) - y", f"x*y - {_n(self.beta)}*z")


@register
@dataclass(frozen=True)
class Rossler(TextbookSystem):
    """``x' = −y − z``, ``y' = x + ay``, ``z' = b + z(x − c)`` (Strogatz §12.3)."""

    a: float = 0.2
    b: float = 0.2
    c: float = 5.7

    name = "rossler"
    state_names = ("x", "y", "z")
    initial_state = (1.0, 1.0, 0.0)
    test_state = (-3.0, 2.0, 0.5)
    t_span = (0.0, 30.0)
    n_t = 301
    description = "x' = −y − z ; y' = x + ay ; z' = b + z(x − c)"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §12.3"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 3) -> (..., 3)."""
        x, w, z = y[..., 0], y[..., 1], y[..., 2]
        return np.stack([-w - z, x + self.a * w, self.b + z * (x - self.c)], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 3) -> (..., 3, 3)."""
        x, z = y[..., 0], y[..., 2]
        zero, one = np.zeros_like(x), np.ones_like(x)
        rows = [np.stack([zero, -one, -one], axis=-1),
                np.stack([one, self.a * one, zero], axis=-1),
                np.stack([z, zero, x - self.c], axis=-1)]
        return np.stack(rows, axis=-2)

    def equations(self) -> tuple[str, ...]:
        return "-y - z", f"x + {_n(self.a)}*y", f"{_n(self.b)} + z*(x - {_n(self.c)})"
