"""Chemical kinetics: the Brusselator, Sel'kov glycolysis, the CIMA reaction, thermal runaway."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._registry import register
from ._base import TextbookSystem, number as _n
from .interactions import _positive

__all__ = ["Brusselator", "LengyelEpstein", "Selkov", "ThermalRunaway"]


@register
@dataclass(frozen=True)
class Brusselator(TextbookSystem):
    """``x' = a − (b + 1)x + x²y``, ``y' = bx − x²y`` (Strogatz Exercise 7.3.2); a limit cycle
    for ``b > 1 + a²``."""

    a: float = 1.0
    b: float = 2.5

    name = "brusselator"
    state_names = ("x", "y")
    initial_state = (1.0, 1.0)
    test_state = (2.0, 3.0)
    t_span = (0.0, 20.0)
    n_t = 201
    description = "x' = a − (b + 1)x + x²y ; y' = bx − x²y"
    source = "Strogatz, Nonlinear Dynamics and Chaos, Exercise 7.3.2"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, c = y[..., 0], y[..., 1]
        return np.stack([self.a - (self.b + 1) * x + x**2 * c, self.b * x - x**2 * c], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x, c = y[..., 0], y[..., 1]
        row0 = np.stack([-(self.b + 1) + 2 * x * c, x**2], axis=-1)
        row1 = np.stack([self.b - 2 * x * c, -(x**2)], axis=-1)
        return np.stack([row0, row1], axis=-2)

    def equations(self) -> tuple[str, ...]:
        return f"{_n(self.a)} - {_n(self.b + 1)}*x + x**2*y", f"{_n(self.b)}*x - x**2*y"

    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Log-uniform multiplicative around y0 (positive concentrations)."""
        return _positive(self, rng, n, spread)


@register
@dataclass(frozen=True)
class Selkov(TextbookSystem):
    """Sel'kov's glycolysis model ``x' = −x + ay + x²y``, ``y' = b − ay − x²y`` (Strogatz §7.3);
    a limit cycle at a = 0.08, b = 0.6."""

    a: float = 0.08
    b: float = 0.6

    name = "selkov"
    state_names = ("x", "y")
    initial_state = (1.0, 1.0)
    test_state = (0.2, 2.0)
    t_span = (0.0, 40.0)
    n_t = 201
    description = "x' = −x + ay + x²y ; y' = b − ay − x²y"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §7.3"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, c = y[..., 0], y[..., 1]
        return np.stack([-x + self.a * c + x**2 * c, self.b - self.a * c - x**2 * c], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x, c = y[..., 0], y[..., 1]
        row0 = np.stack([-1 + 2 * x * c, self.a + x**2], axis=-1)
        row1 = np.stack([-2 * x * c, -self.a - x**2], axis=-1)
        return np.stack([row0, row1], axis=-2)

    def equations(self) -> tuple[str, ...]:
        return f"-x + {_n(self.a)}*y + x**2*y", f"{_n(self.b)} - {_n(self.a)}*y - x**2*y"

    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Log-uniform multiplicative around y0 (positive concentrations)."""
        return _positive(self, rng, n, spread)


@register
@dataclass(frozen=True)
class LengyelEpstein(TextbookSystem):
    """Lengyel–Epstein model of the chlorine dioxide–iodine–malonic acid reaction
    (Strogatz §8.3): ``x' = a − x − 4xy/(1 + x²)``, ``y' = bx(1 − y/(1 + x²))``; a limit cycle
    for ``b < 3a/5 − 25/a``."""

    a: float = 10.0
    b: float = 2.0

    name = "lengyel_epstein"
    state_names = ("x", "y")
    initial_state = (1.0, 3.0)
    test_state = (3.0, 8.0)
    t_span = (0.0, 20.0)
    n_t = 201
    description = "x' = a − x − 4xy/(1 + x²) ; y' = bx(1 − y/(1 + x²))"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §8.3"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, c = y[..., 0], y[..., 1]
        ratio = x * c / (1 + x**2)
        return np.stack([self.a - x - 4 * ratio, self.b * (x - ratio)], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x, c = y[..., 0], y[..., 1]
        d_dx = c * (1 - x**2) / (1 + x**2) ** 2   # ∂(xy/(1+x²))/∂x
        d_dy = x / (1 + x**2)                     # ∂(xy/(1+x²))/∂y
        row0 = np.stack([-1 - 4 * d_dx, -4 * d_dy], axis=-1)
        row1 = np.stack([self.b * (1 - d_dx), -self.b * d_dy], axis=-1)
        return np.stack([row0, row1], axis=-2)

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.a)} - x - 4*x*y/(1 + x**2)",
                f"{_n(self.b)}*x - {_n(self.b)}*x*y/(1 + x**2)")

    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Log-uniform multiplicative around y0 (positive concentrations)."""
        return _positive(self, rng, n, spread)


@register
@dataclass(frozen=True)
class ThermalRunaway(TextbookSystem):
    """Semenov's thermal explosion in Frank-Kamenetskii's exponential approximation:
    ``θ' = δ e^θ − θ`` (Arrhenius heating against Newtonian cooling). Below ``δ = 1/e`` a cool
    steady state exists; both starts lie below the unstable one and settle there."""

    delta: float = 0.3

    name = "thermal_runaway"
    state_names = ("theta",)
    initial_state = (0.0,)
    test_state = (1.6,)
    t_span = (0.0, 10.0)
    n_t = 101
    description = "θ' = δ e^θ − θ"
    source = "Frank-Kamenetskii, Diffusion and Heat Exchange in Chemical Kinetics (1955), ch. 6"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1)."""
        return self.delta * np.exp(y) - y

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1, 1)."""
        return (self.delta * np.exp(y) - 1)[..., None]

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.delta)}*exp(theta) - theta",)
