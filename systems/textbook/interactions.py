"""Interacting populations: competition, predation with saturation, a genetic switch, epidemics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._registry import register
from ._base import TextbookSystem, number as _n

__all__ = ["Competition", "HollingPredatorPrey", "SIR", "ToggleSwitch"]


def _positive(system: TextbookSystem, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    """Log-uniform multiplicative draws around ``system.y0`` (positive states), shape ``(n, dim)``."""
    return system.y0 * np.exp(spread * rng.uniform(-1.0, 1.0, size=(n, system.dim)))


@register
@dataclass(frozen=True)
class Competition(TextbookSystem):
    """Lotka–Volterra competition, rabbits ``x`` vs sheep ``y`` (Strogatz §6.4):
    ``x' = x(a − x − b y)``, ``y' = y(c − d x − y)``.

    With a, b, c, d = 3, 2, 2, 1 the coexistence state (1, 1) is a saddle: the training start
    ends with rabbits only, the test start with sheep only.
    """

    a: float = 3.0
    b: float = 2.0
    c: float = 2.0
    d: float = 1.0

    name = "competition"
    state_names = ("x", "y")
    initial_state = (1.0, 0.5)
    test_state = (0.5, 1.5)
    t_span = (0.0, 12.0)
    n_t = 121
    description = "x' = x(a − x − by) ; y' = y(c − dx − y)"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §6.4"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, s = y[..., 0], y[..., 1]
        return np.stack([x * (self.a - x - self.b * s), s * (self.c - self.d * x - s)], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x, s = y[..., 0], y[..., 1]
        row0 = np.stack([self.a - 2 * x - self.b * s, -self.b * x], axis=-1)
        row1 = np.stack([-self.d * s, self.c - self.d * x - 2 * s], axis=-1)
        return np.stack([row0, row1], axis=-2)

    def equations(self) -> tuple[str, ...]:
        return f"x*({_n(self.a)} - x - {_n(self.b)}*y)", f"y*({_n(self.c)} - {_n(self.d)}*x - y)"

    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Log-uniform multiplicative around y0 (positive populations)."""
        return _positive(self, rng, n, spread)


@register
@dataclass(frozen=True)
class HollingPredatorPrey(TextbookSystem):
    """Rosenzweig–MacArthur predator–prey with a Holling type II response (half-saturation 1):
    ``x' = r x (1 − x/K) − a x y/(1 + x)``, ``y' = e a x y/(1 + x) − m y``.

    Past the Hopf point (K > 1 + 2x*) the prey and predator settle on a limit cycle
    (the paradox of enrichment).
    """

    r: float = 1.0
    K: float = 3.0
    a: float = 1.0
    e: float = 1.0
    m: float = 0.4

    name = "holling_predator_prey"
    state_names = ("x", "y")
    initial_state = (1.0, 0.5)
    test_state = (2.5, 1.0)
    t_span = (0.0, 50.0)
    n_t = 251
    description = "x' = rx(1 − x/K) − axy/(1 + x) ; y' = eaxy/(1 + x) − my"
    source = "Murray, Mathematical Biology I, §3.4; Rosenzweig & MacArthur, Am. Nat. 97 (1963)"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        x, p = y[..., 0], y[..., 1]
        eaten = self.a * x * p / (1 + x)
        return np.stack([self.r * x * (1 - x / self.K) - eaten, self.e * eaten - self.m * p], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        x, p = y[..., 0], y[..., 1]
        d_dx = self.a * p / (1 + x) ** 2       # ∂(axy/(1+x))/∂x
        d_dp = self.a * x / (1 + x)            # ∂(axy/(1+x))/∂y
        row0 = np.stack([self.r * (1 - 2 * x / self.K) - d_dx, -d_dp], axis=-1)
        row1 = np.stack([self.e * d_dx, self.e * d_dp - self.m], axis=-1)
        return np.stack([row0, row1], axis=-2)

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.r)}*x*(1 - x/{_n(self.K)}) - {_n(self.a)}*x*y/(1 + x)",
                f"{_n(self.e * self.a)}*x*y/(1 + x) - {_n(self.m)}*y")

    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Log-uniform multiplicative around y0 (positive populations)."""
        return _positive(self, rng, n, spread)


@register
@dataclass(frozen=True)
class ToggleSwitch(TextbookSystem):
    """Gardner–Collins genetic toggle switch ``u' = a/(1 + v²) − u``, ``v' = a/(1 + u²) − v``
    (Strogatz Exercise 8.1.14 with n = 2): bistable for a > 2; the two starts pick different sides.
    """

    a: float = 3.0

    name = "toggle_switch"
    state_names = ("u", "v")
    initial_state = (2.0, 0.5)
    test_state = (0.3, 1.5)
    t_span = (0.0, 10.0)
    n_t = 101
    description = "u' = a/(1 + v²) − u ; v' = a/(1 + u²) − v"
    source = "Gardner, Cantor & Collins, Nature 403 (2000); Strogatz, Exercise 8.1.14"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2)."""
        u, v = y[..., 0], y[..., 1]
        return np.stack([self.a / (1 + v**2) - u, self.a / (1 + u**2) - v], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 2) -> (..., 2, 2)."""
        u, v = y[..., 0], y[..., 1]
        one = np.ones_like(u)
        row0 = np.stack([-one, -2 * self.a * v / (1 + v**2) ** 2], axis=-1)
        row1 = np.stack([-2 * self.a * u / (1 + u**2) ** 2, -one], axis=-1)
        return np.stack([row0, row1], axis=-2)

    def equations(self) -> tuple[str, ...]:
        return f"{_n(self.a)}/(1 + v**2) - u", f"{_n(self.a)}/(1 + u**2) - v"

    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Log-uniform multiplicative around y0 (positive concentrations)."""
        return _positive(self, rng, n, spread)


