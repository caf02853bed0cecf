"""``python -m kanode.analysis`` validates its options and files before any work
(issue 24, finding 5): each bad input exits 2 with one ``kanode: error:`` line,
and the output directory is not even created.

The runs here are made by hand (``config.toml`` + ``metrics.csv``, no
checkpoint): every refusal must come before a checkpoint is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kanode.analysis import cli
from kanode.analysis import settings as settings_mod
from kanode.analysis.settings import HessianSettings, hessian_memory_bytes
from kanode.config import FitConfig, dump_config
from kanode.runs import METRIC_COLUMNS


def make_run(path: Path, **fields) -> Path:
    """A run directory with only its config and an empty metrics.csv."""
    path.mkdir(parents=True)
    (path / "config.toml").write_text(dump_config(FitConfig(**fields)))
    (path / "metrics.csv").write_text(",".join(METRIC_COLUMNS) + "\n")
    return path


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run", widths=[2, 3, 2], grid_size=3)


def refused(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kanode: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("options, message", [
    (["--chunk", "0"], "--chunk must be in [1, 5000], got 0"),
    (["--k", "0"], "--k must be in [1, 1000], got 0"),
    (["--method", "lanczos", "--k", "5000"], "--k must be in [1, 1000], got 5000"),
    (["--probes", "0"], "--probes must be in [1, 100000], got 0"),
    (["--slq-steps", "0"], "--slq-steps must be in [1, 10000], got 0"),
    (["--slq-probes=-1"], "--slq-probes must be in [0, 10000], got -1"),
    (["--threads=-1"], "--threads must be in [0, 1024], got -1"),
    (["--threads", "1000000000"], "--threads must be in [0, 1024], got 1000000000"),
])
def test_hessian_options_are_refused_before_any_work(run, tmp_path, capsys, options, message):
    out = tmp_path / "out"
    err = refused(capsys, ["hessian", str(run), "--out", str(out), *options])
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize("command, options, message", [
    ("cost", ["--sizes", "0"], "--sizes must be in [1, 1024], got 0"),
    ("cost", ["--grids", "2", "100000"], "--grids must be in [1, 1000], got 100000"),
    ("cost", ["--spline-order", "0"], "--spline-order must be in [1, 7], got 0"),
    ("memory", ["--hidden", "0"], "--hidden must be in [1, 10000], got 0"),
    ("memory", ["--n-traj", "0"], "--n-traj must be in [1, 10000], got 0"),
    ("memory", ["--systems", "nope"], "unknown system 'nope'"),
    ("memory", ["--device", "gpu"], "--device must be 'cpu', 'cuda' or 'cuda:N'"),
])
def test_cost_and_memory_options_are_refused(tmp_path, capsys, command, options, message):
    out = tmp_path / "out"
    assert message in refused(capsys, [command, "--out", str(out), *options])
    assert not out.exists()


def test_out_that_is_a_file_or_inside_a_run(run, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file, not a directory" in refused(capsys, ["hessian", str(run), "--out", str(a_file)])
    inside = run / "hessian"
    err = refused(capsys, ["hessian", str(run), "--out", str(inside)])
    assert f"is inside the run directory {run}" in err and not inside.exists()
    assert "holds a run" in refused(capsys, ["cost", "--out", str(run)])


@pytest.mark.parametrize("text, message", [
    ("garbage", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"n_params": "abc"}', "n_params"),
    ("[" * 100_000, "nested too deeply"),
])
def test_damaged_summary_json_is_one_line(run, tmp_path, capsys, text, message):
    (run / "summary.json").write_text(text)
    err = refused(capsys, ["hessian", str(run), "--out", str(tmp_path / "out")])
    assert "summary.json" in err and message in err


ROW = {"run": "run", "n_params": 96, "method": "exact", "lambda_max": 2.0, "lambda_min": -1.0,
       "trace": 1.5, "time_s": 0.1}


@pytest.mark.parametrize("row, npz, message", [
    ("garbage", True, "row.json is not valid JSON"),
    ("[]", True, "must hold a JSON object, not list"),
    (json.dumps({k: v for k, v in ROW.items() if k != "lambda_max"}), True, "lambda_max = missing"),
    (json.dumps({**ROW, "n_params": True}), True, "n_params = true"),
    (json.dumps({**ROW, "trace": "x"}), True, 'trace = "x"'),
    (json.dumps(ROW), False, "hessian.npz is missing"),
    (json.dumps(ROW), "garbage", "hessian.npz cannot be read"),
    (json.dumps(ROW), np.zeros((2, 2)), "not a non-empty float vector"),
])
def test_resume_with_damaged_files_is_one_line(run, tmp_path, capsys, row, npz, message):
    out = tmp_path / "out"
    (out / "run").mkdir(parents=True)
    (out / "run" / "row.json").write_text(row)
    if isinstance(npz, np.ndarray) or npz is True:
        np.savez(out / "run" / "hessian.npz", eigenvalues=npz if isinstance(npz, np.ndarray) else np.ones(3))
    elif npz == "garbage":
        (out / "run" / "hessian.npz").write_text("garbage")
    err = refused(capsys, ["hessian", str(run), "--out", str(out), "--resume"])
    assert message in err and "delete it" in err


def test_hessian_memory_bytes_closed_form():
    n = 840_000
    lanczos = HessianSettings(method="lanczos", k=20, probes=200)
    assert hessian_memory_bytes(n, lanczos) == 8 * (41 * n + 200 * n)
    exact = HessianSettings(method="exact", chunk=256)
    assert hessian_memory_bytes(4000, exact) == 8 * (3 * 4000**2 + 2 * 256 * 4000)
    slq = HessianSettings(method="lanczos", k=5, probes=10, slq_probes=3, slq_steps=50)
    assert hessian_memory_bytes(1000, slq) == 8 * (20 * 1000 + 20 * 1000 + 50 * 1000)


def test_a_model_too_large_for_lanczos_is_refused_up_front(tmp_path, capsys, monkeypatch):
    """The issue's 840,000-parameter model, with 1 GiB available: refused before any
    checkpoint is read (the hand-made run has none), naming the need and the hint."""
    big = make_run(tmp_path / "big", widths=[2, 1000, 2], grid_size=205)  # 2·2·1000·210 = 840,000
    monkeypatch.setattr(settings_mod, "available_memory_bytes", lambda: 2**30)
    out = tmp_path / "out"
    err = refused(capsys, ["hessian", str(big), "--method", "lanczos", "--out", str(out)])
    assert "840000 parameters needs at least 1.5 GiB" in err and "lower --k, --probes" in err
    err = refused(capsys, ["hessian", str(big), "--out", str(out)])
    assert "840000 parameters, too many for the exact Hessian" in err
