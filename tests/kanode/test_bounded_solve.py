"""Every solve ends: a budget on the total work of one solve (forward and adjoint
backward), the divergence path it feeds (exit 3, summary "diverged", last good
checkpoint kept), and the bound on the data simulation."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import systems
from kanode.config import METHODS, ConfigError, FitConfig
from kanode.data import load_data
from kanode.fit import main as fit_main
from kanode.ode import SolverError, backward_guarded, evaluation_budget, solve
from kanode.runs import load_checkpoint

F64 = torch.float64


class Linear(nn.Module):
    """``f(y) = k (y - offset)``, counting its evaluations."""

    def __init__(self, k: float, offset: float = 0.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=F64))
        self.offset = offset
        self.nfe = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.k * (y - self.offset)


class Tracking(nn.Module):
    """``f(t, y) = k (y - sin t) + cos t``: from y = 0 the solution is sin t, smooth, but
    an explicit solver must keep its step below ~3.3/|k| (stiff), counting evaluations."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=F64))
        self.nfe = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.k * (y - torch.sin(t)) + torch.cos(t)


def test_budget_formula_and_every_method_has_a_cost() -> None:
    # dopri5: 6 evaluations a step; per output interval one more step and the
    # two evaluations of the initial step selection; 2 more at the start
    assert evaluation_budget("dopri5", 50, 400) == 50 * 6 + 399 * 8 + 2
    assert evaluation_budget("rk4", 10, 2) == 10 * 4 + 1 * 6 + 2
    for method in METHODS:
        assert evaluation_budget(method, 1, 2) > 0


@pytest.mark.parametrize("adjoint", [False, True])
def test_a_stiff_forward_solve_stops_at_the_total_budget(adjoint: bool) -> None:
    # k = -3000 over 400 outputs: ~3.5 steps per interval (well under the per-interval
    # limit of 50 torchdiffeq checks), ~1400 in all (8288 evaluations unbounded): only
    # the total budget stops it
    field = Tracking(-3000.0)
    t = torch.linspace(0.0, 1.0, 400, dtype=F64)
    with pytest.raises(SolverError, match=r"max_num_steps=50 solver steps \(3494 evaluations"):
        solve(field, torch.zeros(2, dtype=F64), t, method="dopri5", rtol=1e-8, atol=1e-10,
              adjoint=adjoint, max_num_steps=50)
    assert field.nfe == evaluation_budget("dopri5", 50, 400)  # evaluation 3495 was refused


def test_the_budget_leaves_a_healthy_solve_unchanged() -> None:
    t = torch.linspace(0.0, 2.0, 50, dtype=F64)
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    tight = solve(Linear(-1.0), y0, t, method="dopri5", rtol=1e-9, atol=1e-11, adjoint=False,
                  max_num_steps=100)
    loose = solve(Linear(-1.0), y0, t, method="dopri5", rtol=1e-9, atol=1e-11, adjoint=False,
                  max_num_steps=10**6)
    assert torch.equal(tight, loose)
    assert torch.allclose(tight[-1], y0 * np.exp(-2.0), rtol=1e-6)


def test_the_adjoint_backward_solve_has_its_own_budget() -> None:
    # f = 50 (y - 1) from y = 1: the forward state never moves (a few steps), but the
    # adjoint grows like exp(50 (T - t)) backwards in time: thousands of steps
    field = Linear(50.0, offset=1.0)
    t = torch.linspace(0.0, 1.0, 200, dtype=F64)
    y = solve(field, torch.ones(2, dtype=F64), t, method="dopri5", rtol=1e-10, atol=1e-12,
              adjoint=True, max_num_steps=100)
    forward_nfe, field.nfe = field.nfe, 0
    assert forward_nfe < evaluation_budget("dopri5", 100, 200)
    with pytest.raises(SolverError, match=r"the adjoint \(backward\) solve needed more than "
                                          r"max_num_steps=100"):
        backward_guarded(y.sum())
    assert field.nfe == evaluation_budget("dopri5", 100, 200)


def test_a_fixed_step_solve_that_needs_too_many_steps_never_starts() -> None:
    field = Linear(-1.0)
    with pytest.raises(SolverError, match="needs 1000 steps .* max_num_steps=100"):
        solve(field, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
              method="rk4", step_size=1e-3, adjoint=False, max_num_steps=100)
    assert field.nfe == 0


FAST = ["--train-fraction", "0.1", "--eval-every", "5", "--quiet", "--no-plots"]


@pytest.mark.parametrize("adjoint", [[], ["--adjoint"]])
def test_a_blowing_up_fit_takes_the_divergence_path(tmp_path: Path, adjoint: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = fit_main(["--system", "spiral", "--lr", "10", "--optimizer", "adam", "--steps", "20",
                     "--method", "dopri5", "--max-num-steps", "200", "--out", str(out),
                     *adjoint, *FAST])
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.count("\n") == 1 and "max_num_steps=200" in err and "last good checkpoint" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "max_num_steps=200" in summary["reason"]
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["step"] < summary["steps"] + 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


# ----------------------------------------------------------- data simulation
def test_simulation_stops_at_its_evaluation_budget() -> None:
    body = systems.get("rigid_body")
    with pytest.raises(systems.IntegrationLimitError, match="max_evaluations=2000") as info:
        systems.simulate(body, y0=np.array([1e10, -6e9, 8e9]), max_evaluations=2000)
    assert isinstance(info.value, ValueError) and isinstance(info.value, systems.IntegrationError)
    assert len(str(info.value).splitlines()) == 1
    systems.simulate(body, max_evaluations=5000)  # the canonical solve fits in 5000


def test_simulation_stops_when_the_state_blows_up() -> None:
    growth = systems.get("lotka_volterra", alpha=100.0, beta=0.0, gamma=0.0, delta=0.0)
    # x' = 100 x: x passes 1e150 at t = 3.45 (and would overflow a float64 at t = 7.1)
    with pytest.raises(systems.IntegrationLimitError, match=r"blew up .* at t=3\.4"):
        systems.simulate(growth, t=np.linspace(0.0, 10.0, 11), y0=np.array([1.0, 1.0]),
                         rtol=1e-6, atol=1e-8)


def test_a_huge_y0_spread_is_bad_input_in_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.import_module("systems.simulate"), "MAX_EVALUATIONS", 3000)
    with pytest.raises(ConfigError, match="max_evaluations=3000") as info:
        load_data(FitConfig(system="rigid_body", y0_spread=1e10))
    assert len(str(info.value).splitlines()) == 1
