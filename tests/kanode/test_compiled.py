"""The compiled training loss (kanode.compiled) gives the eager numbers: losses along 100 Adam
steps of a single fit and of an ensemble member, loss and gradient at every L-BFGS step, and the
eager fallback (one warning) where compilation fails. Each through both routes: the fused window
kernel (kanode.window) and the torch.compile'd solver step (the fused route switched off).

One small model shape per trainer kind ([2, 4, 2] KAN, grid 3, float64), so the session
compiles the step twice (cached across processes by inductor).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import kanode.compiled as compiled
from kanode.config import ConfigError, FitConfig
from kanode.lifecycle import make_trainer, prepare
from kanode.train import Trainer, training_loss

SMALL = dict(widths=[2, 4, 2], grid_size=3, train_fraction=0.25, n_test_traj=1, eval_every=1000,
             checkpoint_every=1000, plots=False, threads=1)
ADAM = dict(optimizer="adam", steps=100, **SMALL)


pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/conftest.py


@pytest.fixture(params=["fused", "compiled"])
def route(request, monkeypatch) -> str:
    """Which compiled route the test's trainers take."""
    if request.param == "compiled":
        monkeypatch.setattr(compiled, "window_losses", lambda *args, **kwargs: None)
    return request.param


def losses_of(config: FitConfig) -> list[float]:
    return [s.records[0].train_loss for s in make_trainer([config]).steps()]


def rel_errs(got: list[float], want: list[float]) -> list[float]:
    assert len(got) == len(want)
    return [abs(g - w) / abs(w) for g, w in zip(got, want)]


@pytest.mark.slow
def test_single_fit_adam_steps_match_eager(route: str):
    eager = losses_of(FitConfig(compile="off", **ADAM))
    trainer = make_trainer([FitConfig(compile="on", **ADAM)])
    got = [s.records[0].train_loss for s in trainer.steps()]
    assert trainer.compiled is not None and not trainer.compiled.broken
    assert trainer.compiled.last_route == route
    assert max(rel_errs(got, eager)) <= 1e-10
    assert eager[-1] < 0.5 * eager[0]  # the fit moved: the comparison covers a real trajectory


@pytest.mark.slow
def test_lbfgs_steps_loss_and_gradient_match_eager(route: str):
    """At every point an (eager) Adam → L-BFGS run visits, the compiled loss and gradient
    are the eager ones."""
    config = FitConfig(compile="on", optimizer="adam+lbfgs", steps=20, lbfgs_steps=20, **SMALL)
    data, field = prepare(config)
    trainer = Trainer.single(field, data, config)  # trains field itself
    params = list(field.parameters())
    worst_loss, worst_grad = 0.0, 0.0
    for step in trainer.steps():
        record = step.records[0]
        values = []
        for engine in (None, trainer.compiled):
            for p in params:
                p.grad = None
            loss = training_loss(field, data, config, compiled=engine)
            loss.backward()
            values.append((loss.item(), torch.cat([p.grad.flatten() for p in params])))
        (eager_loss, eager_grad), (loss, grad) = values
        worst_loss = max(worst_loss, abs(loss - eager_loss) / eager_loss)
        worst_grad = max(worst_grad, float((grad - eager_grad).norm() / eager_grad.norm()))
    assert record.phase == "lbfgs" and record.step == 40 and trainer.compiled.last_route == route
    assert worst_loss <= 1e-12 and worst_grad <= 1e-10


@pytest.mark.slow
def test_ensemble_member_adam_steps_match_its_eager_single_fit(route: str):
    # learning rates whose trajectories do not amplify rounding: at (2e-2, 3e-2) member 1's loss
    # oscillates and even the eager ensemble differs from its eager single fit by 1e-9
    configs = [FitConfig(compile="on", seed=m, lr=(1e-2, 2e-2)[m], **ADAM) for m in range(2)]
    trainer = make_trainer(configs)
    assert trainer.compiled is not None
    steps = list(trainer.steps())
    assert not trainer.compiled.broken and trainer.compiled.last_route == route
    for m, config in enumerate(configs):
        got = [s.records[m].train_loss for s in steps]
        assert max(rel_errs(got, losses_of(config.replace(compile="off")))) <= 1e-10


@pytest.mark.slow
def test_failing_compiler_warns_once_and_trains_eagerly(monkeypatch):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(compiled, "_BACKEND", broken_backend)
    monkeypatch.setattr(compiled, "window_losses", lambda *args, **kwargs: None)  # the torch.compile route
    monkeypatch.setattr(compiled, "_WARNED", False)
    torch._dynamo.reset()
    short = dict(SMALL, optimizer="adam+lbfgs", steps=3, lbfgs_steps=2)
    eager = losses_of(FitConfig(compile="off", **short))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = losses_of(FitConfig(compile="on", **short))
        again = losses_of(FitConfig(compile="on", **short))
    messages = [str(w.message) for w in caught if "torch.compile is unavailable" in str(w.message)]
    assert len(messages) == 1 and "no C++ compiler here" in messages[0]
    assert got == eager and again == eager
    torch._dynamo.reset()


@pytest.mark.parametrize("settings, words", [
    (dict(method="dopri5"), "fixed-step method"),
    (dict(method="explicit_adams"), "fixed-step method"),
    (dict(adjoint=True), "adjoint"),
    (dict(model="rswaf"), "rswaf"),
])
def test_compile_on_refuses_what_it_cannot_compile(settings: dict[str, Any], words: str):
    with pytest.raises(ConfigError, match=words):
        FitConfig(compile="on", **settings)
    assert not compiled.compiles(FitConfig(compile="auto", **settings), n_members=10_000)
    assert not compiled.torch_compiles(FitConfig(compile="auto", **settings), n_members=10_000)


def test_compile_modes():
    with pytest.raises(ConfigError, match="compile"):
        FitConfig(compile="yes")
    assert not compiled.compiles(FitConfig(compile="off", steps=10**6))
    assert not compiled.torch_compiles(FitConfig(compile="off", steps=10**6))
    assert compiled.compiles(FitConfig(compile="on", steps=1, lbfgs_steps=0))
    assert compiled.torch_compiles(FitConfig(compile="on", steps=1, lbfgs_steps=0))
    # auto: every run takes the fused kernel where it applies (nothing to compile per shape);
    # torch.compile (paid once per shape) only for long runs and large ensembles
    assert compiled.compiles(FitConfig())
    assert not compiled.torch_compiles(FitConfig())
    assert compiled.torch_compiles(FitConfig(steps=compiled.AUTO_MIN_MEMBER_STEPS, lbfgs_steps=0))
    n_members = -(-compiled.AUTO_MIN_MEMBER_STEPS // FitConfig().total_steps)
    assert compiled.torch_compiles(FitConfig(), n_members=n_members)
    assert not compiled.torch_compiles(FitConfig(), n_members=n_members - 1)
