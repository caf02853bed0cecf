"""Priors for measured data: positive fields (log coordinates) and fitted initial states,
in single fits and ensembles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kanode.config import ConfigError, FitConfig
from kanode.ensemble.field import EnsembleVectorField
from kanode.ensemble.solve import solve_ensemble
from kanode.fit import fit
from kanode.fitting import fit_ensemble
from kanode.lifecycle import prepare
from kanode.nn import KAN, MLP
from kanode.ode import VectorField, solve
from kanode.train import training_loss


pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/conftest.py


class Constant(nn.Module):
    """A network whose output is a constant vector (dz/dt for a positive field)."""

    def __init__(self, value: list[float]) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(*x.shape[:-1], -1)


def unit_field(net: nn.Module, dim: int = 2, **kwargs) -> VectorField:
    return VectorField(net, torch.ones(dim), torch.zeros(dim), torch.ones(dim), **kwargs)


def random_field(seed: int, positive: bool = True, **kwargs) -> VectorField:
    """A random KAN [2, 4, 2] field on states around (1, 1) (log coordinates when positive)."""
    torch.manual_seed(seed)
    net = KAN([2, 4, 2], grid_size=4)
    t = torch.linspace(0.0, 2.0, 11)
    y = 1.0 + 0.5 * torch.stack([torch.sin(t), torch.cos(2 * t)], -1)[None]   # (1, 11, 2)
    return VectorField.from_data(net, t, y, positive=positive, **kwargs)


# ------------------------------------------------------------------ positivity
def test_a_positive_field_stays_positive_where_the_plain_solve_goes_negative() -> None:
    """dy/dt = -1.5 y with Euler at step 1: in y each step multiplies by 1 - 1.5 = -0.5, so
    the solution changes sign; in log y the rate is constant, Euler is exact and the
    solution is y0 exp(-1.5 t) (to rounding)."""
    t = torch.arange(0.0, 6.0)
    y0 = torch.tensor([[2.0, 0.5]])
    positive = unit_field(Constant([-1.5, -1.5]), positive=True)
    got = solve(positive, y0, t, method="euler", step_size=1.0, adjoint=False)[:, 0]   # (6, 2)
    assert bool((got > 0).all())
    want = y0 * torch.exp(-1.5 * t)[:, None]
    torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=0)

    def plain(t_: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # the same ODE, integrated in y
        return positive(t_, y)

    naive = solve(plain, y0, t, method="euler", step_size=1.0, adjoint=False).detach()
    torch.testing.assert_close(naive[:, 0], y0 * (-0.5) ** t[:, None], rtol=1e-12, atol=0)
    assert float(naive.min()) < 0


def test_the_log_solve_integrates_dy_dt_of_the_field() -> None:
    """The solution exp(z(t)) of the log-coordinate solve satisfies dy/dt = field(t, y):
    central differences of a dense dopri5 solution against the field, and the same ODE
    integrated in y by dopri5 agrees to the tolerance."""
    field = random_field(0)
    y0 = torch.tensor([[1.2, 0.8], [0.9, 1.4]])
    t = torch.linspace(0.0, 1.0, 201)
    with torch.no_grad():
        y = solve(field, y0, t, method="dopri5", rtol=1e-10, atol=1e-12, adjoint=False)   # (201, 2, 2)
        h = float(t[1] - t[0])
        dydt = (y[2:] - y[:-2]) / (2 * h)
        torch.testing.assert_close(dydt, field(t[0], y[1:-1]), rtol=1e-4, atol=1e-6)
        in_y = solve(lambda t_, s: field(t_, s), y0, t, method="dopri5", rtol=1e-10, atol=1e-12,
                     adjoint=False)
        torch.testing.assert_close(y, in_y, rtol=1e-7, atol=1e-9)
        # the field is y ⊙ g(log y) with g the network in log coordinates
        torch.testing.assert_close(field(t[0], y0), y0 * field.log_rate(t[0], torch.log(y0)))


def test_an_ensemble_of_positive_fields_solves_as_its_members() -> None:
    fields = [random_field(seed) for seed in range(3)]
    ensemble = EnsembleVectorField.from_fields(fields)
    assert ensemble.positive
    y0 = torch.tensor([[1.2, 0.8], [0.9, 1.4]])
    t = torch.linspace(0.0, 3.0, 13)
    got = solve_ensemble(ensemble, y0.expand(3, 2, 2), t, method="rk4", adjoint=False)   # (13, 3, 2, 2)
    for m, field in enumerate(fields):
        want = solve(field, y0, t, method="rk4", adjoint=False)
        torch.testing.assert_close(got[:, m], want, rtol=1e-12, atol=1e-14)
        assert ensemble.member(m).positive


def test_positive_refuses_non_positive_states() -> None:
    field = random_field(0)
    with pytest.raises(ValueError, match="> 0"):
        solve(field, torch.tensor([[1.0, -0.1]]), torch.linspace(0, 1, 3))
    with pytest.raises(ConfigError, match="positive = true needs every observed value > 0"):
        fit(FitConfig(system="fitzhugh_nagumo", positive=True, steps=1, lbfgs_steps=0, plots=False))


def test_fit_initial_state_needs_whole_trajectories() -> None:
    with pytest.raises(ConfigError, match="fit_initial_state .* needs batch_time = 0"):
        FitConfig(fit_initial_state=True, batch_time=5)


# ------------------------------------------------------------- initial states
def test_initial_states_start_at_the_first_observations() -> None:
    field = random_field(1, fit_initial_state=True)
    observed = torch.tensor([[1.0, 1.5]])
    torch.testing.assert_close(field.initial_values(observed), observed, rtol=1e-14, atol=0)
    plain = random_field(1, positive=False, fit_initial_state=True)
    torch.testing.assert_close(plain.initial_values(observed), observed, rtol=1e-14, atol=0)


@pytest.mark.parametrize("positive", [True, False], ids=["positive", "plain"])
def test_the_initial_state_gradient_matches_finite_differences(positive: bool) -> None:
    config = FitConfig(n_test_traj=0, n_traj=2, train_fraction=0.1, model="mlp", widths=[2, 6, 2],
                       positive=positive, fit_initial_state=True, noise=0.01, plots=False)
    data, field = prepare(config)
    assert field.initial_state.shape == (2, 2)
    with torch.no_grad():
        field.initial_state.add_(0.05 * torch.randn(2, 2, generator=torch.Generator().manual_seed(3)))
    loss = training_loss(field, data, config)
    (grad,) = torch.autograd.grad(loss, field.initial_state)
    eps = 1e-6
    numeric = torch.zeros_like(grad)
    with torch.no_grad():
        for index in np.ndindex(*grad.shape):
            field.initial_state[index] += eps
            up = training_loss(field, data, config).item()
            field.initial_state[index] -= 2 * eps
            down = training_loss(field, data, config).item()
            field.initial_state[index] += eps
            numeric[index] = (up - down) / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-9)
    assert float(grad.abs().max()) > 1e-3  # the loss really depends on where trajectories start


TINY = dict(system="lotka_volterra", n_traj=2, n_test_traj=1, train_fraction=0.1, noise=0.01,
            widths=[2, 4, 2], grid_size=3, optimizer="adam+lbfgs", steps=6, lbfgs_steps=4,
            eval_every=2, checkpoint_every=100, plots=False)


@pytest.mark.parametrize("positive", [True, False], ids=["positive", "plain"])
def test_fitted_initial_states_move_and_are_reported(tmp_path: Path, positive: bool) -> None:
    config = FitConfig(positive=positive, fit_initial_state=True, **TINY)
    result = fit(config, out=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    start = summary["fitted_initial_state"]
    assert start["state_names"] == ["x", "y"] and len(start["fitted"]) == 2
    observed = np.array(start["observed"])
    fitted = np.array(start["fitted"])
    np.testing.assert_allclose(observed, result.data.y[:, 0].numpy())
    assert 1e-4 < np.abs(fitted - observed).max() < 0.5
    # the reported states are the field's, and the evaluation starts from them
    with torch.no_grad():
        y0 = result.field.initial_values(result.data.y[:, 0])
    np.testing.assert_allclose(fitted, y0.numpy(), rtol=1e-12)
    pred = solve(result.field, y0, result.data.t, method="rk4", adjoint=False).transpose(0, 1)
    n = result.data.n_train
    train = torch.mean((pred[:, :n] - result.data.y[:, :n]) ** 2).item()
    assert train == pytest.approx(summary["final_train_loss"], rel=1e-10)
    # without fitted states the same settings report none
    assert fit(FitConfig(positive=positive, **TINY)).summary["fitted_initial_state"] is None


@pytest.mark.parametrize("stop_at", [3, 8], ids=["adam-phase", "lbfgs-phase"])
def test_a_resumed_fit_continues_its_initial_states(tmp_path: Path, stop_at: int) -> None:
    config = FitConfig(positive=True, fit_initial_state=True, **TINY)
    whole = fit(config, out=tmp_path / "whole")
    fit(config, out=tmp_path / "part", stop_at=stop_at)
    resumed = fit(resume=tmp_path / "part")
    assert resumed.summary["fitted_initial_state"] == whole.summary["fitted_initial_state"]
    assert resumed.summary["final_train_loss"] == whole.summary["final_train_loss"]


@pytest.mark.parametrize("model", ["kan", "mlp"])
def test_ensemble_members_fit_initial_states_as_their_single_fits(tmp_path: Path, model: str) -> None:
    settings = {**TINY, "model": model, "widths": [2, 4, 2]}
    configs = [FitConfig(seed=s, positive=True, fit_initial_state=True, **settings) for s in range(3)]
    members = fit_ensemble(configs, outs=[tmp_path / f"seed-{s}" for s in range(3)])
    for m, config in enumerate(configs):
        single = fit(config)
        got, want = members[m].summary, single.summary
        assert got["status"] == want["status"] == "finished"
        np.testing.assert_allclose(got["fitted_initial_state"]["fitted"],
                                   want["fitted_initial_state"]["fitted"], rtol=1e-8)
        assert got["final_train_loss"] == pytest.approx(want["final_train_loss"], rel=1e-8)
        assert got["final_extrap_loss"] == pytest.approx(want["final_extrap_loss"], rel=1e-8)
        saved = json.loads((tmp_path / f"seed-{m}" / "summary.json").read_text())
        assert saved["fitted_initial_state"] == got["fitted_initial_state"]
    starts = [tuple(r.summary["fitted_initial_state"]["fitted"][0]) for r in members]
    assert len(set(starts)) == 3  # members are their own fits
    assert all(math.isfinite(r.summary["final_train_loss"]) for r in members)


def test_stacking_refuses_mixed_priors() -> None:
    with pytest.raises(ValueError, match="positive"):
        EnsembleVectorField.from_fields([random_field(0), random_field(1, positive=False)])
    with pytest.raises(ValueError, match="initial states"):
        EnsembleVectorField.from_fields([random_field(0), random_field(1, fit_initial_state=True)])


# ------------------------------------------------------------------ L2 penalty
def test_the_l2_penalty_of_an_ensemble_is_each_members_own() -> None:
    from kanode.ensemble.networks import stack_models
    from kanode.train import l2_penalty

    torch.manual_seed(0)
    nets = [MLP([2, 5, 2]) for _ in range(3)]
    got = l2_penalty(stack_models(nets), 0.1, n_members=3)
    want = torch.stack([0.1 * sum((p ** 2).sum() for p in net.parameters()) for net in nets])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    weights = torch.tensor([0.1, 0.0, 2.0])                                # each member's own l2
    torch.testing.assert_close(l2_penalty(stack_models(nets), weights, n_members=3),
                               want * torch.tensor([1.0, 0.0, 20.0]), rtol=1e-12, atol=0)


@pytest.mark.slow
def test_ensemble_members_with_l2_train_as_their_single_fits() -> None:
    """Each member its own l2 weight (1e-3 and 1e-2): its penalty and losses are its single fit's."""
    configs = [FitConfig(seed=s, l2=1e-3 * 10 ** s, positive=True, fit_initial_state=True, **TINY)
               for s in range(2)]
    members = fit_ensemble(configs)
    for m, config in enumerate(configs):
        single = fit(config)
        got = [r["reg_loss"] for r in members[m].history]
        want = [r["reg_loss"] for r in single.history]
        assert all(w is not None and w > 0 for w in want)
        np.testing.assert_allclose(got, want, rtol=1e-8)
        np.testing.assert_allclose([r["train_loss"] for r in members[m].history],
                                   [r["train_loss"] for r in single.history], rtol=1e-8)


