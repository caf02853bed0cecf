"""Data as it is measured: irregular times, missing values, units, the --data split defaults."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import systems
from kanode.config import ConfigError, FitConfig
from kanode.data import load_data, observed_mse, sample_windows
from kanode.fit import main
from kanode.lifecycle import make_trainer as make_ensemble_trainer
from kanode.lifecycle import prepare
from kanode.ode import solve
from kanode.train import Trainer, training_loss

HARE_LYNX = Path(__file__).resolve().parents[2] / "experiments" / "data" / "hare_lynx.csv"
SMALL = dict(method="rk4", widths=[2, 4, 2], grid_size=4, plots=False, steps=2, lbfgs_steps=0,
             optimizer="adam", eval_every=1)


class Linear(nn.Module):
    """dy/dt = y A (a damped rotation), for a closed-form solution."""

    def __init__(self, decay: float = 0.1) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([[-decay, -1.0], [1.0, -decay]], dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ self.a


def closed_form(t: np.ndarray, y0: np.ndarray, decay: float = 0.1) -> np.ndarray:
    """x' = -decay x + y, y' = -x - decay y from (x0, y0): (n_t, 2)."""
    c, s, e = np.cos(t), np.sin(t), np.exp(-decay * t)
    return np.stack([e * (y0[0] * c + y0[1] * s), e * (-y0[0] * s + y0[1] * c)], axis=1)


@pytest.mark.parametrize("method,step_size,tol", [("rk4", 0.25, 1e-4), ("rk4", None, 1e-9),
                                                  ("euler", 0.01, 2e-2), ("dopri5", None, 1e-7)])
def test_irregular_grid_is_solved_at_its_own_times(method, step_size, tol):
    # output times that are not multiples of the step: torchdiffeq's step_size grid would
    # interpolate them linearly (error ~ step²/8 ≈ 8e-3 at step 0.25, whatever the method)
    t = np.array([0.0, 0.13, 0.5, 0.51, 1.37, 1.9, 3.05, 4.0])
    y0 = np.array([1.0, 0.5])
    got = solve(Linear(), torch.tensor(y0), torch.tensor(t), method=method, step_size=step_size,
                rtol=1e-10, atol=1e-12, adjoint=False).detach().numpy()
    err = np.abs(got - closed_form(t, y0)).max()
    assert err < tol
    if method == "rk4" and step_size == 0.25:  # fourth order: half the step, 1/16 the error
        half = solve(Linear(), torch.tensor(y0), torch.tensor(t), method=method, step_size=0.125,
                     adjoint=False).detach().numpy()
        assert 10 < err / np.abs(half - closed_form(t, y0)).max() < 20


def test_adjoint_gradient_on_an_irregular_grid_matches_direct():
    # the adjoint's backward solve steps through the same output grid, reversed; both
    # gradients approximate the exact one to the method's order (RK4 at step 0.02: ~1e-7)
    grads = []
    for adjoint in (False, True):
        field = Linear()
        t = torch.tensor([0.0, 0.13, 0.5, 1.37, 2.0], dtype=torch.float64)
        y = solve(field, torch.tensor([1.0, 0.5], dtype=torch.float64), t, method="rk4",
                  step_size=0.02, adjoint=adjoint)
        y.pow(2).sum().backward()
        grads.append(field.a.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=0)


def write_lv(path: Path, missing: str = "", times: np.ndarray | None = None) -> Path:
    """Two Lotka–Volterra trajectories on t = 0, 0.1, ..., 1.5, saved as CSV; ``missing``:
    "row" empties every state cell at t = 0.7, "cell" empties one cell, "gone" deletes
    the rows at t = 0.7."""
    t = np.round(np.arange(16) * 0.1, 12) if times is None else times
    traj = systems.simulate(systems.get("lotka_volterra"), t, y0=np.array([[1.0, 1.0], [1.2, 0.8]]))
    y = traj.y.copy()
    if missing == "row":
        y[:, 7] = np.nan
    elif missing == "cell":
        y[1, 9, 0] = np.nan
    keep = np.ones(t.size, bool)
    if missing == "gone":
        keep[7] = False
    out = systems.Trajectories(t[keep], y[:, keep], state_names=("prey", "predator"),
                               units=("thousands", "thousands"))
    return out.save(path)


def test_missing_cells_are_left_out_of_the_loss(tmp_path):
    files = {m: write_lv(tmp_path / f"{m or 'full'}.csv", m) for m in ("", "row", "cell", "gone")}
    configs = {m: FitConfig(data=str(p), **SMALL) for m, p in files.items()}
    prepared = {m: prepare(c) for m, c in configs.items()}                  # (data, field)
    field = prepared[""][1]  # one field for all: the losses compare the data only
    losses = {m: training_loss(field, prepared[m][0], configs[m]).item() for m in files}
    assert math.isfinite(losses["row"])
    # empty cells at one time = that time deleted from the file (solved on another grid)
    assert losses["row"] == pytest.approx(losses["gone"], rel=1e-12)
    # one empty cell: the complete data's squared errors without that one
    data = prepared[""][0]
    pred = solve(field, data.y[:, 0], data.t, method="rk4", adjoint=False).detach()
    sq = (pred.transpose(0, 1) - data.y) ** 2                              # (n_traj, n_t, dim)
    want = (sq.sum() - sq[1, 9, 0]) / (sq.numel() - 1)
    assert losses["cell"] == pytest.approx(want.item(), rel=1e-12)
    assert losses["cell"] != pytest.approx(losses[""], rel=1e-6)          # the cell mattered
    # the gradient is finite where values are missing
    data_row, field_row = prepared["row"]
    field_row.zero_grad()
    training_loss(field_row, data_row, configs["row"]).backward()
    assert all(torch.isfinite(p.grad).all() for p in field_row.parameters())
    # the trainer's evaluation: the same numbers
    assert Trainer.single(field_row, data_row, configs["row"]).evaluate()[0].train_loss == pytest.approx(
        training_loss(field_row, data_row, configs["row"]).item(), rel=1e-12)


def test_ensemble_losses_leave_missing_cells_out(tmp_path):
    path_nan, path_gone = write_lv(tmp_path / "row.csv", "row"), write_lv(tmp_path / "gone.csv", "gone")
    for path in (path_nan, write_lv(tmp_path / "cell.csv", "cell")):
        configs = [FitConfig(data=str(path), seed=s, holdout_last=4, **SMALL) for s in (0, 1)]
        ensemble = make_ensemble_trainer(configs)
        losses = ensemble._losses(full=True).tolist()
        evals = ensemble.evaluate()
        for m, config in enumerate(configs):
            field, data = ensemble.field.member(m), ensemble.data.members[m]
            want = training_loss(field, data, config).item()
            assert losses[m] == pytest.approx(want, rel=1e-10) and math.isfinite(want)
            single = Trainer.single(field, data, config).evaluate()[0]
            assert evals[m].extrap_loss == pytest.approx(single.extrap_loss, rel=1e-10)
    gone = make_ensemble_trainer([FitConfig(data=str(path_gone), seed=s, holdout_last=4, **SMALL)
                                  for s in (0, 1)])
    nan = make_ensemble_trainer([FitConfig(data=str(path_nan), seed=s, holdout_last=4, **SMALL)
                                 for s in (0, 1)])
    assert nan._losses(full=True).tolist() == pytest.approx(gone._losses(full=True).tolist(), rel=1e-12)


@pytest.mark.parametrize("missing", ["", "cell"])
def test_random_windows_on_an_irregular_grid_are_solved_at_their_own_times(tmp_path, missing):
    times = np.array([0.0, 0.1, 0.25, 0.3, 0.5, 0.55, 0.7, 0.9, 1.0, 1.2, 1.25, 1.4])
    path = write_lv(tmp_path / "irregular.csv", missing, times=times)
    config = FitConfig(data=str(path), batch_time=4, batch_size=6, **SMALL)
    data, field = prepare(config)
    generator = torch.Generator().manual_seed(3)
    y0, target, start = sample_windows(data.y_train, 4, 6, torch.Generator().manual_seed(3))
    got = training_loss(field, data, config, full=False, generator=generator)
    preds = []  # every window alone, at its own times
    for b in range(6):
        t = data.t_train[start[b]: start[b] + 4]
        preds.append(solve(field, y0[b], t - t[0], method="rk4", step_size=0.05, adjoint=False))
    want = observed_mse(torch.stack(preds, dim=1), target)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert torch.isfinite(got)


def test_a_window_never_starts_at_a_missing_state():
    y = torch.arange(2 * 6 * 2, dtype=torch.float64).reshape(2, 6, 2)
    y[0, 1:, 0] = math.nan  # trajectory 0 can start only at index 0
    y[1, 2, 1] = math.nan
    y0, target, start = sample_windows(y, 3, 200, torch.Generator().manual_seed(0))
    assert not torch.isnan(y0).any()
    starts = {(int(t0[0]), int(s)) for t0, s in zip(y0, start)}
    assert {s for _, s in starts} <= {0, 1, 3}


def test_a_missing_initial_state_is_refused(tmp_path):
    path = tmp_path / "late.csv"
    path.write_text("traj,t,x,y\n0,0,1,1\n0,1,2,2\n0,2,3,3\n1,0,,1\n1,1,2,2\n")
    with pytest.raises(ConfigError, match=r"trajectory 1 .* no value of x at the first time t = 0"):
        load_data(FitConfig(data=str(path)))


def test_data_defaults_train_on_everything_and_hold_out_nothing(tmp_path):
    path = write_lv(tmp_path / "one.csv")
    data = load_data(FitConfig(data=str(path)))
    assert data.n_train == 16 and data.y.shape[0] == 2 and data.y_held_out.shape[0] == 0
    assert data.state_names == ("prey", "predator") and data.units == ("thousands", "thousands")
    simulated = load_data(FitConfig())  # the simulated protocol is unchanged
    assert simulated.n_train == 35 and simulated.y_held_out.shape[0] == 1
    assert load_data(FitConfig(data=str(path), train_fraction=0.5, n_test_traj=1)).n_train == 8
    held = load_data(FitConfig(data=str(path), holdout_last=5))
    assert held.n_train == 11 and held.n_observed_train == 44 and held.n_observed_held_out == 20
    with pytest.raises(ConfigError, match="train_fraction or holdout_last, not both"):
        FitConfig(data=str(path), holdout_last=5, train_fraction=0.5)
    with pytest.raises(ConfigError, match="holdout_last=15 of 16 time points leaves 1"):
        load_data(FitConfig(data=str(path), holdout_last=15))


def test_hare_lynx_holdout_last_command_line(tmp_path, capsys):
    status = main(["--data", str(HARE_LYNX), "--holdout-last", "5", "--out", str(tmp_path / "run"),
                   "--quiet", "--widths", "2", "3", "2", "--grid-size", "3", "--steps", "2",
                   "--lbfgs-steps", "0", "--optimizer", "adam", "--no-plots"])
    out, err = capsys.readouterr()
    assert status == 0
    assert "trained on 32 observed values at 16 time points; held out 10 values (5 later time points)" in out
    assert "extrapolation MSE n/a" not in out
    # a [2, 3, 2] KAN at grid 3: 2 layers × 6 edges × (3 + 3 + 2) = 96 parameters
    assert "warning: the model has 96 parameters for 32 observed training values" in err
    assert len(err.strip().splitlines()) == 1
    status = main(["--data", str(HARE_LYNX), "--holdout-last", "5", "--out", str(tmp_path / "mlp"),
                   "--quiet", "--model", "mlp", "--widths", "2", "2", "2", "--steps", "2",
                   "--lbfgs-steps", "0", "--optimizer", "adam", "--no-plots"])
    assert status == 0 and capsys.readouterr().err == ""  # 12 parameters: no warning


def scaled_copy(path: Path, c: float, out: Path) -> Path:
    traj = systems.load(path)
    return systems.Trajectories(traj.t, traj.y * c, state_names=traj.state_names).save(out)


@pytest.mark.parametrize("c,schedule", [(2.0**-10, dict(optimizer="adam", steps=12, lbfgs_steps=0)),
                                        (2.0**10, dict(optimizer="adam", steps=12, lbfgs_steps=0)),
                                        (4.0, dict(optimizer="adam+lbfgs", steps=6, lbfgs_steps=6))])
def test_a_fit_of_scaled_data_is_the_fit_with_losses_times_c_squared(tmp_path, c, schedule):
    # powers of two scale every floating-point operation exactly, so the equality is exact
    # unless something in the fit is absolute in the data's units (Adam's eps was: at
    # c = 2^-10 its gradients are 1e-6 times smaller and eps = 1e-8 stopped the small ones)
    from kanode.fit import fit

    base = write_lv(tmp_path / "base.csv", "cell")
    settings = dict(SMALL, **schedule, holdout_last=3, eval_every=3)
    runs = {k: fit(FitConfig(data=str(p), **settings)) for k, p in
            (("base", base), ("scaled", scaled_copy(base, c, tmp_path / "scaled.csv")))}
    got = [h["train_loss"] / c**2 for h in runs["scaled"].history]
    want = [h["train_loss"] for h in runs["base"].history]
    assert got == pytest.approx(want, rel=1e-12, abs=0)
    for key in ("final_train_loss", "final_extrap_loss"):
        assert runs["scaled"].summary[key] / c**2 == pytest.approx(runs["base"].summary[key], rel=1e-12)
    assert want[-1] < 0.9 * want[0]  # it trained


def test_an_ensemble_of_scaled_data_is_the_ensemble_with_losses_times_c_squared(tmp_path):
    from kanode.fitting import fit_ensemble

    c = 2.0**-10
    base = write_lv(tmp_path / "base.csv")
    scaled = scaled_copy(base, c, tmp_path / "scaled.csv")
    settings = dict(SMALL, optimizer="adam", steps=8, holdout_last=3)
    runs = {name: fit_ensemble([FitConfig(data=str(p), seed=s, **settings) for s in (0, 1)])
            for name, p in (("base", base), ("scaled", scaled))}
    for a, b in zip(runs["scaled"], runs["base"]):
        got = [h["train_loss"] / c**2 for h in a.history]
        assert got == pytest.approx([h["train_loss"] for h in b.history], rel=1e-12, abs=0)
