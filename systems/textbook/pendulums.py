"""Pendulums and phase oscillators: sine and cosine terms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._registry import register
from ._base import TextbookSystem, number as _n
from .oscillators import _jacobian

__all__ = ["DampedPendulum", "Glider", "NonuniformOscillator", "OverdampedHoop", "Pendulum",
           "TorquePendulum"]


@register
@dataclass(frozen=True)
class Pendulum(TextbookSystem):
    """Frictionless pendulum ``θ'' + (g/L) sin θ = 0`` (Strogatz §6.7); energy is conserved."""

    g_over_l: float = 2.0

    name = "pendulum"
    state_names = ("theta", "omega")
    initial_state = (1.0, 0.0)
    test_state = (-0.5, 1.5)
    t_span = (0.0, 15.0)
    n_t = 151
    description = "θ' = ω ; ω' = −(g/L) sin θ"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §6.7"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        theta, omega = y[..., 0], y[..., 1]
        return np.stack([omega, -self.g_over_l * np.sin(theta)], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        theta = y[..., 0]
        return _jacobian(-self.g_over_l * np.cos(theta), np.zeros_like(theta))

    def invariants(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """``{"energy": ω²/2 − (g/L) cos θ}`` for ``y`` (..., 2)."""
        return {"energy": 0.5 * y[..., 1] ** 2 - self.g_over_l * np.cos(y[..., 0])}

    def equations(self) -> tuple[str, ...]:
        return "omega", f"-{_n(self.g_over_l)}*sin(theta)"


@register
@dataclass(frozen=True)
class DampedPendulum(TextbookSystem):
    """``θ'' + b θ' + (g/L) sin θ = 0`` started at a large amplitude (Strogatz §6.7)."""

    b: float = 0.3
    g_over_l: float = 4.0

    name = "damped_pendulum"
    state_names = ("theta", "omega")
    initial_state = (2.5, 0.0)
    test_state = (-1.0, 2.0)
    t_span = (0.0, 20.0)
    n_t = 201
    description = "θ' = ω ; ω' = −bω − (g/L) sin θ"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §6.7"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        theta, omega = y[..., 0], y[..., 1]
        return np.stack([omega, -self.b * omega - self.g_over_l * np.sin(theta)], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        theta = y[..., 0]
        return _jacobian(-self.g_over_l * np.cos(theta), np.full_like(theta, -self.b))

    def equations(self) -> tuple[str, ...]:
        return "omega", f"-{_n(self.b)}*omega - {_n(self.g_over_l)}*sin(theta)"


@register
@dataclass(frozen=True)
class TorquePendulum(TextbookSystem):
    """Damped pendulum under a constant torque, ``θ'' + αθ' + sin θ = I`` (Strogatz §8.5)."""

    alpha: float = 0.8
    torque: float = 0.5

    name = "torque_pendulum"
    state_names = ("theta", "omega")
    initial_state = (0.0, 2.0)
    test_state = (-2.0, 0.0)
    t_span = (0.0, 20.0)
    n_t = 201
    description = "θ' = ω ; ω' = I − αω − sin θ"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §8.5"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        theta, omega = y[..., 0], y[..., 1]
        return np.stack([omega, self.torque - self.alpha * omega - np.sin(theta)], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        theta = y[..., 0]
        return _jacobian(-np.cos(theta), np.full_like(theta, -self.alpha))

    def equations(self) -> tuple[str, ...]:
        return "omega", f"{_n(self.torque)} - {_n(self.alpha)}*omega - sin(theta)"


@register
@dataclass(frozen=True)
class NonuniformOscillator(TextbookSystem):
    """``θ' = ω − a sin θ`` (Strogatz §4.3); for ``a < ω`` θ keeps turning, slowly near π/2."""

    omega: float = 1.0
    a: float = 0.8

    name = "nonuniform_oscillator"
    state_names = ("theta",)
    initial_state = (0.0,)
    test_state = (2.0,)
    t_span = (0.0, 20.0)
    n_t = 201
    description = "θ' = ω − a sin θ"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §4.3"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1)."""
        return self.omega - self.a * np.sin(y)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1, 1)."""
        return (-self.a * np.cos(y))[..., None]

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.omega)} - {_n(self.a)}*sin(theta)",)


@register
@dataclass(frozen=True)
class OverdampedHoop(TextbookSystem):
    """Overdamped bead on a rotating hoop, ``φ' = sin φ (γ cos φ − 1)`` (Strogatz §3.5).

    For ``γ > 1`` the bottom is unstable and the bead settles at ``±arccos(1/γ)``.
    """

    gamma: float = 2.0

    name = "overdamped_hoop"
    state_names = ("phi",)
    initial_state = (0.3,)
    test_state = (-2.5,)
    t_span = (0.0, 10.0)
    n_t = 101
    description = "φ' = sin φ (γ cos φ − 1)"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §3.5"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1)."""
        return np.sin(y) * (self.gamma * np.cos(y) - 1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1, 1)."""
        return (self.gamma * np.cos(2 * y) - np.cos(y))[..., None]

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.gamma)}*sin(phi)*cos(phi) - sin(phi)",)


@register
@dataclass(frozen=True)
class Glider(TextbookSystem):
    """Glider with drag ``D`` (Strogatz Exercise 6.5.14): speed ``v > 0``, flight angle ``θ``.

    ``v' = −sin θ − Dv²``, ``v θ' = −cos θ + v²``; trajectories spiral into steady gliding.
    """

    drag: float = 0.2

    name = "glider"
    state_names = ("v", "theta")
    initial_state = (1.5, 0.5)
    test_state = (2.0, -0.5)
    t_span = (0.0, 20.0)
    n_t = 201
    description = "v' = −sin θ − Dv² ; θ' = (v² − cos θ)/v"
    source = "Strogatz, Nonlinear Dynamics and Chaos, Exercise 6.5.14"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) with ``v > 0`` -> (..., 2)."""
        v, theta = y[..., 0], y[..., 1]
        return np.stack([-np.sin(theta) - self.drag * v**2, v - np.cos(theta) / v], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        v, theta = y[..., 0], y[..., 1]
        row0 = np.stack([-2 * self.drag * v, -np.cos(theta)], axis=-1)
        row1 = np.stack([1 + np.cos(theta) / v**2, np.sin(theta) / v], axis=-1)
        return np.stack([row0, row1], axis=-2)

    def equations(self) -> tuple[str, ...]:
        return f"-sin(theta) - {_n(self.drag)}*v**2", "v - cos(theta)/v"
