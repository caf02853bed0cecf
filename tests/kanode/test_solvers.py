"""kanode's solver table (kanode.solvers) against the installed torchdiffeq.

Issue 24, finding 8: the per-step cost table was hand-written, so a method a
newer torchdiffeq adds would pass validation and raise KeyError in
``evaluation_budget``. Now every torchdiffeq method is either costed (and the
cost is counted here on the installed version) or refused in one line.
"""

from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint
from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _ButcherTableau, _runge_kutta_step
from torchdiffeq._impl.solvers import FixedGridODESolver

from kanode.config import ADAPTIVE_METHODS, FIXED_STEP_METHODS, ConfigError, FitConfig
from kanode.fit import main as fit_main
from kanode.ode import evaluation_budget
from kanode.solvers import REFUSED_METHODS, SOLVERS, solver_table


class Counting:
    """dy/dt = -y, counting its calls (torchdiffeq passes ``perturb`` to RK stages)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, t, y, perturb=None):
        self.calls += 1
        return -y


def test_every_torchdiffeq_method_is_costed_or_refused() -> None:
    assert set(SOLVERS) | set(REFUSED_METHODS) == set(TORCHDIFFEQ_SOLVERS)
    assert not set(SOLVERS) & set(REFUSED_METHODS)
    assert set(FIXED_STEP_METHODS) | set(ADAPTIVE_METHODS) == set(SOLVERS)


@pytest.mark.parametrize("method", FIXED_STEP_METHODS)
def test_fixed_grid_cost_is_counted_on_the_installed_torchdiffeq(method: str) -> None:
    n_steps = 12
    f = Counting()
    t = torch.linspace(0.0, 1.2, 4, dtype=torch.float64)
    odeint(f, torch.ones(2, dtype=torch.float64), t, method=method, options={"step_size": 0.1})
    cost = SOLVERS[method].evals_per_step
    if method in ("explicit_adams", "implicit_adams", "fixed_adams"):
        # multistep: RK4 start-up steps (4 each), then 1 (+ up to 4 corrections when implicit)
        assert n_steps < f.calls <= n_steps * cost
    else:
        assert f.calls == n_steps * cost


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_adaptive_cost_is_one_runge_kutta_step(method: str) -> None:
    f = Counting()
    y0 = torch.ones(2, dtype=torch.float64)
    one = torch.tensor(1.0, dtype=torch.float64)
    tableau = TORCHDIFFEQ_SOLVERS[method].tableau
    tableau = _ButcherTableau(alpha=tableau.alpha.double(), beta=[b.double() for b in tableau.beta],
                              c_sol=tableau.c_sol.double(), c_error=tableau.c_error.double())
    _runge_kutta_step(f, y0, -y0, 0 * one, 0.1 * one, 0.1 * one, tableau)
    assert f.calls == SOLVERS[method].evals_per_step


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_budget_covers_max_num_steps_of_the_method(method: str) -> None:
    cost = SOLVERS[method].evals_per_step
    assert evaluation_budget(method, 100, 11) == 100 * cost + 10 * (cost + 2) + 2


def _fake_rk(stages: int) -> type:
    tableau = _ButcherTableau(alpha=torch.linspace(0.1, 1.0, stages, dtype=torch.float64),
                              beta=[torch.zeros(i + 1, dtype=torch.float64) for i in range(stages)],
                              c_sol=torch.zeros(stages + 1, dtype=torch.float64),
                              c_error=torch.zeros(stages + 1, dtype=torch.float64))
    return type("FakeTsit5", (RKAdaptiveStepsizeODESolver,), {"order": 5, "tableau": tableau, "mid": None})


def test_a_newer_torchdiffeqs_methods_are_costed_or_refused() -> None:
    """tsit5 (an RK tableau) is costed from its tableau; an implicit fixed-grid method
    (no known cost) and a plain class are refused with their reasons."""
    implicit = type("ImplicitEuler", (FixedGridODESolver,), {"order": 1})
    accepted, refused = solver_table({"tsit5": _fake_rk(6), "implicit_euler": implicit,
                                      "rk4": TORCHDIFFEQ_SOLVERS["rk4"], "odd": object})
    assert (accepted["tsit5"].kind, accepted["tsit5"].evals_per_step) == ("adaptive", 6)
    assert accepted["rk4"].evals_per_step == 4
    assert set(refused) == {"implicit_euler", "odd"}
    assert "fixed-grid" in refused["implicit_euler"]


@pytest.mark.parametrize("method", sorted(REFUSED_METHODS) + ["tsit5_not_installed"])
def test_refused_method_is_one_line_exit_2(method: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match=method):
        FitConfig(method=method)
    assert fit_main(["--method", method, "--steps", "1", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kanode: error: ") and err.count("\n") == 1 and method in err
