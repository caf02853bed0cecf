"""experiments/discovery_suite.py: the scores against hand-made formulas, and the runner end to end
on two small systems with kanode's recipe at smoke budgets (pysindy is never needed)."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import systems

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


scoring = _load("suite_scoring")
suite = _load("discovery_suite")


@pytest.fixture(scope="module")
def vdp():
    return suite.make_problem(systems.get("van_der_pol"), noise=0.0, seed=0)


def _score(problem, formula: dict[str, str]) -> tuple[bool, float, float, float]:
    system, names = problem.system, problem.names
    exact, worst = scoring.support_and_error(formula, system.equations(), names)
    recon = scoring.simulate_formula(formula, names, problem.t, system.y0, problem.clean_train)
    gen = scoring.simulate_formula(formula, names, problem.t, system.y0_test, problem.clean_test)
    return exact, worst, scoring.r2(recon, problem.clean_train), scoring.r2(gen, problem.clean_test)


def test_the_law_itself_scores_perfectly(vdp):
    exact, worst, recon, gen = _score(vdp, dict(zip(vdp.names, vdp.system.equations())))
    assert exact and worst == 0.0
    assert recon == pytest.approx(1.0, abs=1e-9) and gen == pytest.approx(1.0, abs=1e-9)


def test_coefficient_error_missing_and_spurious_terms(vdp):
    ten_percent = {"x": "v", "v": "1.65*v - 1.5*x**2*v - x"}
    assert _score(vdp, ten_percent)[:2] == (True, pytest.approx(0.1, rel=1e-12))
    missing = {"x": "v", "v": "1.5*v - x"}
    assert _score(vdp, missing)[:2] == (False, 1.0)
    spurious = {"x": "v + 0.01*x**3", "v": "1.5*v - 1.5*x**2*v - x"}
    assert _score(vdp, spurious)[:2] == (False, 0.0)


def test_r2_is_variance_weighted():
    true = np.array([[0.0, 0.0], [2.0, 10.0], [4.0, 20.0]])      # state variances 8/3, 200/3
    predicted = true + np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert scoring.r2(predicted, true) == pytest.approx(1 - 1 / (8 + 200))
    assert scoring.r2(None, true) == -math.inf


def test_a_formula_that_blows_up_scores_minus_infinity():
    problem = suite.make_problem(systems.get("logistic"), noise=0.0, seed=0)
    exploding = {"x": "0.8*x + 0.08*x**2"}      # the logistic law with the wrong sign: x → ∞ at t ≈ 3.8
    assert _score(problem, exploding)[2:] == (-math.inf, -math.inf)


def test_terms_are_read_from_the_expanded_law():
    assert scoring.term_table("0.5*x*log(5.0/x)", ["x"]) == pytest.approx(
        {"x": 0.5 * math.log(5.0), "x*log(x)": -0.5})
    # inner constants count within two significant digits
    assert set(scoring.term_table("2*x**2/(1.01*x**2 + 1.0)", ["x"])) == {"x**2/(x**2 + 1)"}
    assert scoring.term_table("2.0*sin(0.9999*theta + 0.001)", ["theta"]) == {"sin(theta)": 2.0}
    assert set(scoring.term_table("sin(1.2*theta)", ["theta"])) == {"sin(1.2*theta)"}
    # state names that are sympy constants elsewhere stay plain symbols
    assert scoring.term_table("-1.5*S*I", ["S", "I"]) == {"I*S": -1.5}
    assert scoring.sympy_feature("x^2 v") == "x**2*v" and scoring.sympy_feature("sin(1 x)") == "sin(1*x)"


@pytest.mark.slow
def test_runner_with_kanode_on_two_small_systems(tmp_path):
    """The runner's bookkeeping with kanode's recipe at smoke budgets: one row per system, the
    scores in the row are those of its formula, and the table counts them and lists the rest."""
    cmd = [sys.executable, str(REPO / "experiments" / "discovery_suite.py"), "--smoke", "--methods", "kanode",
           "--systems", "logistic", "thermal_runaway", "--results", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    with (tmp_path / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["system"], r["method"]) for r in rows] == [("logistic", "kanode"), ("thermal_runaway", "kanode")]
    for row in rows:
        assert row["status"] == "ok" or row["status"].startswith("failed: DiscoveryError"), row["status"]
        if row["status"] != "ok":
            continue
        problem = suite.make_problem(systems.get(row["system"]), 0.0, 0, suite.SMOKE_POINTS)
        name = problem.names[0]
        formula = {name: row["formula"].split("' = ", 1)[1]}
        exact, worst, recon, gen = _score(problem, formula)
        assert (row["exact_support"] == "True") == exact
        assert float(row["worst_coef_error"]) == pytest.approx(worst)
        assert float(row["recon_r2"]) == pytest.approx(recon, rel=1e-6)
        assert float(row["gen_r2"]) == pytest.approx(gen, rel=1e-6)
    table = (tmp_path / "table.md").read_text()
    assert f"| kanode | 0 | 2/{len(systems.textbook.names())} |" in table
    assert "| van_der_pol | 2 | not run |" in table


def test_stlsq_baseline_recovers_lorenz():
    pytest.importorskip("pysindy")
    row = suite.evaluate(suite.make_problem(systems.get("lorenz"), noise=0.0, seed=0), "stlsq")
    assert row["status"] == "ok" and row["exact_support"] and row["worst_coef_error"] < 0.05


def _never_returns(problem, smoke):
    import threading

    threading.Event().wait()    # blocks until the process is stopped


def _fails(problem, smoke):
    raise RuntimeError("no formula")


def _rejected(problem, smoke):
    return dict(zip(problem.names, problem.system.equations())), "rejected: a reason"


def test_a_budget_stops_the_run_and_says_so(vdp, monkeypatch):
    """A method still running when its budget is spent is stopped, and its row says so (the table
    counts it as not finished); errors and verdicts come back from the child process as they are."""
    monkeypatch.setitem(suite.METHODS, "kanode", _never_returns)
    row = suite.evaluate(vdp, "kanode", budget=0.5)
    assert row["status"] == "stopped: over the budget of 0.5 s" and row["recon_r2"] == -math.inf
    assert suite._stopped({k: str(v) for k, v in row.items()})
    monkeypatch.setitem(suite.METHODS, "kanode", _fails)
    assert suite.evaluate(vdp, "kanode", budget=600)["status"] == "failed: RuntimeError: no formula"
    monkeypatch.setitem(suite.METHODS, "kanode", _rejected)
    row = suite.evaluate(vdp, "kanode", budget=600)
    assert row["status"] == "rejected: a reason" and row["exact_support"] and row["gen_r2"] == pytest.approx(1.0)
