"""One-dimensional growth laws: logistic, bistable, spruce budworm, Gompertz."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._registry import register
from ._base import TextbookSystem, number as _n

__all__ = ["Bistable", "Gompertz", "Logistic", "SpruceBudworm"]


@register
@dataclass(frozen=True)
class Logistic(TextbookSystem):
    """``x' = r x (1 − x/K)`` (Strogatz §2.3); the test start lies above the capacity K."""

    r: float = 0.8
    K: float = 10.0

    name = "logistic"
    state_names = ("x",)
    initial_state = (0.5,)
    test_state = (15.0,)
    t_span = (0.0, 15.0)
    n_t = 151
    description = "x' = rx(1 − x/K)"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §2.3"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1)."""
        return self.r * y * (1 - y / self.K)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1, 1)."""
        return (self.r * (1 - 2 * y / self.K))[..., None]

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.r)}*x*(1 - x/{_n(self.K)})",)


@register
@dataclass(frozen=True)
class Bistable(TextbookSystem):
    """``x' = r x − c x³`` (Strogatz §2.2, §3.4): stable states ``±√(r/c)``; the test start
    lies in the other basin."""

    r: float = 1.5
    c: float = 0.5

    name = "bistable"
    state_names = ("x",)
    initial_state = (0.2,)
    test_state = (-0.1,)
    t_span = (0.0, 8.0)
    n_t = 81
    description = "x' = rx − cx³"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §3.4"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1)."""
        return self.r * y - self.c * y**3

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1, 1)."""
        return (self.r - 3 * self.c * y**2)[..., None]

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.r)}*x - {_n(self.c)}*x**3",)


@register
@dataclass(frozen=True)
class SpruceBudworm(TextbookSystem):
    """Dimensionless budworm outbreak model ``x' = r x (1 − x/k) − x²/(1 + x²)`` (Strogatz §3.7).

    With r = 0.45, k = 10 it is bistable: the training start settles at the refuge, the test
    start at the outbreak level.
    """

    r: float = 0.45
    k: float = 10.0

    name = "spruce_budworm"
    state_names = ("x",)
    initial_state = (1.0,)
    test_state = (6.0,)
    t_span = (0.0, 40.0)
    n_t = 201
    description = "x' = rx(1 − x/k) − x²/(1 + x²)"
    source = "Strogatz, Nonlinear Dynamics and Chaos, §3.7"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1)."""
        return self.r * y * (1 - y / self.k) - y**2 / (1 + y**2)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1, 1)."""
        return (self.r * (1 - 2 * y / self.k) - 2 * y / (1 + y**2) ** 2)[..., None]

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.r)}*x*(1 - x/{_n(self.k)}) - x**2/(1 + x**2)",)


@register
@dataclass(frozen=True)
class Gompertz(TextbookSystem):
    """Gompertz tumour growth ``x' = a x ln(K/x)`` on ``x > 0`` (Strogatz Exercise 2.3.6)."""

    a: float = 0.5
    K: float = 5.0

    name = "gompertz"
    state_names = ("x",)
    initial_state = (0.5,)
    test_state = (8.0,)
    t_span = (0.0, 12.0)
    n_t = 121
    description = "x' = ax ln(K/x)"
    source = "Strogatz, Nonlinear Dynamics and Chaos, Exercise 2.3.6"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) with ``y > 0`` -> (..., 1)."""
        return self.a * y * np.log(self.K / y)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 1) -> (..., 1, 1)."""
        return (self.a * (np.log(self.K / y) - 1))[..., None]

    def equations(self) -> tuple[str, ...]:
        return (f"{_n(self.a)}*x*log({_n(self.K)}) - {_n(self.a)}*x*log(x)",)

    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Log-uniform multiplicative: ``y0 * exp(spread * U(-1, 1))``, stays positive."""
        return self.y0 * np.exp(spread * rng.uniform(-1.0, 1.0, size=(n, self.dim)))
