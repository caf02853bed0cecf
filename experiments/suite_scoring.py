"""Scores of a discovered ODE against a textbook system's law (experiments/discovery_suite.py).

A formula is one sympy-readable string per state (``{"x": "v", "v": "-4.0*x - 0.4*v"}``).

* **terms**: each expression is expanded (``sympy.expand(force=True)``, so ``x·ln(K/x)``
  becomes ``ln K·x − x·ln x``) and split into ``coefficient × factor``. Numbers *inside* a
  factor (``sin(1.02·θ)``, ``x²/(1.01 + x²)``) are rounded to two significant digits first
  (values below 0.01 become 0), so an inner constant within a few per cent of the law's counts
  as the same term; the outer coefficients are compared numerically.
* **exact support**: every equation has exactly the law's set of factors.
* **worst coefficient error**: the largest ``|found − true| / |true|`` over the law's terms
  (a missing term counts 1, i.e. 100 %); spurious terms show in the support, not here.
* **R²** (variance-weighted over the states): ``1 − Σ(pred − true)² / Σ(true − mean)²`` of
  the formula's own trajectory from an initial state against the true one; ``−inf`` when
  the formula blows up: its integration fails, is not finite, or leaves the box of
  ten times the true trajectory's extent around it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import sympy
from scipy.integrate import solve_ivp
from sympy.parsing.sympy_parser import parse_expr

__all__ = ["parse", "sympy_feature", "term_table", "support_and_error", "simulate_formula", "r2", "BLOW_UP_FACTOR"]

BLOW_UP_FACTOR = 10.0
"""A trajectory farther than this many extents of the true one from its box has blown up."""

MAX_EVALUATIONS = 200_000
"""A formula whose integration needs more right-hand-side evaluations than this counts as
blown up (a stiff or near-singular formula, instead of a hang)."""


def parse(expression: str, state_names: Sequence[str]) -> sympy.Expr:
    """``expression`` as sympy, with every state name a plain symbol (``I``, ``E``, ``S`` too)."""
    local = {name: sympy.Symbol(name) for name in state_names}
    return parse_expr(expression, local_dict=local)


def sympy_feature(name: str) -> str:
    """A pysindy feature name as a sympy-readable product: ``"x^2 v"`` -> ``"x**2*v"``,
    ``"sin(1 x)"`` -> ``"sin(1*x)"``."""
    return "*".join(name.replace("^", "**").split())


def _rounded(value: sympy.Number) -> sympy.Expr:
    """An inner constant to two significant digits; integers stay integers, |v| < 0.01 is 0."""
    number = float(value)
    if abs(number) < 0.01:
        return sympy.Integer(0)
    rounded = float(f"{number:.2g}")
    return sympy.Integer(int(rounded)) if rounded == int(rounded) else sympy.Float(rounded, 2)


def _canonical(factor: sympy.Expr) -> sympy.Expr:
    """``factor`` with its inner numbers rounded (:func:`_rounded`), exponents kept exact."""
    numbers = {n: _rounded(n) for n in factor.atoms(sympy.Float)}
    return factor.xreplace(numbers) if numbers else factor


def term_table(expression: str, state_names: Sequence[str]) -> dict[str, float]:
    """``{factor: coefficient}`` of the expanded expression (factor ``"1"`` for a constant)."""
    expanded = sympy.expand(parse(expression, state_names), force=True)
    table: dict[str, float] = {}
    for term in sympy.Add.make_args(expanded):
        coefficient, factor = term.as_coeff_Mul()
        if coefficient == 0:
            continue
        inner, factor = _canonical(factor).as_coeff_Mul()   # rounding may leave a number in front
        key = sympy.sstr(factor)
        table[key] = table.get(key, 0.0) + float(coefficient) * float(inner)
    return {key: value for key, value in table.items() if value != 0.0}


def support_and_error(found: Mapping[str, str], true: Sequence[str],
                      state_names: Sequence[str]) -> tuple[bool, float]:
    """(exact support, worst relative coefficient error) of ``found`` against the law ``true``."""
    exact, worst = True, 0.0
    for name, law in zip(state_names, true):
        true_terms = term_table(law, state_names)
        found_terms = term_table(found[name], state_names) if name in found else {}
        exact = exact and set(found_terms) == set(true_terms)
        for factor, value in true_terms.items():
            worst = max(worst, abs(found_terms.get(factor, 0.0) - value) / abs(value))
    return exact, worst


def simulate_formula(formula: Mapping[str, str], state_names: Sequence[str], t: np.ndarray,
                     y0: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """The formula's trajectory (n_t, dim) from ``y0`` on ``t``; None when it blows up
    (see the module docstring; ``reference`` (n_t, dim) is the true trajectory)."""
    symbols = [sympy.Symbol(n) for n in state_names]
    exprs = [parse(formula[n], state_names) for n in state_names]
    field = sympy.lambdify(symbols, exprs, modules="numpy")
    low, high = reference.min(axis=0), reference.max(axis=0)   # (dim,)
    margin = BLOW_UP_FACTOR * np.maximum(high - low, 1e-3 * np.maximum(np.abs(high), 1.0))
    evaluations = 0

    class _Stop(Exception):
        pass

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        evaluations += 1
        if evaluations > MAX_EVALUATIONS:
            raise _Stop
        with np.errstate(all="ignore"):
            values = np.array([np.broadcast_to(v, ()) for v in field(*y)], dtype=np.float64)
        return values

    def escaped(_t: float, y: np.ndarray) -> float:
        outside = np.maximum(low - margin - y, y - high - margin)     # > 0 outside the box
        return -float(np.max(outside)) if np.all(np.isfinite(y)) else -1.0

    escaped.terminal = True
    try:
        with np.errstate(all="ignore"):
            solution = solve_ivp(rhs, (t[0], t[-1]), np.asarray(y0, dtype=np.float64), method="LSODA",
                                 t_eval=t, rtol=1e-9, atol=1e-11, events=escaped)
    except (_Stop, ValueError, FloatingPointError, OverflowError, ZeroDivisionError):
        return None
    if solution.status != 0 or solution.y.shape[1] != t.size or not np.all(np.isfinite(solution.y)):
        return None
    return solution.y.T


def r2(predicted: np.ndarray | None, true: np.ndarray) -> float:
    """Variance-weighted R² of ``predicted`` (n_t, dim) against ``true``; −inf for None."""
    if predicted is None:
        return -math.inf
    residual = float(np.sum((predicted - true) ** 2))
    total = float(np.sum((true - true.mean(axis=0)) ** 2))
    return 1.0 - residual / total
