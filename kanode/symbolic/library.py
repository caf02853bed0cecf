"""The candidate functions an edge may become: ``φ(x) ≈ c · f(a·x + b) + d``.

Each :class:`Candidate` knows its numpy, torch and sympy forms, a complexity
(used by the selection rule of :mod:`kanode.symbolic.edge_fit`), the domain
of its argument and how its nonlinear parameters are searched:

=========  ==========  ===========  =========================================
name       complexity  domain       canonical form (what the fit returns)
=========  ==========  ===========  =========================================
0          0           all          ``d`` (the edge is a constant)
x          1           all          ``c x + d``                 (a=1, b=0)
x^2        2           all          ``c (x + b)^2 + d``         (a=1)
x^3        3           all          ``c (x + b)^3 + d``         (a=1)
x^4        4           all          ``c (x + b)^4 + d``         (a=1)
1/x        2           u ≠ 0        ``c / (x + b) + d``         (a=1)
sqrt       2           u > 0        ``c √(±x + b) + d``         (a=±1)
exp        2           all          ``c exp(a x) + d``          (b=0)
log        2           u > 0        ``c log(±x + b) + d``       (a=±1)
sin        3           all          ``c sin(a x + b) + d``      (a>0, c>0, |b|≤π)
tanh       3           all          ``c tanh(a x + b) + d``     (a>0)
abs        3           all          ``c |x + b| + d``           (a=1)
gaussian   3           all          ``c exp(-(a x + b)^2) + d`` (a>0)
=========  ==========  ===========  =========================================

The canonical forms remove the symmetries of ``c · f(a·x + b) + d`` (a
power's scale, an exponential's shift, an odd function's sign), so the fitted
``(a, b, c, d)`` are unique. Domain-restricted candidates (``1/x``, ``sqrt``,
``log``) are only fitted with ``u = a·x + b`` on the safe side over the
edge's whole visited input range; their torch forms are guarded (clamped
away from the boundary) so a trained symbolic edge never returns NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy
import torch

__all__ = ["Candidate", "LIBRARY", "get_candidate", "names", "GUARD"]

GUARD = 1e-6
"""Distance from the domain boundary at which the torch forms clamp their argument."""


@dataclass(frozen=True)
class Candidate:
    """One library function ``f`` with its search strategy.

    ``search`` is how :mod:`kanode.symbolic.edge_fit` finds ``(a, b)``:
    ``"const"``/``"linear"``/``"quadratic"`` are closed-form least squares;
    ``"shift"`` searches ``b`` with ``a = 1``; ``"rate"`` searches ``a`` with
    ``b = 0``; ``"side"`` searches ``b`` with ``a = ±1`` keeping ``u`` on one side
    of 0 (``domain`` ``"positive"`` or ``"nonzero"``); ``"wave"`` searches ``a > 0``
    and ``b`` together.
    """

    name: str
    complexity: int
    search: str
    domain: str
    numpy: Callable[[np.ndarray], np.ndarray]
    torch: Callable[[torch.Tensor], torch.Tensor]
    sympy: Callable[[sympy.Expr], sympy.Expr]

    @property
    def closed_form(self) -> bool:
        """Whether the fit is linear least squares (no search)."""
        return self.search in ("const", "linear", "quadratic")


def _safe_positive(u: torch.Tensor) -> torch.Tensor:
    return u.clamp(min=GUARD)


def _safe_nonzero(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u.abs() < GUARD, torch.where(u < 0, -GUARD, GUARD) + 0 * u, u)


def _np_positive(u: np.ndarray) -> np.ndarray:
    return np.where(u > 0, u, np.nan)


def _np_nonzero(u: np.ndarray) -> np.ndarray:
    return np.where(u != 0, u, np.nan)


_ENTRIES = (
    Candidate("0", 0, "const", "all", lambda u: np.zeros_like(u), lambda u: torch.zeros_like(u),
              lambda u: sympy.Integer(0)),
    Candidate("x", 1, "linear", "all", lambda u: u, lambda u: u, lambda u: u),
    Candidate("x^2", 2, "quadratic", "all", lambda u: u**2, lambda u: u**2, lambda u: u**2),
    Candidate("x^3", 3, "shift", "all", lambda u: u**3, lambda u: u**3, lambda u: u**3),
    Candidate("x^4", 4, "shift", "all", lambda u: u**4, lambda u: u**4, lambda u: u**4),
    Candidate("1/x", 2, "side", "nonzero", lambda u: 1.0 / _np_nonzero(u),
              lambda u: 1.0 / _safe_nonzero(u), lambda u: 1 / u),
    Candidate("sqrt", 2, "side", "positive", lambda u: np.sqrt(_np_positive(u)),
              lambda u: torch.sqrt(_safe_positive(u)), sympy.sqrt),
    Candidate("exp", 2, "rate", "all", np.exp, torch.exp, sympy.exp),
    Candidate("log", 2, "side", "positive", lambda u: np.log(_np_positive(u)),
              lambda u: torch.log(_safe_positive(u)), sympy.log),
    Candidate("sin", 3, "wave", "all", np.sin, torch.sin, sympy.sin),
    Candidate("tanh", 3, "wave", "all", np.tanh, torch.tanh, sympy.tanh),
    Candidate("abs", 3, "shift", "all", np.abs, torch.abs, sympy.Abs),
    Candidate("gaussian", 3, "wave", "all", lambda u: np.exp(-(u**2)), lambda u: torch.exp(-(u**2)),
              lambda u: sympy.exp(-(u**2))),
)

LIBRARY: dict[str, Candidate] = {c.name: c for c in _ENTRIES}
"""Name → candidate; the order is the tie-break order of the selection rule."""


def names() -> tuple[str, ...]:
    return tuple(LIBRARY)


def get_candidate(name: str) -> Candidate:
    """The library entry called ``name``; ValueError listing the names otherwise."""
    try:
        return LIBRARY[name]
    except KeyError:
        raise ValueError(f"unknown symbolic function {name!r}; choose from {', '.join(LIBRARY)}") from None
