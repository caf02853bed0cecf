"""Oscillators ``x'' = g(x, x')`` written as ``x' = v, v' = g(x, v)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._registry import register
from ._base import TextbookSystem, number as _n

__all__ = ["DampedHarmonic", "DoubleWell", "Duffing", "VanDerPol"]


def _jacobian(dg_dx: np.ndarray, dg_dv: np.ndarray) -> np.ndarray:
    """Jacobian of ``(v, g(x, v))`` from ``∂g/∂x`` and ``∂g/∂v`` (...) -> (..., 2, 2)."""
    zero, one = np.zeros_like(dg_dx), np.ones_like(dg_dx)
    return np.stack([np.stack([zero, one], axis=-1), np.stack([dg_dx, dg_dv], axis=-1)], axis=-2)


@register
@dataclass(frozen=True)
class DampedHarmonic(TextbookSystem):
    """``x'' + 2ζω x' + ω² x = 0`` (Strogatz §5.1; underdamped for ζ < 1)."""

    omega: float = 2.0
    zeta: float = 0.1

    name = "damped_harmonic"
    state_names = ("x", "v")
    initial_state = (1.0, 0.0)
    test_state = (-0.5, 1.5)
    t_span = (0.0, 15.0)
    n_t = 151
    description = "x' = v ; v' = −ω²x − 2ζωv"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §5.1"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, v = y[..., 0], y[..., 1]
        return np.stack([v, -self.omega**2 * x - 2 * self.zeta * self.omega * v], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x = y[..., 0]
        return _jacobian(np.full_like(x, -self.omega**2), np.full_like(x, -2 * self.zeta * self.omega))

    def equations(self) -> tuple[str, ...]:
        return "v", f"-{_n(self.omega**2)}*x - {_n(2 * self.zeta * self.omega)}*v"


@register
@dataclass(frozen=True)
class VanDerPol(TextbookSystem):
    """``x'' − μ(1 − x²)x' + x = 0`` (Strogatz §7.1); a relaxation limit cycle for large μ."""

    mu: float = 1.5

    name = "van_der_pol"
    state_names = ("x", "v")
    initial_state = (2.0, 0.0)
    test_state = (0.5, -1.0)
    t_span = (0.0, 20.0)
    n_t = 201
    description = "x' = v ; v' = μ(1 − x²)v − x"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §7.1"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, v = y[..., 0], y[..., 1]
        return np.stack([v, self.mu * (1 - x**2) * v - x], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x, v = y[..., 0], y[..., 1]
        return _jacobian(-2 * self.mu * x * v - 1, self.mu * (1 - x**2))

    def equations(self) -> tuple[str, ...]:
        return "v", f"{_n(self.mu)}*(1 - x**2)*v - x"


@register
@dataclass(frozen=True)
class Duffing(TextbookSystem):
    """Unforced damped Duffing oscillator ``x'' + δx' + αx + βx³ = 0`` (hardening for β > 0)."""

    alpha: float = 1.0
    beta: float = 0.5
    delta: float = 0.2

    name = "duffing"
    state_names = ("x", "v")
    initial_state = (1.5, 0.0)
    test_state = (-1.0, 1.0)
    t_span = (0.0, 20.0)
    n_t = 201
    description = "x' = v ; v' = −αx − βx³ − δv"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §7.6 (unforced)"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, v = y[..., 0], y[..., 1]
        return np.stack([v, -self.alpha * x - self.beta * x**3 - self.delta * v], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x = y[..., 0]
        return _jacobian(-self.alpha - 3 * self.beta * x**2, np.full_like(x, -self.delta))

    def equations(self) -> tuple[str, ...]:
        return "v", f"-{_n(self.alpha)}*x - {_n(self.beta)}*x**3 - {_n(self.delta)}*v"


@register
@dataclass(frozen=True)
class DoubleWell(TextbookSystem):
    """Damped particle in the double well ``V = −a x²/2 + b x⁴/4``: ``x'' = a x − b x³ − δx'``.

    Wells at ``x = ±√(a/b)``; both starts have the energy to cross the barrier first.
    """

    a: float = 1.0
    b: float = 1.0
    delta: float = 0.25

    name = "double_well"
    state_names = ("x", "v")
    initial_state = (0.1, 1.0)
    test_state = (-1.5, 0.0)
    t_span = (0.0, 25.0)
    n_t = 251
    description = "x' = v ; v' = ax − bx³ − δv"
    source = "Strogatz, Nonlinear Dynamics and Chaos, Example 6.5.2 (with damping)"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, v = y[..., 0], y[..., 1]
        return np.stack([v, self.a * x - self.b * x**3 - self.delta * v], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x = y[..., 0]
        return _jacobian(self.a - 3 * self.b * x**2, np.full_like(x, -self.delta))

    def equations(self) -> tuple[str, ...]:
        return "v", f"{_n(self.a)}*x - {_n(self.b)}*x**3 - {_n(self.delta)}*v"
