"""Training loop: loss decrease, learning-rate schedules, exact resume, grid changes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kanode.config import FitConfig
from kanode.fit import fit
from kanode.runs import load_checkpoint, read_metrics
from kanode.train import lr_at, phase_at

# A short training window (t <= 1.3) and loose tolerances keep these fits small.
TINY = dict(train_fraction=0.1, rtol=1e-5, atol=1e-7, eval_every=5, lr=2e-2, n_test_traj=1,
            adjoint=False)


@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
@pytest.mark.parametrize("model", ["kan", "mlp"])
def test_training_loss_falls_tenfold(model: str, adjoint: bool) -> None:
    config = FitConfig(model=model, optimizer="adam+lbfgs", steps=15, lbfgs_steps=10, **TINY)
    result = fit(config, adjoint=adjoint)
    first = result.history[0]["train_loss"]
    assert result.summary["status"] == "finished"
    assert result.summary["final_train_loss"] <= first / 10, (first, result.summary)
    assert len(result.history) == 25
    assert [r["phase"] for r in result.history] == ["adam"] * 15 + ["lbfgs"] * 10


def test_learning_rate_schedules() -> None:
    cosine = FitConfig(lr=0.1, steps=100, lbfgs_steps=5, lr_schedule="cosine", lbfgs_lr=0.5)
    assert lr_at(cosine, 0) == pytest.approx(0.1)
    assert lr_at(cosine, 50) == pytest.approx(0.1 * (0.05 + 0.95 * 0.5))
    assert lr_at(cosine, 100) == pytest.approx(0.5)           # first L-BFGS step
    assert phase_at(cosine, 99) == "adam" and phase_at(cosine, 100) == "lbfgs"
    step = FitConfig(lr=0.1, lr_schedule="step", lr_step_every=10, lr_step_gamma=0.5)
    assert [lr_at(step, s) for s in (0, 9, 10, 25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert lr_at(FitConfig(lr=0.3, lr_schedule="none"), 77) == 0.3


def _losses(run_dir: Path) -> list[tuple]:
    return [(r["step"], r["phase"], r["train_loss"], r["val_loss"], r["extrap_loss"],
             r["grad_norm"], r["nfe_forward"]) for r in read_metrics(run_dir / "metrics.csv")]


@pytest.mark.parametrize("stop_at", [3, 8], ids=["adam-phase", "lbfgs-phase"])
def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, stop_at: int) -> None:
    config = FitConfig(model="kan", optimizer="adam+lbfgs", steps=6, lbfgs_steps=6,
                       batch_time=5, batch_size=4, checkpoint_every=100, eval_every=2,
                       **{k: v for k, v in TINY.items() if k != "eval_every"})
    whole = fit(config, out=tmp_path / "whole")
    part = fit(config, out=tmp_path / "part", stop_at=stop_at)
    assert part.summary["status"] == "stopped"
    assert len(read_metrics(tmp_path / "part" / "metrics.csv")) == stop_at
    resumed = fit(resume=tmp_path / "part")
    assert resumed.summary["status"] == "finished"
    assert _losses(tmp_path / "part") == _losses(tmp_path / "whole")
    assert resumed.summary["final_train_loss"] == whole.summary["final_train_loss"]
    assert resumed.summary["best_train_loss"] == whole.summary["best_train_loss"]


def test_a_resume_that_extends_the_schedule_resumes_again(tmp_path: Path) -> None:
    """Extending lbfgs_steps on resume rewrites config.toml, so the run stays resumable
    and ends as a run of the longer schedule would (loss for loss)."""
    config = FitConfig(model="kan", optimizer="adam+lbfgs", steps=4, lbfgs_steps=2, checkpoint_every=100,
                       **TINY)
    whole = fit(config.replace(lbfgs_steps=5), out=tmp_path / "whole")
    fit(config, out=tmp_path / "part")
    fit(resume=tmp_path / "part", lbfgs_steps=4, stop_at=7)
    from kanode.config import load_config
    assert load_config(tmp_path / "part" / "config.toml").lbfgs_steps == 4
    again = fit(resume=tmp_path / "part", lbfgs_steps=5)
    assert again.summary["status"] == "finished" and again.summary["steps"] == 9
    # step, phase, training loss, gradient norm and NFE, step for step (the shorter runs also
    # evaluated the held-out losses at their last steps, 6 and 7)
    keep = lambda rows: [(r[0], r[1], r[2], r[5], r[6]) for r in rows]  # noqa: E731
    assert keep(_losses(tmp_path / "part")) == keep(_losses(tmp_path / "whole"))
    assert again.summary["final_train_loss"] == whole.summary["final_train_loss"]


def test_grid_extension_and_update_mid_run(tmp_path: Path) -> None:
    result = fit(model="kan", optimizer="adam", steps=6, grid_extend=[[2, 10]],
                 grid_update_steps=[4], out=tmp_path / "run", **TINY)
    assert result.summary["status"] == "finished"
    assert result.field.net.grid_size == 10
    assert result.summary["grid_size"] == 10
    losses = [r["train_loss"] for r in result.history]
    assert all(math.isfinite(v) for v in losses)
    # Extension by an integer factor preserves the function: the loss at the first
    # step after it continues the descent instead of jumping.
    assert losses[2] < losses[0]
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["grid_size"] in (5, 10)
