"""Where the polish starts: the ablation of what the KAN contributes to a discovered law.

The recipe's last stage, :func:`kanode.symbolic.polish`, refits an exported formula through
its own trajectories and chooses its terms by forecasting. Whether the KAN before it matters
is measured by starting that same stage from other formulas on the same data
(experiments/discovery_ablation.py):

* the KAN's exported formula (``Discovery.raw_formula`` of a run with ``polish_rounds=0``);
* another method's formula (SINDy's), as a :class:`~kanode.symbolic.export.Formula`;
* every term of a library at coefficient 0 (:func:`term_library`): no information but the
  candidate terms.

:func:`polish_from` is the one entry point: a pure function of the data and the start.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import sympy

from kanode.data import FitData

from .export import Formula
from .polish import HOLDOUT_FRACTION, RIDGE, Polished, polish

__all__ = ["TermSet", "term_library", "polish_from"]

TermSet = Sequence[Sequence[sympy.Expr]]
"""Per equation, the factors (``x``, ``x*y``, ``sin(x)``, ``1``) whose coefficients start at 0."""

TRIG = ("sin", "cos")


def term_library(state_names: Sequence[str], degree: int, trig: bool = False) -> tuple[tuple[sympy.Expr, ...], ...]:
    """The same candidate factors for every equation: the monomials of the states up to
    ``degree`` (the constant 1 included), then ``sin`` and ``cos`` of each state when ``trig``
    (the library of the SINDy baselines: polynomials + one Fourier frequency)."""
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    symbols = [sympy.Symbol(n) for n in state_names]
    factors: list[sympy.Expr] = [sympy.Integer(1)]
    for d in range(1, degree + 1):
        factors += [sympy.Mul(*combo) for combo in itertools.combinations_with_replacement(symbols, d)]
    if trig:
        factors += [getattr(sympy, f)(s) for s in symbols for f in TRIG]
    return tuple(tuple(factors) for _ in state_names)


def polish_from(start: Formula | TermSet, data: FitData, drop_threshold: float = 0.01, digits: int = 4,
                rounds: int = 4, ridge: float = RIDGE,
                holdout_fraction: float = HOLDOUT_FRACTION) -> Polished:
    """The polish of :func:`kanode.symbolic.polish` on ``data``'s training window, started from
    ``start``: a formula (its terms and coefficients), or per equation a set of factors whose
    coefficients all start at 0. The states of its drop rule are the training states.

    Raises ValueError when a term set does not have one entry per state of ``data``, names a
    symbol that is not a state, or leaves an equation empty.
    """
    names = tuple(data.state_names)
    states = data.y_train.double().reshape(-1, data.dim).numpy()
    if isinstance(start, Formula):
        if tuple(start.state_names) != names:
            raise ValueError(f"the start formula's states {start.state_names} are not the data's {names}")
        return polish(start, data, states, drop_threshold, digits, rounds, ridge=ridge,
                      holdout_fraction=holdout_fraction)
    if len(start) != len(names):
        raise ValueError(f"the term set has {len(start)} equations; the data has {len(names)} states {names}")
    symbols = {sympy.Symbol(n) for n in names}
    rhs = []
    for name, factors in zip(names, start):
        if not factors:
            raise ValueError(f"the term set gives no term for {name}'")
        stray = set().union(*(sympy.sympify(f).free_symbols for f in factors)) - symbols
        if stray:
            raise ValueError(f"the term set for {name}' uses {sorted(map(str, stray))}, not states of {names}")
        # coefficient 1 carries the support only; polish(from_zero=True) starts them at 0
        rhs.append(sum((sympy.sympify(f) for f in dict.fromkeys(factors)), sympy.Integer(0)))
    formula = Formula(names, tuple(rhs))
    return polish(formula, data, states, drop_threshold, digits, rounds, ridge=ridge,
                  holdout_fraction=holdout_fraction, from_zero=True)
