"""experiments/study.py --smoke: every stage of the KAN vs MLP study end to end (CI's copy of it).

The numbers of a 6-step smoke run mean nothing; what is checked is that the
study's bookkeeping is right: every fit has its row, the learning rate of each
cell is the one with the lowest median validation loss, the win counts and
p-values are those of the rows, and a rerun resumes (nothing is refitted).
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke run for the whole test session: under pytest-xdist the workers share the
    directory above their own temporary roots, and the first to take the lock runs it."""
    from filelock import FileLock  # torch's dependency

    root = tmp_path_factory.getbasetemp()
    shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root  # this session's, either way
    out, done = shared / "study-smoke", shared / "study-smoke.done"
    with FileLock(str(shared / "study-smoke.lock")):
        if not done.exists():
            cmd = [sys.executable, str(REPO / "experiments/study.py"), "--smoke", "--out", str(out),
                   "--results", str(out / "results")]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            assert proc.returncode == 0, proc.stderr[-2000:]
            done.write_text("")
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_every_fit_has_a_row(smoke: Path) -> None:
    rows = _rows(smoke / "results/runs.csv")
    main = [r for r in rows if r["stage"] == "main"]
    budget = [r for r in rows if r["stage"] == "budget"]
    assert len(main) == 2 * 4 * 2 * 2   # systems × (2 families × 2 budgets) × rates × seeds
    assert len(budget) == (2 + 2 + 1) * 2 * 2
    assert all(r["status"] == "finished" for r in rows)
    assert {r["family"] for r in budget} == {"kan", "mlp", "mlp2"}
    for r in main:  # matched budgets: KAN and MLP within 2 % of each other
        twin = next(x for x in main if x["system"] == r["system"] and x["budget"] == r["budget"]
                    and x["family"] != r["family"])
        assert abs(int(r["n_params"]) / int(twin["n_params"]) - 1) < 0.02
    assert all(math.isfinite(float(r["test_loss"])) and float(r["test_loss"]) > 0 for r in rows)


@pytest.mark.slow
def test_rates_are_chosen_on_validation_and_tests_recomputed(smoke: Path) -> None:
    from scipy.stats import mannwhitneyu

    rows = [r for r in _rows(smoke / "results/runs.csv") if r["stage"] == "main"]
    val: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        val[(r["system"], r["family"], r["budget"])][float(r["lr"])].append(float(r["final_val_loss"]))
    verdict = _rows(smoke / "results/verdict.csv")
    assert len(verdict) == 4
    for v in verdict:
        for family in ("kan", "mlp"):
            rates = val[(v["system"], family, v["budget"])]
            assert float(v[f"{family}_lr"]) == min(rates, key=lambda lr: statistics.median(rates[lr]))
        pick = {f: sorted((r for r in rows if r["system"] == v["system"] and r["budget"] == v["budget"]
                           and r["family"] == f and float(r["lr"]) == float(v[f"{f}_lr"])),
                          key=lambda r: int(r["seed"])) for f in ("kan", "mlp")}
        kan = [float(r["test_loss"]) for r in pick["kan"]]
        mlp = [float(r["test_loss"]) for r in pick["mlp"]]
        assert float(v["kan_test_median"]) == pytest.approx(statistics.median(kan))
        assert int(v["kan_wins_test"]) == sum(a < b for a, b in zip(kan, mlp))
        assert float(v["p_test"]) == pytest.approx(mannwhitneyu(kan, mlp, alternative="two-sided").pvalue)
        assert float(v["kan_step_ms"]) > 0 and float(v["mlp_step_peak_kib"]) > 0
        if int(v["kan_params"]) <= 130:  # [smoke] hessian_max_params: the others are not computed
            assert float(v["kan_hessian_lambda_max"]) > 0 and int(v["kan_hessian_n_above"]) >= 1
        else:
            assert math.isnan(float(v["kan_hessian_lambda_max"]))