@register
@dataclass(frozen=True)
class SIR(TextbookSystem):
    """Kermack–McKendrick epidemic with births and deaths, in units of the steady population
    (Hethcote 2000, §2): ``s' = μ − βsi − μs``, ``i' = βsi − (γ + μ)i``, ``r' = γi − μr``.

    The total ``N = s + i + r`` relaxes as ``N' = μ(1 − N)``; both starts have ``N ≠ 1``, so
    the states are not tied by a conserved sum (with ``s + i + r`` constant the law would not
    be identifiable from data: ``i = i(s + i + r)/N``).
    """

    beta: float = 1.5
    gamma: float = 0.3
    mu: float = 0.2

    name = "sir"
    state_names = ("s", "i", "r")
    initial_state = (0.59, 0.01, 0.0)
    test_state = (0.9, 0.05, 0.25)
    t_span = (0.0, 30.0)
    n_t = 151
    description = "s' = μ − βsi − μs ; i' = βsi − (γ + μ)i ; r' = γi − μr"
    source = "Hethcote, SIAM Review 42 (2000), §2; Murray, Mathematical Biology I, §10.2"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 3) -> (..., 3)."""
        s, i, r = y[..., 0], y[..., 1], y[..., 2]
        infections = self.beta * s * i
        return np.stack([self.mu - infections - self.mu * s, infections - (self.gamma + self.mu) * i,
                         self.gamma * i - self.mu * r], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 3) -> (..., 3, 3)."""
        s, i = y[..., 0], y[..., 1]
        zero, one = np.zeros_like(s), np.ones_like(s)
        rows = [np.stack([-self.beta * i - self.mu, -self.beta * s, zero], axis=-1),
                np.stack([self.beta * i, self.beta * s - self.gamma - self.mu, zero], axis=-1),
                np.stack([zero, self.gamma * one, -self.mu * one], axis=-1)]
        return np.stack(rows, axis=-2)

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.mu)} - {_n(self.beta)}*s*i - {_n(self.mu)}*s",
                f"{_n(self.beta)}*s*i - {_n(self.gamma + self.mu)}*i",
                f"{_n(self.gamma)}*i - {_n(self.mu)}*r")

    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Log-uniform multiplicative around y0: positive fractions (``r`` stays 0 from 0)."""
        return _positive(self, rng, n, spread)
