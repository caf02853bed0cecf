"""``python -m kanode.fit``: files of a run, rerun from config.toml, bad input, divergence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kanode.runs import METRIC_COLUMNS, load_checkpoint, read_metrics

FAST = ["--train-fraction", "0.1", "--rtol", "1e-5", "--atol", "1e-7", "--eval-every", "2",
        "--quiet"]
SUMMARY_KEYS = {"status", "final_train_loss", "best_train_loss", "final_val_loss",
                "final_extrap_loss", "n_params", "steps", "wall_time_s", "time_per_step_s",
                "nfe_per_step"}


def run_fit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kanode.fit", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "run"
    proc = run_fit("--steps", "3", "--lbfgs-steps", "2", "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and "extrapolation MSE" in proc.stdout
    return out


def test_run_directory_has_every_file(small_run: Path) -> None:
    for name in ("config.toml", "metrics.csv", "summary.json", "checkpoints/last.pt",
                 "checkpoints/best.pt", "plots/loss_curves.png", "plots/trajectory_fit.png",
                 "plots/phase_portrait.png", "plots/vector_field.png"):
        assert (small_run / name).is_file(), name
    header = (small_run / "metrics.csv").read_text().splitlines()[0]
    assert header.split(",") == list(METRIC_COLUMNS)
    rows = read_metrics(small_run / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["phase"] for r in rows] == ["adam"] * 3 + ["lbfgs"] * 2
    assert rows[0]["val_loss"] is None and rows[1]["val_loss"] is not None
    summary = json.loads((small_run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["status"] == "finished" and summary["steps"] == 5
    assert summary["n_params"] == 2 * 10 * (5 + 3 + 2) + 10 * 2 * (5 + 3 + 2)
    last = load_checkpoint(small_run / "checkpoints/last.pt")
    assert last["step"] == 5 and "optimizer" in last and "generator" in last
    best = load_checkpoint(small_run / "checkpoints/best.pt")
    assert best["train_loss"] == pytest.approx(min(r["train_loss"] for r in rows))


def test_config_toml_reruns_the_same_fit(small_run: Path, tmp_path: Path) -> None:
    proc = run_fit("--config", str(small_run / "config.toml"), "--out", str(tmp_path / "again"),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    first = [r["train_loss"] for r in read_metrics(small_run / "metrics.csv")]
    again = [r["train_loss"] for r in read_metrics(tmp_path / "again" / "metrics.csv")]
    assert again == first


def _write_bad_csv(path: Path) -> Path:
    path.write_text("traj,t,x,y\n0,0.0,1.0,1.0\n0,0.1,abc,1.0\n")
    return path


@pytest.mark.parametrize("case", ["unknown-system", "bad-option", "bad-data", "missing-data",
                                  "unreadable-config", "unknown-key", "missing-resume",
                                  "bad-widths"])
def test_bad_input_exits_2_with_one_line(case: str, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    args = {
        "unknown-system": ["--system", "lorenz63"],
        "bad-option": ["--optimizer", "sgd"],
        "bad-data": ["--data", str(_write_bad_csv(tmp_path / "bad.csv"))],
        "missing-data": ["--data", str(tmp_path / "nope.npz")],
        "unreadable-config": ["--config", str(config)],
        "unknown-key": ["--config", str(config)],
        "missing-resume": ["--resume", str(tmp_path / "no-run")],
        "bad-widths": ["--widths", "3", "10", "2"],
    }[case]
    if case == "unreadable-config":
        config.write_text("steps = = 3\n")
    if case == "unknown-key":
        config.write_text("stepz = 3\n")
    proc = run_fit(*args, "--out", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kanode: error: "), proc.stderr
    expected = {"unknown-system": "lorenz63", "bad-option": "sgd", "bad-data": "bad.csv",
                "missing-data": "does not exist", "unreadable-config": "c.toml",
                "unknown-key": "stepz", "missing-resume": "does not exist",
                "bad-widths": "widths"}[case]
    assert expected in lines[0]


def test_divergence_exits_3_and_keeps_a_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_fit("--optimizer", "adam", "--steps", "30", "--lr", "1e4", "--lr-schedule", "none",
                   "--max-num-steps", "500", "--out", str(out), *FAST)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "diverged" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["reason"]
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_fit_reads_a_users_data_file(tmp_path: Path) -> None:
    import systems

    traj = systems.simulate(systems.get("fitzhugh_nagumo"), y0=np.array([[1.0, 1.0], [0.5, 0.0]]))
    path = tmp_path / "mine.csv"
    traj.save(path)
    proc = run_fit("--data", str(path), "--n-test-traj", "0", "--steps", "2", "--lbfgs-steps", "0",
                   "--optimizer", "adam", "--out", str(tmp_path / "run"), *FAST)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["system"] == "mine" and summary["final_val_loss"] is None