@pytest.mark.slow
def test_reference_refits_budget_cells_at_their_chosen_rates(smoke: Path) -> None:
    rows = _rows(smoke / "results/runs.csv")
    budget = [r for r in rows if r["stage"] == "budget"]
    reference = [r for r in rows if r["stage"] == "reference"]
    assert sorted(r["label"] for r in reference) == ["kan_h4", "kan_h4", "mlp1_h10", "mlp1_h10"]
    for family, label in (("kan", "kan_h4"), ("mlp", "mlp1_h10")):
        rates: dict[float, list[float]] = defaultdict(list)
        for r in budget:
            if r["family"] == family and r["label"].startswith(label + "_lr="):
                rates[float(r["lr"])].append(float(r["final_val_loss"]))
        best = min(rates, key=lambda lr: (statistics.median(rates[lr]), lr))
        runs = [r for r in reference if r["label"] == label]
        assert {float(r["lr"]) for r in runs} == {best}
        for r in runs:  # Adam steps + at most [smoke] reference_lbfgs_steps: the cap, or the plateau before it
            assert (int(r["steps"]) == 6 + 4) == (r["stopped_on"] == "cap") and int(r["steps"]) <= 6 + 4
        assert {r["n_params"] for r in runs} == {r["n_params"] for r in budget if r["label"].split("_lr=")[0] == label}
    refs = json.loads((smoke / "results/lv_references.json").read_text())
    assert set(refs["reference"]) == {"kan_h4", "mlp1_h10"}
    kan = sorted(float(r["final_train_loss"]) for r in reference if r["label"] == "kan_h4")
    assert refs["reference"]["kan_h4"]["median"] == pytest.approx(statistics.median(kan))


