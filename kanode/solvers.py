"""The solvers kanode offers: torchdiffeq's own name → class table, each method with its cost.

:func:`kanode.ode.solve` bounds a solve by vector-field evaluations
(:func:`kanode.ode.evaluation_budget`), so every method it accepts needs its
evaluations per solver step. This table is derived from the installed
torchdiffeq's ``SOLVERS`` when the module is imported, never listed by hand
apart from the fixed-grid methods' costs:

* an adaptive Runge–Kutta method (a subclass of torchdiffeq's
  ``RKAdaptiveStepsizeODESolver``) costs ``len(tableau.alpha)`` evaluations
  per step, accepted or rejected (``_runge_kutta_step`` evaluates the field
  once per stage after the first; the first stage is the previous step's
  last). A newer torchdiffeq's RK methods (``tsit5``) are costed this way
  with no change here.
* a fixed-grid method costs :data:`FIXED_GRID_EVALS` of its name (counted
  from torchdiffeq's step functions; ``tests/kanode/test_solvers.py``
  counts them again on the installed version).
* any other method (``scipy_solver``, which neither backpropagates nor runs
  under the budget, or a fixed-grid method kanode has no cost for, such as a
  newer torchdiffeq's implicit ones) is refused by ``FitConfig.validate``
  with one line naming why (:data:`REFUSED_METHODS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver, FixedGridODESolver

__all__ = ["Solver", "FIXED_GRID_EVALS", "solver_table", "SOLVERS", "REFUSED_METHODS"]

# Evaluations per step of torchdiffeq's fixed-grid methods: one for f(t0, y0)
# plus the later stages; the Adams methods start with RK4 steps (4) and the
# implicit one corrects up to max_iters = 4 times after its predictor (5).
FIXED_GRID_EVALS = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4,
                    "explicit_adams": 4, "implicit_adams": 5, "fixed_adams": 5}


@dataclass(frozen=True)
class Solver:
    """A torchdiffeq method kanode can bound: ``kind`` "fixed" (steps ``step_size``)
    or "adaptive" (rtol/atol), and its vector-field evaluations per step."""

    name: str
    kind: str
    evals_per_step: int


def solver_table(solvers: Mapping[str, type]) -> tuple[dict[str, Solver], dict[str, str]]:
    """``(accepted, refused)`` for a torchdiffeq-style name → class table:
    accepted methods with their cost, refused ones with the reason (one phrase)."""
    accepted: dict[str, Solver] = {}
    refused: dict[str, str] = {}
    for name, cls in solvers.items():
        if isinstance(cls, type) and issubclass(cls, FixedGridODESolver):
            if name in FIXED_GRID_EVALS:
                accepted[name] = Solver(name, "fixed", FIXED_GRID_EVALS[name])
            else:
                refused[name] = ("it is a fixed-grid method whose evaluations per step kanode "
                                 "does not know, so a solve could not be bounded")
        elif isinstance(cls, type) and issubclass(cls, RKAdaptiveStepsizeODESolver):
            accepted[name] = Solver(name, "adaptive", len(cls.tableau.alpha))
        elif isinstance(cls, type) and issubclass(cls, AdaptiveStepsizeODESolver):
            refused[name] = ("it is an adaptive method without a Runge-Kutta tableau, so its "
                             "evaluations per step are unknown and a solve could not be bounded")
        else:
            refused[name] = "it does not backpropagate through torch and cannot be bounded"
    return accepted, refused


SOLVERS, REFUSED_METHODS = solver_table(TORCHDIFFEQ_SOLVERS)
