"""The horizon curriculum (kanode.horizons) and the short-series noise estimate, in single fits
and ensembles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kanode.config import ConfigError, FitConfig
from kanode.data import observed_mse
from kanode.fitting import fit, fit_ensemble
from kanode.lifecycle import make_trainer, prepare
from kanode.horizons import curriculum_windows, doubling_horizons, window_points
from kanode.ode import solve
from kanode.recipes import noise_variance


pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/conftest.py


# ------------------------------------------------------------------ the schedule
def test_the_stages_split_the_adam_steps() -> None:
    """200 Adam steps, horizons 2 4 8 on 16 points: four stages of 50 steps (3, 5, 9 points,
    then the whole trajectory), and every L-BFGS step the whole trajectory."""
    config = FitConfig(horizons=[2, 4, 8], steps=200, lbfgs_steps=100)
    got = [window_points(config, 16, s) for s in (0, 49, 50, 99, 100, 149, 150, 199, 200, 299)]
    assert got == [3, 3, 5, 5, 9, 9, 0, 0, 0, 0]


def test_uneven_stages_and_horizons_past_the_window() -> None:
    """10 steps in 4 stages: stage = step·4 // 10 → steps 0–2, 3–4, 5–7, 8–9. On 8 points a
    horizon of 8 intervals (9 points) is the whole trajectory."""
    config = FitConfig(horizons=[2, 4, 8], steps=10, lbfgs_steps=0)
    assert [window_points(config, 16, s) for s in range(10)] == [3, 3, 3, 5, 5, 9, 9, 9, 0, 0]
    assert [window_points(config, 8, s) for s in range(10)] == [3, 3, 3, 5, 5, 0, 0, 0, 0, 0]
    assert [window_points(FitConfig(steps=10), 16, s) for s in range(10)] == [0] * 10


@pytest.mark.parametrize("n_train, want", [(16, [2, 4, 8]), (21, [2, 4, 8, 16]), (17, [2, 4, 8]),
                                           (4, [2]), (3, []), (100, [2, 4, 8, 16, 32, 64])])
def test_doubling_horizons(n_train: int, want: list[int]) -> None:
    assert doubling_horizons(n_train) == want


@pytest.mark.parametrize("settings, match", [
    (dict(horizons=[4, 2]), "increase"), (dict(horizons=[2, 2]), "increase"), (dict(horizons=[0]), "horizons"),
    (dict(horizons=[2], batch_time=4), "batch_time"), (dict(horizons=[2], optimizer="lbfgs"), "stages"),
    (dict(horizons=[2, 4, 8], steps=3), "steps >= 4")])
def test_bad_horizons_are_refused(settings: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FitConfig(**settings)


# ------------------------------------------------------------------ the windows
def test_every_window_from_an_observed_start() -> None:
    """Two trajectories of 5 points (values 10·traj + i); 3-point windows start at 0, 1, 2 of
    each, except where the start is missing; a missing value inside a window stays NaN."""
    y = (10.0 * torch.arange(2.0)[:, None] + torch.arange(5.0)[None, :])[..., None].repeat(1, 1, 2)
    y[1, 1, 0] = math.nan
    y0, target, start = curriculum_windows(y, 3)
    assert start.tolist() == [0, 1, 2, 0, 2]
    assert y0[:, 1].tolist() == [0.0, 1.0, 2.0, 10.0, 12.0]
    assert target.shape == (3, 5, 2)
    assert target[:, 3, 1].tolist() == [10.0, 11.0, 12.0] and math.isnan(float(target[1, 3, 0]))
    assert target[:, 4, 0].tolist() == [12.0, 13.0, 14.0]


def test_an_ensembles_windows_are_its_members() -> None:
    y = torch.randn(3, 2, 7, 2, generator=torch.Generator().manual_seed(0))        # (M, n_traj, n, dim)
    y0, target, start = curriculum_windows(y, 4)
    for m in range(3):
        y0_m, target_m, start_m = curriculum_windows(y[m], 4)
        assert torch.equal(y0[m], y0_m) and torch.equal(target[:, m], target_m) and torch.equal(start[m], start_m)
    y[1, 0, 2, 1] = math.nan
    with pytest.raises(ConfigError, match="missing cells"):
        curriculum_windows(y, 4)


# ------------------------------------------------------------------ in the fits
TINY = dict(system="lotka_volterra", n_traj=2, n_test_traj=1, train_fraction=0.1, noise=0.05,
            widths=[2, 4, 2], grid_size=3, optimizer="adam+lbfgs", steps=6, lbfgs_steps=3,
            horizons=[2, 4], positive=True, fit_initial_state=True, l2=1e-3,
            eval_every=2, checkpoint_every=100, plots=False)


def test_the_first_step_fits_the_short_windows() -> None:
    """Step 1's loss is the MSE of every 3-point window solved from its observed start
    (solved here one window at a time), not the whole trajectory's."""
    config = FitConfig(**TINY)
    trainer = make_trainer([config])
    d, _ = prepare(config)
    field = trainer.field.member(0)
    starts = [(k, i) for k in range(d.y_train.shape[0]) for i in range(d.n_train - 2)]   # trajectory-major
    with torch.no_grad():
        pred = torch.stack([solve(field, d.y_train[k, i][None], d.t_train[i: i + 3] - d.t_train[i],
                                  method="rk4", step_size=float(d.t[1] - d.t[0]))[:, 0] for k, i in starts], 1)
        whole = trainer._losses(full=True)[0].item()
    want = observed_mse(pred, torch.stack([d.y_train[k, i: i + 3] for k, i in starts], dim=1)).item()
    record = next(trainer.steps()).records[0]
    assert record.train_loss == pytest.approx(want, rel=1e-12)
    assert want != pytest.approx(whole, rel=1e-2)