@pytest.mark.slow
def test_outputs_and_resume(smoke: Path) -> None:
    results = smoke / "results"
    for name in ("summary.md", "budget.csv", "slopes.json", "timing.json", "loss_curves.png",
                 "budget.png", "generalisation.png"):
        assert (results / name).stat().st_size > 0, name
    summary = (results / "summary.md").read_text()
    assert "| lotka_volterra | large |" in summary
    timing = json.loads((results / "timing.json").read_text())
    assert f"analyse {timing['analyse']:.0f}" in summary  # this analysis's own time, not a previous one's
    stages = sum(timing[s] for s in ("main", "budget", "reference", "polish", "analyse"))
    assert stages <= timing["total_from_scratch_s"] < stages + 60  # one uninterrupted run, from scratch
    runs = _rows(results / "runs.csv")
    assert {r["stopped_on"] for r in runs} <= {"plateau", "cap"} and all(r["stopped_on"] for r in runs)
    for stage in ("main", "budget", "reference"):  # the plateau rule's count per stage
        mine = [r for r in runs if r["stage"] == stage]
        capped = sum(r["stopped_on"] == "cap" for r in mine)
        assert f"- {stage}: {len(mine) - capped} of {len(mine)} runs stopped on the plateau rule, {capped} ran" in summary
    packs = _rows(results / "packs.csv")  # one per (stage, system, model), as the sweep packed them
    assert len(packs) == 2 * 4 + 5 + 2
    for p in packs:
        members = [r for r in runs if (r["stage"], r["system"]) == (p["stage"], p["system"])
                   and r["label"].split("_lr=")[0] == p["model"]]
        assert int(p["members"]) == len(members) == (2 if p["stage"] == "reference" else 4)
        assert float(p["wall_time_s"]) == max(float(r["wall_time_s"]) for r in members) > 0
    before = {p: p.stat().st_mtime_ns for p in smoke.glob("main/*/*/seed*/summary.json")}
    cmd = [sys.executable, str(REPO / "experiments/study.py"), "--smoke", "--out", str(smoke),
           "--results", str(results), "--stages", "main,budget"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing refitted


@pytest.mark.slow
def test_polish_continues_the_chosen_budget_runs_and_the_reference_runs(smoke: Path) -> None:
    """Stage polish: exactly the budget runs at their cell's chosen rate and the reference runs,
    each from its own final loss, downhill, within [smoke]'s cap; the tables are their medians."""
    rows = _rows(smoke / "results/runs.csv")
    report = _report()
    typed = [{**r, "lr": float(r["lr"]), "final_val_loss": float(r["final_val_loss"])} for r in rows]
    picked = {r["run_dir"] for runs in report.chosen(typed, "budget").values() for r in runs}
    picked |= {r["run_dir"] for r in rows if r["stage"] == "reference"}
    polished = {r["run_dir"] for r in rows if r["polish_stopped_on"]}
    assert polished == picked and len(polished) == 5 * 2 + 2 * 2  # 5 budget cells, 2 reference labels; 2 seeds
    for r in rows:
        if r["run_dir"] not in picked:
            assert math.isnan(float(r["polished_train_loss"]))
            continue
        result = json.loads((smoke / r["run_dir"] / "polish.json").read_text())
        assert result["start_loss"] == pytest.approx(float(r["final_train_loss"]), rel=1e-9)
        assert float(r["polished_train_loss"]) == result["train_mse"] <= result["start_loss"]
        assert int(r["polish_steps"]) <= 3 and r["polish_stopped_on"] in ("plateau", "cap", "stalled")
        assert math.isfinite(float(r["polished_test_loss"]))
    for p in _rows(smoke / "results/budget.csv"):
        label = {"kan": "kan", "mlp": "mlp1", "mlp2": "mlp2"}[p["family"]] + "_" + p["hidden"]
        runs = [float(r["polished_train_loss"]) for r in rows if r["run_dir"] in picked and r["stage"] == "budget"
                and r["label"].split("_lr=")[0] == label]
        assert float(p["polished_median"]) == pytest.approx(statistics.median(runs))
    assert "Stage polish (Levenberg–Marquardt" in (smoke / "results/summary.md").read_text()


def _report():
    sys.path.insert(0, str(REPO / "experiments"))
    import study_report

    return study_report


def _run(lr: float, seed: int, val: float, status: str = "finished") -> dict:
    return {"stage": "main", "system": "lotka_volterra", "family": "kan", "budget": "small", "lr": lr,
            "seed": seed, "status": status, "final_val_loss": val}


def test_the_rate_is_never_one_whose_runs_diverged() -> None:
    """Among the rates with the fewest diverged runs, the lowest median validation loss; a rate
    whose median run diverged is never chosen, even when no other is left."""
    select = _report().select
    cell = ("lotka_volterra", "kan", "small")
    clean = [_run(1e-2, s, v) for s, v in enumerate([3.0, 3.0, 3.0, 3.0, 3.0])]
    one_bad = [_run(3e-2, s, v) for s, v in enumerate([1.0, 1.0, 1.0, 1.0])] + [_run(3e-2, 4, 5.0, "diverged")]
    assert select(clean + one_bad, "main") == {cell: 1e-2}         # lower median, but a diverged run
    assert select(one_bad, "main") == {cell: 3e-2}                 # the fewest: one of five
    most_bad = [_run(1e-1, s, 0.5, "diverged" if s < 3 else "finished") for s in range(5)]
    assert select(most_bad, "main") == {}                          # its median run diverged
    assert select(most_bad + one_bad, "main") == {cell: 3e-2}


def test_a_run_at_the_cap_is_marked_only_while_falling() -> None:
    falling_at_cap = _report().falling_at_cap
    assert falling_at_cap({"status": "finished", "stopped_on": "cap", "plateau_drop": 0.02}, 0.01)
    assert falling_at_cap({"status": "finished", "stopped_on": "cap", "plateau_drop": None}, 0.01)  # unmeasured
    assert not falling_at_cap({"status": "finished", "stopped_on": "cap", "plateau_drop": 0.005}, 0.01)
    assert not falling_at_cap({"status": "finished", "stopped_on": "plateau", "plateau_drop": 0.005}, 0.01)
    assert not falling_at_cap({"status": "diverged", "stopped_on": "cap", "plateau_drop": 0.5}, 0.01)
    assert not falling_at_cap({"status": "finished"}, 0.01)        # the rule off: no cap to mark
