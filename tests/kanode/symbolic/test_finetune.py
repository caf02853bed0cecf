"""Fine-tuning stages of the recipe keep a result only if it lowers its window's MSE."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kanode.config import FitConfig
from kanode.data import load_data
from kanode.ode import solve
from kanode.symbolic.pipeline import SymbolicConfig, _initial_field, _window_loss, finetune_stage
from kanode.train import solver_options


def _setup() -> tuple:
    config = FitConfig(train_fraction=0.15, n_traj=1, batch_time=5, batch_size=4)
    data = load_data(config).to(torch.float64, "cpu")
    field = _initial_field(config, SymbolicConfig(hidden=2), data)
    return config, data, field


def _flat(field) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in field.parameters()])


def test_window_loss_is_the_mse_over_that_window_only() -> None:
    config, data, field = _setup()
    short = dataclasses.replace(data, n_train=4)
    with torch.no_grad():
        pred = solve(field, data.y_train[:, 0], data.t_train, adjoint=False,
                     **solver_options(config, data)).transpose(0, 1)
    whole = torch.mean((pred - data.y_train) ** 2).item()
    first = torch.mean((pred[:, :4] - data.y_train[:, :4]) ** 2).item()
    assert _window_loss(field, data, config) == pytest.approx(whole, rel=1e-12)
    assert _window_loss(field, short, config) == pytest.approx(first, rel=1e-12)
    assert first < 0.5 * whole


def test_a_stage_that_worsens_its_window_is_undone() -> None:
    config, data, field = _setup()
    start, before = _flat(field), _window_loss(field, data, config)
    loss, note = finetune_stage(field, data, config, steps=5, lbfgs_steps=0, lr=1.0)   # too large for Adam
    assert note.endswith("undone") and "inf" not in note, note   # finite but worse: undone all the same
    assert loss == before
    assert torch.equal(_flat(field), start)
    assert _window_loss(field, data, config) == before


def test_a_stage_that_helps_is_kept() -> None:
    config, data, field = _setup()
    start, before = _flat(field), _window_loss(field, data, config)
    loss, note = finetune_stage(field, data, config, steps=0, lbfgs_steps=10, lr=1e-2)
    assert "undone" not in note
    assert loss < 0.5 * before
    assert loss == _window_loss(field, data, config)
    assert not torch.equal(_flat(field), start)