@pytest.mark.parametrize("stop_at", [2, 4], ids=["first-stage", "second-stage"])
def test_a_resumed_curriculum_continues_where_it_stopped(tmp_path, stop_at: int) -> None:
    """The stage follows the checkpointed step: a fit stopped in a stage and resumed has the
    losses of the fit that ran through."""
    config = FitConfig(seed=1, **TINY)
    whole = fit(config, out=tmp_path / "whole")
    fit(config, out=tmp_path / "part", stop_at=stop_at)
    resumed = fit(resume=tmp_path / "part")
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert resumed.summary["fitted_initial_state"] == whole.summary["fitted_initial_state"]


def test_ensemble_members_with_a_curriculum_train_as_their_single_fits() -> None:
    configs = [FitConfig(seed=s, **TINY) for s in range(2)]
    members = fit_ensemble(configs)
    for m, config in enumerate(configs):
        single = fit(config)
        assert len(single.history) == 9
        for key in ("train_loss", "reg_loss"):
            np.testing.assert_allclose([r[key] for r in members[m].history],
                                       [r[key] for r in single.history], rtol=1e-10)
        np.testing.assert_allclose(members[m].summary["fitted_initial_state"]["fitted"],
                                   single.summary["fitted_initial_state"]["fitted"], rtol=1e-10)


def test_the_best_model_is_judged_on_whole_trajectory_losses(tmp_path) -> None:
    """A curriculum step's loss is its windows' MSE, far below the whole trajectory's; the best
    checkpoint is chosen by whole-trajectory losses only: its recorded loss is its model's own
    whole-trajectory MSE (solved here), and with its penalty (l2) it has the lowest objective of
    the whole-trajectory steps; summary.json's best_train_loss is that of best.pt or of the
    final model."""
    from kanode.checkpoints import load_checkpoint

    config = FitConfig(seed=0, **TINY)
    result = fit(config, out=tmp_path / "run")
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    d, field = prepare(config)
    field.load_state_dict(best["model"])
    with torch.no_grad():
        pred = solve(field, field.initial_values(d.y_train[:, 0]), d.t_train, method="rk4",
                     step_size=float(d.t[1] - d.t[0]))                           # (n_train, n_traj, dim)
    whole = observed_mse(pred, d.y_train.transpose(0, 1)).item()
    assert best["train_loss"] == pytest.approx(whole, rel=1e-9)
    rows = result.history
    window_rows = [r for r in rows if window_points(config, d.n_train, r["step"] - 1)]
    whole_rows = [r for r in rows if not window_points(config, d.n_train, r["step"] - 1)]
    assert min(r["train_loss"] for r in window_rows) < best["train_loss"]
    objective = {r["step"] - 1: r["train_loss"] + r["reg_loss"] for r in whole_rows}
    assert best["step"] in objective and objective[best["step"]] == min(objective.values())
    assert best["train_loss"] == next(r["train_loss"] for r in whole_rows if r["step"] - 1 == best["step"])
    assert result.summary["best_train_loss"] == min(best["train_loss"], result.summary["final_train_loss"])


def test_with_a_penalty_the_best_model_has_the_lowest_objective() -> None:
    """A later model with a higher MSE but a lower MSE + penalty is the better fit of the
    penalised problem: it replaces the best; one with a higher objective does not."""
    trainer = make_trainer([FitConfig(seed=0, **TINY)])
    snapshot = {k: v.clone() for k, v in trainer.field.state_dict().items()}
    trainer._track_best(0, 1.0, 3.0, 4, snapshot)
    trainer._track_best(0, 2.0, 2.5, 5, snapshot)
    trainer._track_best(0, 0.5, 2.6, 6, snapshot)
    state = trainer.states[0]
    assert (state.best_step, state.best_loss, state.best_objective) == (5, 2.0, 2.5)
    again = make_trainer([FitConfig(seed=0, **TINY)])
    again.load_member_states([trainer.member_state(0)])
    assert (again.states[0].best_loss, again.states[0].best_objective) == (2.0, 2.5)   # a resume keeps it


# ------------------------------------------------------------------ the noise estimate
def test_the_noise_estimate_of_smooth_signals() -> None:
    """A line gives 0 on any grid; t² on 0, 1, 2, 3 gives pseudo-residuals 1 and e²/(1/4 + 1/4 + 1)
    = 2/3; on 0, 1, 3 (a = 2/3, b = 1/3): e = 9/3 − 1 = 2, e²/(4/9 + 1/9 + 1) = 18/7. A missing
    value is skipped (the triple is of observed values)."""
    t = torch.tensor([0.0, 1.0, 2.0, 3.0])
    line = torch.stack([3 * t - 1, -2 * t], -1)[None]
    assert noise_variance(t, line) == pytest.approx(0.0, abs=1e-14)
    square = (t ** 2)[None, :, None]
    assert noise_variance(t, square) == pytest.approx(2 / 3, rel=1e-12)
    gappy = square.clone()
    gappy[0, 2, 0] = math.nan
    assert noise_variance(t, gappy) == pytest.approx(18 / 7, rel=1e-12)


def test_the_noise_estimate_of_white_noise() -> None:
    """σ = 0.3 around a sine sampled finely: the estimate is σ² within sampling error
    (20 000 points: about ±2 %)."""
    t = torch.linspace(0.0, 10.0, 20_000)
    noise = 0.3 * torch.randn(1, 20_000, 1, generator=torch.Generator().manual_seed(1))
    assert noise_variance(t, torch.sin(t)[None, :, None] + noise) == pytest.approx(0.09, rel=0.05)
