"""experiments/study_compare.py and experiments/newton_polish.py: the study's two reading tools."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))

import newton_polish  # noqa: E402
import study_compare  # noqa: E402

FIELDS = ["system", "budget", "kan_params", "mlp_params", "kan_lr", "mlp_lr", "seeds"]


def _results(folder: Path, kan: tuple[float, float, float], mlp: tuple[float, float, float], wins: int,
             p: float, slope: float) -> Path:
    """A results folder with one verdict row (Lotka–Volterra, large; the same (median, min, max)
    for every loss), slopes and one reference cell (the KAN's numbers)."""
    folder.mkdir()
    row = {"system": "lotka_volterra", "budget": "large", "kan_params": 480, "mlp_params": 482,
           "kan_lr": 0.003, "mlp_lr": 0.01, "seeds": 5}
    for loss in ("train", "test", "extrap"):
        for family, values in (("kan", kan), ("mlp", mlp)):
            row.update(dict(zip((f"{family}_{loss}_median", f"{family}_{loss}_min", f"{family}_{loss}_max"),
                                values)))
        row.update({f"kan_wins_{loss}": wins, f"p_{loss}": p})
    with (folder / "verdict.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    (folder / "slopes.json").write_text(json.dumps({"kan": {"slope": slope, "stderr": 0.1, "points": 6}}))
    (folder / "lv_references.json").write_text(json.dumps(
        {"reference": {"kan_h6": {"median": kan[0], "min": kan[1], "max": kan[2], "steps": 7000}}}))
    return folder


def test_compare_puts_each_runs_numbers_in_its_own_columns(tmp_path: Path) -> None:
    before = _results(tmp_path / "before", (2.7e-6, 1.2e-6, 9.0e-6), (3.2e-5, 2.1e-5, 8.8e-5), 5, 0.0079, -0.86)
    after = _results(tmp_path / "after", (1.2e-6, 7.9e-7, 2.2e-6), (3.7e-6, 3.1e-6, 7.6e-6), 4, 0.031, 0.07)
    text = study_compare.compare(before, after, ("fixed", "plateau"))
    rows = [line for line in text.splitlines() if line.startswith("| Lotka–Volterra")]
    assert len(rows) == 3                                                # train, test, extrapolation
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells == ["Lotka–Volterra", "480 / 482", "2.7e-06 [1e-06, 9e-06]", "3.2e-05 [2e-05, 9e-05]",
                     "5/5, 0.0079", "1.2e-06 [8e-07, 2e-06]", "3.7e-06 [3e-06, 8e-06]", "4/5, 0.031"]
    assert "| kan | -0.86 ± 0.10 (6 sizes) | 0.07 ± 0.10 (6 sizes) |" in text
    assert "| kan_h6 | 2.70e-06 [1.2e-06, 9.0e-06], 7000 steps | 1.20e-06 [7.9e-07, 2.2e-06], 7000 steps |" in text
    assert "Lotka–Volterra large 0.003 / 0.01 → 0.003 / 0.01" in text


def test_compare_refuses_a_folder_without_a_verdict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    after = _results(tmp_path / "after", (1e-6, 1e-6, 1e-6), (1e-5, 1e-5, 1e-5), 5, 0.008, 0.0)
    with pytest.raises(SystemExit) as exc:
        study_compare.main([str(tmp_path), str(after)])
    assert exc.value.code == 2
    assert "has no verdict.csv" in capsys.readouterr().err


def test_newton_steps_lower_the_loss_of_an_unconverged_run(tmp_path: Path) -> None:
    from kanode.analysis.objective import load_objective
    from kanode.fit import main as fit_main

    run = tmp_path / "run"
    assert fit_main(["--system", "lotka_volterra", "--model", "kan", "--widths", "2", "2", "2", "--grid-size", "3",
                     "--optimizer", "adam", "--steps", "20", "--lbfgs-steps", "0", "--method", "rk4",
                     "--out", str(run), "--quiet", "--no-plots"]) == 0
    rows = newton_polish.newton_polish(run, iters=2)
    losses = [r["loss"] for r in rows]
    f, theta = load_objective(run)
    assert losses[0] == pytest.approx(float(f(theta)), rel=1e-12)       # it starts at the run's own loss
    assert losses[2] < losses[1] < losses[0]                             # 20 Adam steps: far from a minimum,
    assert all(r["accepted"] for r in rows[1:])                          # every damped step goes downhill
