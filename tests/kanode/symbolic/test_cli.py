"""``python -m kanode.symbolic``: the whole recipe on a tiny case, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import sympy

from kanode.config import FitConfig, dump_config

# a short window and few steps: exercises every stage, not the accuracy
TINY = ["--train-fraction", "0.1", "--hidden", "3", "--sparse-steps", "10", "--sparse-lbfgs-steps", "5",
        "--retrain-steps", "3", "--retrain-lbfgs-steps", "3", "--finetune-steps", "3",
        "--finetune-lbfgs-steps", "5", "--polish-rounds", "1"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kanode.symbolic", *args], capture_output=True, text=True,
                          timeout=900)


def test_whole_recipe_writes_every_file(tmp_path: Path) -> None:
    out = tmp_path / "lv"
    proc = run("--system", "lotka_volterra", "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr
    for stage in ("sparsify", "prune", "retrain", "symbolify", "fine-tune", "export", "polish", "evaluate"):
        assert f"[kanode.symbolic] {stage}:" in proc.stdout, stage
    for name in ("formula.json", "formula.tex", "formula.py", "summary.json", "edges.png", "network.png"):
        assert (out / name).is_file(), name
    formula = json.loads((out / "formula.json").read_text())
    assert formula["state_names"] == ["x", "y"]
    symbols = set(sympy.symbols("x y"))
    for text in formula["rhs"].values():
        assert sympy.sympify(text).free_symbols <= symbols
    summary = json.loads((out / "summary.json").read_text())
    assert summary["widths"]["before"] == [2, 3, 2]
    assert len(summary["widths"]["after"]) == 3 and summary["widths"]["after"][1] <= 3
    assert {"sparsify", "prune", "symbolify", "fine-tune", "export"} <= set(summary["times_s"])
    assert summary["edges"] and {"function", "r2", "complexity"} <= set(summary["edges"][0])
    assert summary["formula_mse_train"] is None or summary["formula_mse_train"] >= 0
    # formula.py is a working module
    namespace: dict = {}
    exec((out / "formula.py").read_text(), namespace)  # noqa: S102
    assert np.isfinite(namespace["rhs"](0.0, np.ones((4, 2)))).all()


def test_mlp_run_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "mlp-run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(dump_config(FitConfig(model="mlp")))
    proc = run(str(run_dir))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "kanode: error: symbolic regression needs a KAN run"


def test_missing_run_dir_is_one_line(tmp_path: Path) -> None:
    proc = run(str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kanode: error:")
    assert "does not exist" in proc.stderr


def test_nothing_above_threshold_keeps_partial_results(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    proc = run("--out", str(out), *TINY, "--edge-threshold", "0.99", "--node-threshold", "0.99")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "nothing is above the pruning thresholds" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "sparsify" in summary["times_s"]


def test_recipe_from_an_existing_kan_run(tmp_path: Path) -> None:
    """``python -m kanode.symbolic RUN_DIR``: starts from the run's trained KAN (no sparse training
    stage), with the run's data, and writes the same files."""
    from kanode.fit import fit

    run_dir = tmp_path / "kan-run"
    fit(FitConfig(widths=[2, 3, 2], steps=10, lbfgs_steps=5, train_fraction=0.1, plots=False), out=run_dir)
    out = tmp_path / "sym"
    pairs = list(zip(TINY[::2], TINY[1::2]))  # the recipe's flags; the run fixes data and widths
    flags = [x for flag, value in pairs if flag not in ("--train-fraction", "--hidden") for x in (flag, value)]
    proc = run(str(run_dir), "--out", str(out), *flags)
    assert proc.returncode == 0, proc.stderr
    assert "[kanode.symbolic] load: KAN [2, 3, 2] from the run" in proc.stdout
    assert "[kanode.symbolic] sparsify:" not in proc.stdout
    assert "14 training points" in proc.stdout  # the run's own window (train_fraction 0.1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["widths"]["before"] == [2, 3, 2]
    for name in ("formula.json", "formula.tex", "formula.py", "edges.png", "network.png"):
        assert (out / name).is_file(), name
    symbols = set(sympy.symbols("x y"))
    for text in json.loads((out / "formula.json").read_text())["rhs"].values():
        assert sympy.sympify(text).free_symbols <= symbols