# ---------------------------------------------------------------------- recipe
def series(n_t: int, dim: int = 2, low: float = 1.0):
    from kanode.data import FitData

    t = torch.arange(float(n_t)) * 2.0
    y = low + torch.rand(1, n_t, dim, generator=torch.Generator().manual_seed(0)) * 10
    return FitData(t=t, y=y, y_held_out=y[:0], n_train=n_t, system=None, state_names=("a", "b")[:dim])


def test_recipe_names_are_the_configs() -> None:
    from kanode.config import RECIPE_NAMES
    from kanode.recipes import RECIPES

    assert tuple(RECIPES) == RECIPE_NAMES


@pytest.mark.parametrize("n_t, grid, hidden", [(16, 2, 5), (20, 4, 7), (8, 1, 2)])
def test_short_series_settings_follow_the_data(n_t: int, grid: int, hidden: int) -> None:
    """16 points of 2 states = 32 numbers, 30 beside the fitted initial state: 4 edges of
    (G + 5) parameters fit for G = 2; an MLP [2, h, 2] has 5h + 2 parameters, h = 5. The penalty: the noise variance of the
    uniform grid's pseudo-residuals y_i − (y_{i-1} + y_{i+1})/2 (e²/1.5) over n_obs; rk4 at a
    quarter of the sampling interval (2); horizons doubling from 2 below n_t − 1 intervals."""
    from kanode.recipes import apply_recipe

    data = series(n_t)
    config = FitConfig(data="x.csv", recipe="short-series", n_test_traj=0)
    kan = apply_recipe(config, data).config
    assert kan.widths == [2, 2] and kan.grid_size == grid
    assert kan.positive and kan.fit_initial_state and kan.batch_time == 0
    assert kan.method == "rk4" and kan.step_size == 0.5
    y = data.y[0]
    noise = float((((y[:-2] + y[2:]) / 2 - y[1:-1]) ** 2 / 1.5).mean())
    assert kan.l2 == pytest.approx(noise / (2 * n_t), rel=1e-12)
    assert kan.horizons == {16: [2, 4, 8], 20: [2, 4, 8, 16], 8: [2, 4]}[n_t]
    mlp = apply_recipe(config.replace(model="mlp"), data).config
    assert mlp.widths == [2, hidden, 2]
    assert mlp.l2 == kan.l2 and mlp.horizons == kan.horizons
    assert apply_recipe(config, series(n_t, low=-5.0)).config.positive is False


