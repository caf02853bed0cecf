"""Residuals, their Jacobian and the Levenberg–Marquardt polish of a finished run
(kanode.residuals, kanode.polish): the residuals give the run's training loss, the fused and eager
Jacobians agree with each other and with central differences (also for a field that fits its
initial states, and for data with missing values), and the polish lowers the training loss from
the run's own value, saves a checkpoint that load_run reads back at the loss it reports, includes
the l2 penalty in its objective, and refuses what it cannot do."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from kanode.analysis.objective import load_run_field
from kanode import window
from kanode.config import ConfigError
from kanode.fit import fit
from kanode.polish import main as polish_main
from kanode.polish import polish_run, read_polish
from kanode.predict import load_run
from kanode.residuals import _eager_jacobian, jacobian_route, residual_jacobian, training_residuals
from kanode.train import l2_penalty, training_loss

pytestmark = pytest.mark.usefixtures("float64_one_thread")

TINY = dict(system="lotka_volterra", train_fraction=0.1, method="rk4", adjoint=False, optimizer="adam+lbfgs",
            steps=20, lbfgs_steps=10, lr=1e-2, eval_every=100, checkpoint_every=100, plots=False, n_test_traj=0,
            threads=1)
MODELS = {"kan": dict(model="kan", widths=[2, 3, 2], grid_size=3), "mlp": dict(model="mlp", widths=[2, 8, 2])}


def loss_of(field, data, config) -> float:
    """The whole-window training MSE (no graph)."""
    with torch.no_grad():
        return float(training_loss(field, data, config, full=True))


def central_jacobian(field, data, config, eps=1e-6):
    """(R, P) by central differences of training_residuals."""
    params = list(field.parameters())
    theta = parameters_to_vector(params).detach().clone()
    cols = []
    for i in range(theta.numel()):
        step = torch.zeros_like(theta)
        step[i] = eps
        vector_to_parameters(theta + step, params)
        up = training_residuals(field, data, config)
        vector_to_parameters(theta - step, params)
        down = training_residuals(field, data, config)
        cols.append((up - down) / (2 * eps))
    vector_to_parameters(theta, params)
    return torch.stack(cols, dim=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("polish_runs")
    out = {}
    for name, model in MODELS.items():
        out[name] = root / name
        fit(out=out[name], **TINY, **model)
    out["fitted_y0"] = root / "fitted_y0"
    fit(out=out["fitted_y0"], **{**TINY, "fit_initial_state": True, "batch_time": 0}, **MODELS["mlp"])
    return out


@pytest.mark.parametrize("name", ["kan", "mlp", "fitted_y0"])
def test_jacobian_against_central_differences(runs, name):
    field, data, config = load_run_field(runs[name])
    r, jac = residual_jacobian(field, data, config)
    fused = name != "fitted_y0" and window.available()  # KANODE_NATIVE=0 (make test-eager): eager
    assert jacobian_route(field, data, config) == ("fused" if fused else "eager")
    assert float(r.pow(2).mean()) == pytest.approx(loss_of(field, data, config), rel=1e-12)
    with torch.no_grad():
        numeric = central_jacobian(field, data, config)
    assert jac.shape == numeric.shape == (r.numel(), sum(p.numel() for p in field.parameters()))
    np.testing.assert_allclose(jac.numpy(), numeric.numpy(), rtol=1e-5, atol=1e-7 * float(jac.abs().max()))
    if name != "fitted_y0":  # the two routes, to rounding
        np.testing.assert_allclose(jac.numpy(), _eager_jacobian(field, data, config)[1].numpy(), rtol=1e-9,
                                   atol=1e-11 * float(jac.abs().max()))


def test_residuals_skip_missing_values(runs):
    field, data, config = load_run_field(runs["kan"])
    full = training_residuals(field, data, config)
    data.y_train[0, 2, 1] = math.nan       # one observation missing
    r, jac = residual_jacobian(field, data, config)
    assert r.numel() == full.numel() - 1
    assert float(r.pow(2).mean()) == pytest.approx(loss_of(field, data, config), rel=1e-12)
    np.testing.assert_allclose(jac.numpy(), _eager_jacobian(field, data, config)[1].numpy(), rtol=1e-9,
                               atol=1e-11 * float(jac.abs().max()))


@pytest.mark.parametrize("name", ["kan", "mlp"])
def test_polish_lowers_the_loss_and_saves_what_it_reports(runs, tmp_path, name):
    import shutil

    run = tmp_path / name
    shutil.copytree(runs[name], run)
    before = json.loads((run / "summary.json").read_text())
    field, data, config = load_run_field(run)
    start = loss_of(field, data, config)
    result = polish_run(run, max_steps=40, plateau_steps=5)
    assert result.start_loss == pytest.approx(start, rel=1e-12)
    assert result.train_mse == result.loss < 0.5 * start           # a tiny fit after 30 steps is far from a minimum
    assert all(b < a for a, b in zip(result.losses, result.losses[1:]))
    polished = load_run(run, "polished")
    assert loss_of(polished.field, polished.data, config) == pytest.approx(result.train_mse,
                                                                                                  rel=1e-10)
    assert read_polish(run) == result
    assert json.loads((run / "summary.json").read_text()) == before  # the run's own files are untouched
    assert loss_of(load_run(run).field, data, config) == pytest.approx(start, rel=1e-12)


def test_polish_objective_includes_l2(runs, tmp_path):
    import shutil

    run = tmp_path / "l2"
    shutil.copytree(runs["mlp"], run)
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("l2 = 0.0", "l2 = 0.001"))
    field, data, config = load_run_field(run)
    assert config.l2 == 0.001
    objective = loss_of(field, data, config) + float(l2_penalty(field.net, config.l2).detach())
    result = polish_run(run, max_steps=5, plateau_steps=0)
    assert result.start_loss == pytest.approx(objective, rel=1e-12)
    polished = load_run(run, "polished").field
    after = loss_of(polished, data, config) + float(l2_penalty(polished.net, config.l2).detach())
    assert after == pytest.approx(result.loss, rel=1e-10) and after < objective


def test_refusals(runs, tmp_path, capsys):
    with pytest.raises(ConfigError, match="kanode.polish"):
        load_run(runs["kan"], "polished")
    assert polish_main([str(tmp_path / "nothing")]) == 1
    assert "error" in capsys.readouterr().err


def test_command_line(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "cli"
    shutil.copytree(runs["mlp"], run)
    assert polish_main([str(run), "--max-steps", "2", "--plateau-steps", "0"]) == 0
    result = read_polish(run)
    assert result.steps == 2 and result.stopped_on == "cap" and result.l2 == 0.0
    assert f"training MSE {result.start_loss:.4g} -> {result.train_mse:.4g} in 2 steps (cap" in capsys.readouterr().out
