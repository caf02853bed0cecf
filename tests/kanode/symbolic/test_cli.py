"""``python -m kanode.symbolic``: the whole recipe on a tiny case, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy

from kanode.config import FitConfig, dump_config
from kanode.exit_codes import EXIT_REJECTED
from kanode.symbolic.export import terms

# the KAN recipe (--start kan), few steps: exercises every stage; the polish finds the law from this poor KAN on the canonical
# window (t <= 3.4, 35 points). On a window of 14 points (--train-fraction 0.1) no version of the
# polish did: the short arc is fitted as well by other quadratics.
TINY = ["--start", "kan", "--hidden", "3", "--sparse-steps", "10", "--sparse-lbfgs-steps", "5",
        "--retrain-steps", "3", "--retrain-lbfgs-steps", "3", "--finetune-steps", "3",
        "--finetune-lbfgs-steps", "5", "--polish-rounds", "1"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kanode.symbolic", *args], capture_output=True, text=True,
                          timeout=900)


def coefficients(rhs: dict[str, str]) -> dict[str, dict[str, float]]:
    symbols = {n: sympy.Symbol(n) for n in rhs}
    return {name: {str(f): c for c, f in terms(sympy.sympify(text, locals=symbols))} for name, text in rhs.items()}


@pytest.mark.slow
def test_whole_recipe_recovers_lotka_volterra(tmp_path: Path) -> None:
    """Noise-free ẋ = 1.5x − xy, ẏ = xy − 3y from (1, 1): the exact terms and coefficients, the
    fitted initial state (1, 1), and both trajectory errors reported."""
    out = tmp_path / "lv"
    proc = run("--system", "lotka_volterra", "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr
    for stage in ("sparsify", "prune", "retrain", "symbolify", "fine-tune", "export", "polish", "evaluate"):
        assert f"[kanode.symbolic] {stage}:" in proc.stdout, stage
    for name in ("formula.json", "formula.tex", "formula.py", "summary.json", "edges.png", "network.png"):
        assert (out / name).is_file(), name
    formula = json.loads((out / "formula.json").read_text())
    assert formula["state_names"] == ["x", "y"]
    assert coefficients(formula["rhs"]) == {"x": {"x": 1.5, "x*y": -1.0}, "y": {"y": -3.0, "x*y": 1.0}}
    assert formula["status"] == "finished" and formula["initial_states"]["t0"] == 0.0
    np.testing.assert_allclose(formula["initial_states"]["states"], [[1.0, 1.0]], atol=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["verdict"]["accepted"]
    assert summary["formula_mse_train"] < 1e-8 < summary["kan_mse_train"]
    assert summary["formula_mse_full"] < 1e-6     # 4-digit constants, 141 points from t = 0 to 14
    assert summary["terms_from"] in ("export", "polish-threshold", "polish-selection")
    path = summary["selection"]["path"]
    assert path[summary["selection"]["chosen"]]["n_terms"] == 4
    assert summary["widths"]["before"] == [2, 3, 2]
    assert summary["edges"] and {"function", "r2", "complexity"} <= set(summary["edges"][0])
    assert f"trajectory MSE: formula {summary['formula_mse_train']:.4g}, KAN" in proc.stdout
    # formula.py is a working module: the law's field at (2, 0.5)
    namespace: dict = {}
    exec((out / "formula.py").read_text(), namespace)  # noqa: S102
    np.testing.assert_allclose(namespace["rhs"](0.0, np.array([2.0, 0.5])), [2.0, -0.5], rtol=1e-12)


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
    pairs = list(zip(TINY[::2], TINY[1::2]))  # the recipe's flags; the run fixes data, widths, first stage
    flags = [x for flag, value in pairs if flag not in ("--hidden", "--sparse-steps", "--sparse-lbfgs-steps")
             for x in (flag, value)]
    proc = run(str(run_dir), "--out", str(out), *flags)
    assert proc.returncode in (0, 4), proc.stderr   # 4: the formula was rejected, with its files written
    assert "[kanode.symbolic] load: KAN [2, 3, 2] from the run" in proc.stdout
    assert "[kanode.symbolic] sparsify:" not in proc.stdout
    assert "1 training trajectories of 14 points" in proc.stdout  # the run's own window (train_fraction 0.1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == ("finished" if proc.returncode == 0 else "rejected")
    assert summary["widths"]["before"] == [2, 3, 2]
    for name in ("formula.json", "formula.tex", "formula.py", "edges.png", "network.png"):
        assert (out / name).is_file(), name
    symbols = set(sympy.symbols("x y"))
    for text in json.loads((out / "formula.json").read_text())["rhs"].values():
        assert sympy.sympify(text).free_symbols <= symbols


def test_a_single_trajectory_file_is_trained_on_whole(tmp_path: Path) -> None:
    """``--data FILE`` with no split flags: one trajectory is fine, all its points are trained on
    (before, the default n_test_traj = 1 refused the file and train_fraction 0.25 kept 4 of 16 points)."""
    data = tmp_path / "pelts.csv"
    rows = ["traj,t,hare,lynx"] + [f"0,{1900 + k},{30 + 5 * k},{4 + 3 * k}" for k in range(16)]
    data.write_text("\n".join(rows) + "\n")
    proc = run("--data", str(data), "--out", str(tmp_path / "out"), *TINY,
               "--edge-threshold", "0.99", "--node-threshold", "0.99")   # stop after the first stage
    assert "Traceback" not in proc.stderr
    assert "1 training trajectories of 16 points (0 more extrapolated), 0 held out" in proc.stdout
    assert proc.returncode == 1 and "nothing is above the pruning thresholds" in proc.stderr


@pytest.mark.slow
def test_a_formula_that_blows_up_is_rejected(tmp_path: Path) -> None:
    """No polish on a 14-point window: the exported quadratic's trajectories blow up. The files are
    written, but the run is not 'finished': one line, status 'rejected' with the reason, exit 4."""
    out = tmp_path / "bad"
    proc = run("--system", "lotka_volterra", "--train-fraction", "0.1", "--out", str(out), *TINY,
               "--polish-rounds", "0")
    assert proc.returncode == EXIT_REJECTED, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("kanode: error: the formula's trajectories are not finite")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "rejected" and not summary["verdict"]["accepted"]
    assert summary["reason"] in proc.stderr and summary["formula_mse_train"] is None
    assert 0 < summary["kan_mse_train"] < 1 and summary["terms_from"] == "export"
    formula = json.loads((out / "formula.json").read_text())
    assert formula["status"] == "rejected" and len(formula["initial_states"]["states"]) == 1