def test_the_recipe_keeps_the_users_settings_and_resolves_once() -> None:
    from kanode.recipes import apply_recipe

    data = series(16)
    config = FitConfig(data="x.csv", recipe="short-series", n_test_traj=0, lr=0.07, widths=[2, 3, 2])
    result = apply_recipe(config, data)
    assert result.kept == {"lr": 0.07, "widths": [2, 3, 2]}
    assert result.config.lr == 0.07 and result.config.widths == [2, 3, 2] and result.config.grid_size == 2
    again = apply_recipe(result.config, data)
    assert again.config == result.config and again.kept == result.kept
    assert result.describe().endswith("; kept yours: widths = [2, 3, 2], lr = 0.07")
    assert apply_recipe(config.replace(recipe="none"), data).config == config.replace(recipe="none")


def test_a_setting_given_at_its_default_is_kept() -> None:
    """``--horizons`` with no value is an explicit "no curriculum": the recipe keeps it (and the
    other settings the user named, e.g. a config file's keys), though [] is the default."""
    from kanode.cli_args import build_parser, given_settings, overrides_from_args
    from kanode.recipes import apply_recipe

    data = series(16)
    config = FitConfig(data="x.csv", recipe="short-series", n_test_traj=0)
    assert apply_recipe(config, data).config.horizons == [2, 4, 8]
    args = build_parser().parse_args(["--recipe", "short-series", "--horizons", "--l2", "0"])
    overrides = overrides_from_args(args)
    given = given_settings(args, overrides)
    assert overrides["horizons"] == [] and {"horizons", "l2", "recipe"} <= given
    result = apply_recipe(config.replace(**overrides), data, given)
    assert result.config.horizons == [] and result.config.l2 == 0.0
    assert result.kept == {"horizons": [], "l2": 0.0} and result.config.grid_size == 2
    assert apply_recipe(result.config, data, given).config == result.config


