"""Damaged run directories under ``--resume``: exit 2 and one line each; checksummed
checkpoints; earlier checkpoints still load; a run killed before its first checkpoint
restarts; orphaned temporary files are cleaned."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import kanode.report
import systems
from kanode.config import ConfigError, FitConfig
from kanode.fit import fit
from kanode.fit import main as fit_main
from kanode.runs import (CHECKPOINT_FORMAT, RunDir, atomic_torch_save, check_trainer_state,
                         load_checkpoint, read_metrics, read_summary)

CONFIG = FitConfig(optimizer="adam", steps=4, lbfgs_steps=0, train_fraction=0.1, eval_every=2,
                   checkpoint_every=2, plots=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tpl") / "run"
    assert fit(CONFIG, out=out).summary["status"] == "finished"
    return out


@pytest.fixture
def run(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(template, copy)
    return copy


def resume(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = fit_main(["--resume", str(run), "--quiet", *extra])
    return code, capsys.readouterr().err


def edit_state(run: Path, change: Callable[[dict[str, Any]], None]) -> None:
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    change(state)
    atomic_torch_save(state, run / "checkpoints" / "last.pt")


def write_last(data: bytes) -> Callable[[Path], None]:
    return lambda run: (run / "checkpoints" / "last.pt").write_bytes(data)


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def truncate(run: Path) -> None:
    path = run / "checkpoints" / "last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_in_payload(run: Path) -> None:
    path = run / "checkpoints" / "last.pt"
    data = bytearray(path.read_bytes())
    payload = torch.load(path, weights_only=True)["payload"].numpy().tobytes()
    at = bytes(data).index(payload[2000:2032]) + 7  # a byte of the state's own bytes
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def shape_mismatch(state: dict[str, Any]) -> None:
    name = next(k for k, v in state["model"].items() if v.ndim >= 2)
    state["model"][name] = torch.zeros(*state["model"][name].shape[:-1], 99, dtype=torch.float64)


def metrics_lines(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = run / "metrics.csv"
        path.write_text("".join(change(path.read_text().splitlines(keepends=True))))
    return apply


def non_numeric(lines: list[str]) -> list[str]:
    cells = lines[2].split(",")
    cells[2] = "abc"
    return lines[:2] + [",".join(cells)] + lines[3:]


def as_directory(run: Path) -> None:
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").mkdir()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (truncate, "is not a readable checkpoint (truncated or damaged"),
    "empty": (write_last(b""), "last.pt is empty"),
    "garbage": (write_last(b"\x80\x04not a checkpoint at all" * 20), "not a readable checkpoint"),
    "foreign list": (write_last(torch_bytes([1, 2, 3])), "holds a list, not a kanode checkpoint"),
    "foreign dict": (lambda run: atomic_torch_save({"weights": torch.zeros(2)},
                                                   run / "checkpoints" / "last.pt"),
                     "missing key(s) step, wall_time"),
    "foreign format": (write_last(torch_bytes({"format": "other-1", "sha256": "",
                                                  "payload": torch.zeros(1, dtype=torch.uint8)})),
                       "is not a kanode checkpoint (format 'other-1'"),
    "flipped byte": (flip_in_payload, "fails its checksum"),
    "missing keys": (lambda run: edit_state(run, lambda s: (s.pop("optimizer"),
                                                            s.pop("generator"))),
                     "missing key(s) optimizer, generator"),
    "rng dtype": (lambda run: edit_state(run, lambda s: s.update(
        generator=s["generator"].to(torch.float32))),
        "generator is a torch.float32 tensor of shape (5056,), not a uint8 RNG state"),
    "rng size": (lambda run: edit_state(run, lambda s: s.update(
        torch_rng=torch.zeros(10, dtype=torch.uint8))), "torch_rng is a torch.uint8 tensor of "
                                                        "shape (10,)"),
    "negative step": (lambda run: edit_state(run, lambda s: s.update(step=-5)),
                      "step = -5 is not a non-negative integer"),
    "unknown phase": (lambda run: edit_state(run, lambda s: s.update(phase="sgd")),
                      "phase = 'sgd' is not one of adam, lbfgs"),
    "step beyond the run": (lambda run: edit_state(run, lambda s: s.update(step=99)),
                            "is at step 99, beyond the run's 6 steps"),
    "other grid": (lambda run: edit_state(run, lambda s: s.update(grid_size=7)),
                   "has grid_size 7; the run's config allows [5]"),
    "other shapes": (lambda run: edit_state(run, lambda s: shape_mismatch(s)),
                     "does not fit the run's model and config (member state '"),
    "metrics missing": (lambda run: (run / "metrics.csv").unlink(), "metrics.csv does not exist"),
    "metrics empty": (lambda run: (run / "metrics.csv").write_text(""),
                      "metrics.csv is empty (no header)"),
    "metrics a directory": (as_directory, "metrics.csv is a directory"),
    "metrics not UTF-8": (lambda run: (run / "metrics.csv").write_bytes(b"step,\xff\n"),
                          "metrics.csv is not UTF-8 text"),
    "metrics non-numeric": (metrics_lines(non_numeric), "metrics.csv line 3: could not convert"),
    "metrics header": (metrics_lines(lambda ls: ["step,phase,loss\n"] + ls[1:]),
                       "has unknown column 'loss' in its header"),
    "metrics rows lost": (metrics_lines(lambda ls: ls[:3]),
                          "metrics.csv has 2 rows but the checkpoint is at step 4"),
    "metrics row gap": (metrics_lines(lambda ls: ls[:2] + ls[3:]),
                        "metrics.csv line 3 is step 3, expected 2"),
    "metrics extra field": (metrics_lines(lambda ls: [*ls[:2], ls[2].rstrip("\n") + ",9\n",
                                                      *ls[3:]]),
                            "line 3 has 12 fields, the header 11"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_run_directory_is_refused_with_one_line(
        run: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    damage, message = DAMAGE[case]
    damage(run)
    code, err = resume(run, capsys, "--steps", "6")
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("kanode: error: "), err
    assert message in err


def test_the_schema_check_accepts_what_the_trainer_saves(template: Path) -> None:
    state = load_checkpoint(template / "checkpoints" / "last.pt")
    assert check_trainer_state(state, "last.pt") is state and state["step"] == 4
    wrapped = torch.load(template / "checkpoints" / "last.pt", weights_only=True)
    assert wrapped["format"] == CHECKPOINT_FORMAT and len(wrapped["sha256"]) == 64
    assert wrapped["payload"].dtype == torch.uint8  # stored raw: no pickling of bytes


def test_no_flipped_byte_loads_a_different_state(template: Path, tmp_path: Path) -> None:
    original = (template / "checkpoints" / "best.pt").read_bytes()
    reference = load_checkpoint(template / "checkpoints" / "best.pt")
    path = tmp_path / "best.pt"
    refused = 0
    for at in range(0, len(original), max(1, len(original) // 97)):
        damaged = bytearray(original)
        damaged[at] ^= 0x01
        path.write_bytes(bytes(damaged))
        try:
            state = load_checkpoint(path)
        except ConfigError as exc:
            assert len(str(exc).splitlines()) == 1
            refused += 1
            continue
        # a flip in the container's padding changes nothing that is loaded
        assert state.keys() == reference.keys() and state["step"] == reference["step"]
        assert all(torch.equal(state["model"][k], v) for k, v in reference["model"].items())
    assert refused > 80  # most bytes are the checksummed payload


def test_a_checkpoint_of_the_previous_version_still_resumes(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    torch.save(state, run / "checkpoints" / "last.pt")  # a bare dict, as kanode wrote before
    code, err = resume(run, capsys, "--steps", "5")
    assert code == 0, err
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == [1, 2, 3, 4, 5]


def test_rows_written_after_the_checkpoint_are_dropped_and_temp_files_cleaned(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(rows) + rows[-1].replace("4,", "5,", 1))
    orphans = [run / "checkpoints" / ".last.pt.k1l2.tmp", run / ".metrics.csv.x9.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"partial")
    code, err = resume(run, capsys, "--steps", "6")
    assert code == 0, err
    assert not any(p.exists() for p in orphans)
    metrics = read_metrics(run / "metrics.csv")
    assert [r["step"] for r in metrics] == [1, 2, 3, 4, 5, 6]
    assert metrics[4]["train_loss"] != metrics[3]["train_loss"]  # step 5 was recomputed


def killed_during_first_save(path: Path, config: FitConfig) -> None:
    """What a run killed inside its first checkpoint write leaves behind."""
    RunDir(path).start(config)
    (path / "checkpoints" / ".last.pt.a1b2c3.tmp").write_bytes(b"PK\x03\x04 half a zip")


def test_a_run_killed_during_its_first_save_reruns_with_the_same_command(tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed_during_first_save(out, CONFIG)
    result = fit(CONFIG, out=out)
    assert result.summary["status"] == "finished" and result.summary["steps"] == 4
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3, 4]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    with pytest.raises(ConfigError, match="already holds a run"):  # now it has a checkpoint
        fit(CONFIG, out=out)


def test_a_run_killed_during_its_first_save_resumes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    killed_during_first_save(out, CONFIG)
    code, err = resume(out, capsys)
    assert code == 0, err
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3, 4]


def test_another_config_into_a_never_checkpointed_run_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed_during_first_save(out, CONFIG)
    with pytest.raises(ConfigError, match="already holds a run"):
        fit(CONFIG.replace(seed=1), out=out)


# ------------------------------------------------- a finished fit stays finished
def test_1d_data_skips_the_phase_portrait_with_one_warning_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = np.linspace(0.0, 2.0, 41)
    decay = np.exp(-np.outer([1.0, 0.5, 2.0], t))[..., None]  # (3, 41, 1): 1-dimensional
    data = systems.Trajectories(t, decay, None, {}, ("x",)).save(tmp_path / "one.csv")
    out = tmp_path / "run"
    # a [1, 3, 1] KAN (60 parameters) for the 123 observed values: no over-parameterisation warning
    code = fit_main(["--data", str(data), "--n-test-traj", "0", "--steps", "2", "--lbfgs-steps",
                     "0", "--optimizer", "adam", "--out", str(out), "--quiet", "--widths", "1", "3", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith("kanode: warning: skipped "), err
    assert (out / "plots" / "loss_curves.png").exists()
    assert read_summary(out / "summary.json")["status"] == "finished"


def _fail(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("cannot draw\nthis")


@pytest.mark.parametrize("broken, expected", [
    ("phase_portrait", "kanode: warning: skipped phase_portrait.png (RuntimeError: cannot draw "
                       "this); the run finished"),
    ("predict_trajectories", "kanode: warning: plots skipped (RuntimeError: cannot draw this)"),
])
def test_a_figure_that_fails_costs_one_warning_line_not_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        broken: str, expected: str) -> None:
    monkeypatch.setattr(kanode.report, broken, _fail)
    out = tmp_path / "run"
    code = fit_main(["--steps", "2", "--lbfgs-steps", "0", "--optimizer", "adam",
                     "--train-fraction", "0.1", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith(expected), err
    assert read_summary(out / "summary.json")["status"] == "finished"
