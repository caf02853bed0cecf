"""Ensembles are crash-safe like single runs (issue 24, findings 1 and 2), and a member that
diverges is frozen without touching the others, also across a resume (finding 7).

A kill is simulated in-process by an exception that no code of kanode catches, raised
from a checkpoint write (the directory is then what a SIGKILL at that moment leaves,
less the temporary file, which a resume removes); one test kills a real process.
``experiments/kill_resume_trials.py`` kills real processes at random moments.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import kanode.runs
from kanode.config import FitConfig
from kanode.fitting import fit_ensemble
from kanode.fit import main
from kanode.runs import load_checkpoint, read_metrics

SMALL = dict(model="kan", method="rk4", train_fraction=0.1, widths=[2, 5, 2], grid_size=5, n_test_traj=1,
             eval_every=2, plots=False)
# random windows (generator states), a grid extension, Adam then L-BFGS, a checkpoint per step
CRASHY = dict(optimizer="adam+lbfgs", steps=6, lbfgs_steps=3, batch_time=5, batch_size=4,
              grid_extend=[[3, 8]], checkpoint_every=1, **SMALL)
N_MEMBERS = 3


def configs(**settings: Any) -> list[FitConfig]:
    return [FitConfig(seed=m, lr=(1e-2, 2e-2, 3e-2)[m], **{**CRASHY, **settings}) for m in range(N_MEMBERS)]


def dirs(root: Path) -> list[Path]:
    return [root / f"seed-{m}" for m in range(N_MEMBERS)]


def tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A checkpoint flattened to {path: value}, without its wall time."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() if key != "wall_time"
                for k, v in tensors(value, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in tensors(value, f"{prefix}/{i}").items()}
    return {prefix: obj}


def same_bits(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        bits = lambda t: t.reshape(-1).contiguous().view(torch.uint8)  # noqa: E731
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(
            bits(a), bits(b))
    return a == b


def assert_identical(got: Path, want: Path, members: Sequence[int] = range(N_MEMBERS)) -> None:
    """Members' metrics (but wall times), summaries (but times) and checkpoints (bitwise) equal."""
    for m in members:
        g, w = got / f"seed-{m}", want / f"seed-{m}"
        rows = [[{k: v for k, v in r.items() if k != "wall_time"} for r in read_metrics(d / "metrics.csv")]
                for d in (g, w)]
        assert rows[0] == rows[1], m
        summaries = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items()
                      if k not in ("wall_time_s", "time_per_step_s")} for d in (g, w)]
        assert summaries[0] == summaries[1], m
        for name in ("last.pt", "best.pt"):
            a, b = (tensors(load_checkpoint(d / "checkpoints" / name)) for d in (g, w))
            assert a.keys() == b.keys(), (m, name)
            bad = [k for k in a if not same_bits(a[k], b[k])]
            assert not bad, (m, name, bad)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        results = fit_ensemble(configs(), dirs(root), parent=root)
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_num_threads(old_threads)
    assert [r.summary["status"] for r in results] == ["finished"] * N_MEMBERS
    return root


class Killed(BaseException):
    """Stands for SIGKILL: nothing in kanode catches it."""


def kill_at_save(monkeypatch: pytest.MonkeyPatch, member: int, step: int, inside: bool) -> None:
    """Die when ``member``'s checkpoint of ``step`` is written: before it starts, or ``inside``
    it (``previous.pt`` already moved, ``last.pt`` not yet replaced)."""
    save_last = kanode.runs.RunDir.save_last

    def dying_save_last(run: kanode.runs.RunDir, state: dict, keep_previous: bool = False) -> None:
        if run.path.name == f"seed-{member}" and state["step"] == step:
            if not inside:
                raise Killed
            monkeypatch.setattr(kanode.runs, "atomic_torch_save", dying_atomic_save)
        save_last(run, state, keep_previous)

    def dying_atomic_save(obj: Any, path: Path) -> None:
        raise Killed

    monkeypatch.setattr(kanode.runs.RunDir, "save_last", dying_save_last)


@pytest.mark.parametrize(("member", "step", "inside"), [
    (1, 0, False),   # during the initial checkpoints: member 1 has none, it restarts
    (1, 4, False),   # between members: member 0 is at step 4, members 1 and 2 at step 3
    (2, 7, True),    # inside member 2's write in the L-BFGS phase (its previous.pt already moved)
    (0, 3, False),   # at the grid extension's step
], ids=["no-checkpoint-yet", "between-members", "inside-a-write", "grid-extension"])
def test_a_killed_ensemble_resumes_as_a_whole(uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              member: int, step: int, inside: bool) -> None:
    root = tmp_path / "E"
    kill_at_save(monkeypatch, member, step, inside)
    with pytest.raises(Killed):
        fit_ensemble(configs(), dirs(root), parent=root)
    monkeypatch.undo()
    assert (root / "ensemble.json").is_file()  # written before the first step
    steps = [load_checkpoint(d / "checkpoints" / "last.pt")["step"] if (d / "checkpoints" / "last.pt").exists()
             else None for d in dirs(root)]
    # members before the one killed saved this step; it (its last.pt untouched) and the rest did not
    assert steps == [step] * member + ([None] if step == 0 else [step - 1]) * (N_MEMBERS - member), steps
    code = main(["--resume", str(root), "--quiet"])
    assert code == 0
    assert_identical(root, uninterrupted)
    assert json.loads((root / "ensemble.json").read_text()) == json.loads(
        (uninterrupted / "ensemble.json").read_text())