def test_a_config_files_keys_are_given(tmp_path: Path) -> None:
    from kanode.cli_args import build_parser, given_settings

    toml = tmp_path / "c.toml"
    toml.write_text('recipe = "short-series"\nhorizons = []\n', encoding="utf-8")
    args = build_parser().parse_args(["--config", str(toml), "--steps", "50"])
    assert given_settings(args, {"steps": 50}) == {"recipe", "horizons", "steps"}


def test_positivity_holds_on_the_hare_lynx_forecast() -> None:
    """A short short-series fit on the 16 training years; its forecast to 1940 (dense,
    from the fitted 1900 state) stays > 0 and finite."""
    data_file = Path(__file__).resolve().parents[2] / "experiments" / "data" / "hare_lynx_1900_1915.csv"
    result = fit(FitConfig(data=str(data_file), n_test_traj=0, train_fraction=1.0, recipe="short-series",
                           steps=15, lbfgs_steps=0, plots=False))
    assert result.config.positive and result.field.positive
    with torch.no_grad():
        y0 = result.field.initial_values(result.data.y[:, 0])
        t = torch.linspace(1900.0, 1940.0, 401)
        pred = solve(result.field, y0, t, method="rk4", step_size=0.25, adjoint=False)
    assert bool(torch.isfinite(pred).all()) and bool((pred > 0).all())
