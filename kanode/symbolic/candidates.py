"""The default candidate terms of the sparse regression, built from the data.

For states ``x_1 … x_d`` observed over ``states`` (n, d), :func:`default_candidates` returns,
for every equation alike:

* the monomials up to degree :data:`POLY_DEGREE` (3), the constant included;
* ``sin x``, ``cos x`` and ``sin x · cos x`` of each state;
* ``exp(x / s)`` of each state, ``s = max(1, max|x| / EXP_SPAN)`` (at most ``EXP_SPAN``
  e-foldings over the data, so the column does not swamp the others);
* ``x · log x`` of each state that stays positive (Gompertz growth);
* the saturating (Hill) terms of each state, ``x²/(c² + x²)``, ``c²/(c² + x²)``,
  ``c·x/(c² + x²)``, and ``x/(c + x)`` for a state that stays non-negative; each alone and
  times each other state (``y·x/(1 + x)``, Holling's type II) — except ``c²/(c² + x²)``, whose
  product ``y·c²/(c² + x²) = y − y·x²/(c² + x²)`` would make the library exactly collinear in
  every equation (the constant's collinearity, ``c²/(c² + x²) + x²/(c² + x²) = 1``, is kept: a
  sparse fit takes the one term over the two). The scale ``c`` is 1 (the
  non-dimensional textbook form) or, where the state's typical size (the median of ``|x|``) is
  above :data:`SCALE_RATIO`, that size (at scale 1, ``z²/(1 + z²)`` of a state near 20 is
  0.998 everywhere: a copy of the constant, not a saturation).

Nothing is left out because a system "should not" have it: the sparse regression's threshold
selection and the polish's forecast-validated elimination keep the supports small.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import sympy

__all__ = ["default_candidates", "evaluate_candidates", "POLY_DEGREE", "EXP_SPAN", "SCALE_RATIO"]

POLY_DEGREE = 3
EXP_SPAN = 3.0
"""``exp(x / s)`` spans at most this many e-foldings over the observed ``x``."""
SCALE_RATIO = 3.0
"""A state whose median ``|x|`` is above this gets its Hill terms at its own scale instead of 1."""


def _nice(value: float) -> sympy.Expr:
    """A data-derived constant to two significant digits (1 stays the integer 1)."""
    rounded = float(f"{value:.2g}")
    return sympy.Integer(int(rounded)) if rounded == int(rounded) else sympy.Float(rounded, 3)


def _hill_terms(x: sympy.Symbol, values: np.ndarray) -> list[tuple[sympy.Expr, bool]]:
    """Saturating terms of one state (module docstring), at its scale: (term, whether it is
    also taken times each other state)."""
    typical = float(np.median(np.abs(values)))
    scales = [_nice(typical) if typical > SCALE_RATIO else sympy.Integer(1)]
    out: list[tuple[sympy.Expr, bool]] = []
    for c in scales:
        out += [(x**2 / (c**2 + x**2), True), (c**2 / (c**2 + x**2), False), (c * x / (c**2 + x**2), True)]
        if values.min() >= 0:
            out.append((x / (c + x), True))
    return out


def default_candidates(states: np.ndarray, state_names: Sequence[str]) -> tuple[sympy.Expr, ...]:
    """The candidate factors (module docstring) for states observed as ``states`` (n, dim),
    without repeats, in a fixed order."""
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] != len(state_names):
        raise ValueError(f"states must be (n, {len(state_names)}), got {states.shape}")
    symbols = [sympy.Symbol(n) for n in state_names]
    factors: list[sympy.Expr] = [sympy.Integer(1)]
    for d in range(1, POLY_DEGREE + 1):
        factors += [sympy.Mul(*combo) for combo in itertools.combinations_with_replacement(symbols, d)]
    for x in symbols:
        factors += [sympy.sin(x), sympy.cos(x), sympy.sin(x) * sympy.cos(x)]
    for x, values in zip(symbols, states.T):
        s = max(1.0, float(np.abs(values).max()) / EXP_SPAN)
        factors.append(sympy.exp(x / _nice(s)) if s > 1 else sympy.exp(x))
        if values.min() > 0:
            factors.append(x * sympy.log(x))
    for k, (x, values) in enumerate(zip(symbols, states.T)):
        for hill, times_others in _hill_terms(x, values):
            factors.append(hill)
            if times_others:
                factors += [other * hill for j, other in enumerate(symbols) if j != k]
    return tuple(dict.fromkeys(factors))


def evaluate_candidates(factors: Sequence[sympy.Expr], state_names: Sequence[str],
                        states: np.ndarray) -> np.ndarray:
    """The factors at ``states`` (n, dim): (n, n_factors)."""
    symbols = [sympy.Symbol(n) for n in state_names]
    columns = []
    with np.errstate(all="ignore"):
        for f in factors:
            fn = sympy.lambdify(symbols, f, modules="numpy")
            columns.append(np.broadcast_to(np.asarray(fn(*states.T), dtype=np.float64), states.shape[:1]))
    return np.stack(columns, axis=1)