def test_members_further_apart_than_one_checkpoint_are_refused_in_one_line(
        uninterrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "E"
    shutil.copytree(uninterrupted, root)
    for d in dirs(root):
        (d / "summary.json").unlink()
    partial = tmp_path / "partial"
    fit_ensemble(configs(), dirs(partial), stop_at=2)
    shutil.rmtree(root / "seed-1")
    shutil.copytree(partial / "seed-1", root / "seed-1")  # at step 2; the others at 9 (previous.pt 8)
    code = main(["--resume", str(root), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot resume as one ensemble" in err, err
    assert "--resume MEMBER_DIR" in err


FAST_CLI = ["--widths", "2", "5", "2", "--train-fraction", "0.1", "--method", "rk4", "--steps", "40",
            "--lbfgs-steps", "0", "--optimizer", "adam", "--checkpoint-every", "1", "--eval-every", "5",
            "--threads", "1", "--no-plots", "--quiet"]


@pytest.mark.slow  # three processes (about 20 s on an idle machine)
def test_a_sigkilled_ensemble_process_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """Finding 1 as reported, with a real process: kill -9 mid-run, then ``--resume E``."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    command = [sys.executable, "-m", "kanode.fit", "--seeds", "0-1", *FAST_CLI]
    proc = subprocess.Popen([*command, "--out", str(killed)], stderr=subprocess.PIPE)
    metrics = killed / "seed-1" / "metrics.csv"
    while proc.poll() is None:  # until a few steps are on disk
        if metrics.exists() and metrics.read_text().count("\n") >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = [len(read_metrics(killed / f"seed-{m}" / "metrics.csv")) for m in (0, 1)]
    assert 5 <= max(rows) < 40, rows  # killed mid-run
    assert not (killed / "seed-0" / "summary.json").exists()
    again = subprocess.run([*command, "--out", str(killed)], capture_output=True, text=True, check=False)
    assert again.returncode == 2 and f"--resume {killed}" in again.stderr, again.stderr  # says what to do
    resumed = subprocess.run([sys.executable, "-m", "kanode.fit", "--resume", str(killed), "--quiet"],
                             capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    done = subprocess.run([*command, "--out", str(whole)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    for m in (0, 1):
        got, want = (read_metrics(d / f"seed-{m}" / "metrics.csv") for d in (killed, whole))
        assert len(got) == 40
        assert [{k: v for k, v in r.items() if k != "wall_time"} for r in got] == [
            {k: v for k, v in r.items() if k != "wall_time"} for r in want]


# ---------------------------------------------------------------------- divergence
def blow_up_configs(member_lr: float, grid_extend: list[list[int]] | None = None) -> list[FitConfig]:
    """Adam only; member 1 at ``member_lr`` with a divergence factor of 10 (lr 1: its loss
    goes 0.87 → 1.1e3 at step 2, finite, above 10 × the first)."""
    settings = dict(optimizer="adam", steps=8, lbfgs_steps=0, batch_time=0, grid_extend=grid_extend or [],
                    checkpoint_every=3)
    cfgs = configs(**settings)
    cfgs[1] = cfgs[1].replace(lr=member_lr, divergence_factor=10.0)
    return cfgs


def test_a_finitely_blowing_up_member_is_frozen_and_the_others_are_bitwise_unchanged(tmp_path: Path) -> None:
    frozen_dir, healthy_dir = tmp_path / "frozen", tmp_path / "healthy"
    results = fit_ensemble(blow_up_configs(1.0), dirs(frozen_dir))
    healthy = fit_ensemble(blow_up_configs(1e-2), dirs(healthy_dir))
    assert [r.summary["status"] for r in results] == ["finished", "diverged", "finished"]
    assert [r.summary["status"] for r in healthy] == ["finished"] * 3
    reason = results[1].summary["reason"]
    assert reason.startswith("step 2: training loss ") and "above 10 × the first training loss" in reason
    assert len(results[1].history) == 1 and results[1].summary["steps"] == 1
    for m in (0, 2):
        assert_identical(frozen_dir, healthy_dir, members=[m])
    # a resume keeps the member frozen and its record as written; the others were finished
    before = (frozen_dir / "seed-1" / "summary.json").read_text()
    again = fit_ensemble(resume=dirs(frozen_dir))
    assert [r.summary["status"] for r in again] == ["finished", "diverged", "finished"]
    assert (frozen_dir / "seed-1" / "summary.json").read_text() == before
    assert len(read_metrics(frozen_dir / "seed-1" / "metrics.csv")) == 1


@pytest.mark.parametrize("grid_extend", [[], [[4, 10]]], ids=["same-grid", "others-extend-their-grid"])
def test_a_member_that_diverged_before_a_kill_stays_frozen_on_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grid_extend: list[list[int]]) -> None:
    whole, root = tmp_path / "whole", tmp_path / "E"
    fit_ensemble(blow_up_configs(1.0, grid_extend), dirs(whole), parent=whole)
    kill_at_save(monkeypatch, 2, 6, inside=False)  # after member 1 diverged at step 2
    with pytest.raises(Killed):
        fit_ensemble(blow_up_configs(1.0, grid_extend), dirs(root), parent=root)
    monkeypatch.undo()
    assert json.loads((root / "seed-1" / "summary.json").read_text())["status"] == "diverged"  # at once
    assert main(["--resume", str(root), "--quiet"]) == 3  # some member diverged
    assert_identical(root, whole)
