"""Equations from data on the textbook systems: kanode.symbolic against SINDy baselines.

Every method sees the same data: one trajectory of each system (``systems.textbook``) from its
canonical start over its default time grid (longer than the Lotka–Volterra window of
experiments/discovery.py), with ``--noise`` observation noise (a fraction of each state's std,
``systems.make_dataset``'s convention). Each method returns a formula, scored by
``suite_scoring``: reconstruction R² (the formula's trajectory from the training start against
the true one), generalisation R² (from the system's second start, never seen), exact support
and worst relative coefficient error against the law the system states, and the wall time of
the fit.

Methods (one table, :data:`METHODS`):

* ``kanode``: ``kanode.symbolic.discover`` with its defaults (the recipe of
  ``python -m kanode.symbolic``), one torch thread, in a child process stopped after
  ``--budget`` wall seconds (the row then says ``stopped: over the budget``); a formula its
  verdict rejects (``kanode.symbolic.verdict``: it does not reproduce the data) is scored and
  its status says ``rejected: <reason>``;
* ``stlsq``: pysindy STLSQ (threshold 0.1, pysindy's default), polynomial (degree 3) plus
  Fourier (sin, cos of each state) library, finite-difference derivatives;
* ``weak_sindy``: the same library and optimiser in the weak (integral) form
  (``pysindy.WeakPDELibrary``, K = 100 test functions), no derivatives;
* ``ensemble_sindy``: the same as ``stlsq`` with bagging (``pysindy.EnsembleOptimizer``,
  20 models, median coefficients, seed 0).

The baselines need pysindy (``pip install -e '.[experiments]'``); the test suite never does.

    python experiments/discovery_suite.py                                  # every system and method
    python experiments/discovery_suite.py --methods stlsq weak_sindy ensemble_sindy
    python experiments/discovery_suite.py --systems van_der_pol pendulum --methods kanode
    python experiments/discovery_suite.py --table-only                     # rebuild table.md

Appends one row per system and method to ``results.csv`` (in ``--results``, default
experiments/results/discovery_suite) and rewrites ``table.md`` from the latest row of each
system, method and noise level; a system a method has not run on is listed as not run, and a
row whose status starts with "stopped" (a run ended from outside, added by hand with its times)
as not finished.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite_scoring as scoring  # noqa: E402 - the experiments folder is not a package

import systems  # noqa: E402
from systems.textbook import TextbookSystem  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "discovery_suite"
COLUMNS = ("system", "dim", "method", "noise", "status", "recon_r2", "gen_r2", "exact_support",
           "worst_coef_error", "seconds", "cpu_seconds", "formula", "commit", "date")
SMOKE_RECIPE = {"sparse_steps": 4, "sparse_lbfgs_steps": 2, "retrain_steps": 2, "retrain_lbfgs_steps": 2,
                "finetune_steps": 2, "finetune_lbfgs_steps": 2, "polish_rounds": 1}
"""The kanode recipe's budgets under ``--smoke`` (CI: the bookkeeping, not the science)."""
SMOKE_POINTS = 21
ALPHA = 1e-5
"""Ridge weight of every STLSQ (pysindy's default 0.05 swamps the weak form's small features)."""


@dataclass(frozen=True)
class Problem:
    """One system's data. t: (n_t,); y_train: (n_t, dim) observed; clean_train, clean_test:
    (n_t, dim) true trajectories from the training and the second start."""

    system: TextbookSystem
    t: np.ndarray
    y_train: np.ndarray
    clean_train: np.ndarray
    clean_test: np.ndarray

    @property
    def names(self) -> tuple[str, ...]:
        return self.system.state_names


def make_problem(system: TextbookSystem, noise: float, seed: int, n_t: int | None = None) -> Problem:
    """The data every method sees (``n_t`` points on the default span; default: the system's)."""
    t = np.linspace(*system.t_span, n_t or system.n_t)
    dataset = systems.make_dataset(system, n_traj=1, t=t, noise=noise, seed=seed, train_fraction=1.0)
    test = systems.simulate(system, t, system.y0_test).y[0]
    return Problem(system, t, dataset.observed.y[0], dataset.clean.y[0], test)


# ------------------------------------------------------------------------------------ methods
def run_kanode(problem: Problem, smoke: bool) -> tuple[dict[str, str], str]:
    import torch

    from kanode.config import FitConfig
    from kanode.data import FitData
    from kanode.symbolic import SymbolicConfig, discover

    torch.set_num_threads(1)
    n_t, dim = problem.y_train.shape
    data = FitData(t=torch.tensor(problem.t), y=torch.tensor(problem.y_train)[None],
                   y_held_out=torch.zeros((0, n_t, dim), dtype=torch.float64), n_train=n_t,
                   system=problem.system, state_names=problem.names)
    config = FitConfig(system=problem.system.name, n_traj=1, n_test_traj=0, train_fraction=1.0, threads=1)
    recipe = SymbolicConfig(**SMOKE_RECIPE) if smoke else SymbolicConfig()
    discovery = discover(data, config, recipe,
                         progress=lambda line: print(f"    kanode {line}", flush=True))
    verdict = discovery.verdict
    status = "ok" if verdict.accepted else f"rejected: {' '.join(verdict.reason.split())[:200]}"
    return discovery.formula.as_strings(), status


def _import_pysindy() -> None:
    try:
        import pysindy  # noqa: F401
    except ImportError:
        print("pysindy is not installed (pip install -e '.[experiments]'); the baselines will fail",
              file=sys.stderr)


def _library():
    import pysindy as ps

    return ps.PolynomialLibrary(degree=3) + ps.FourierLibrary(n_frequencies=1)


def _sindy_formula(model, names: tuple[str, ...]) -> dict[str, str]:
    """{state: expression} from a fitted pysindy model (its coefficients and feature names)."""
    features = [scoring.sympy_feature(name) for name in model.get_feature_names()]
    return {state: " + ".join(f"({float(c)!r})*({f})" for c, f in zip(row, features) if c != 0) or "0"
            for state, row in zip(names, model.coefficients())}


def run_stlsq(problem: Problem, smoke: bool) -> tuple[dict[str, str], str]:
    import pysindy as ps

    model = ps.SINDy(optimizer=ps.STLSQ(threshold=0.1, alpha=ALPHA), feature_library=_library(),
                     differentiation_method=ps.FiniteDifference())
    model.fit(problem.y_train, t=problem.t, feature_names=list(problem.names))
    return _sindy_formula(model, problem.names), "ok"


def run_weak_sindy(problem: Problem, smoke: bool) -> tuple[dict[str, str], str]:
    import pysindy as ps

    library = ps.WeakPDELibrary(function_library=_library(), spatiotemporal_grid=problem.t, K=100, p=4)
    model = ps.SINDy(optimizer=ps.STLSQ(threshold=0.1, alpha=ALPHA), feature_library=library)
    model.fit(problem.y_train, t=problem.t, feature_names=list(problem.names))
    return _sindy_formula(model, problem.names), "ok"


def run_ensemble_sindy(problem: Problem, smoke: bool) -> tuple[dict[str, str], str]:
    import pysindy as ps

    np.random.seed(0)   # EnsembleOptimizer draws its bags from numpy's global generator
    optimizer = ps.EnsembleOptimizer(opt=ps.STLSQ(threshold=0.1, alpha=ALPHA), bagging=True, n_models=20)
    model = ps.SINDy(optimizer=optimizer, feature_library=_library(),
                     differentiation_method=ps.FiniteDifference())
    model.fit(problem.y_train, t=problem.t, feature_names=list(problem.names))
    return _sindy_formula(model, problem.names), "ok"


METHODS: dict[str, Callable[[Problem, bool], tuple[dict[str, str], str]]] = {
    "kanode": run_kanode,
    "stlsq": run_stlsq,
    "weak_sindy": run_weak_sindy,
    "ensemble_sindy": run_ensemble_sindy,
}


# --------------------------------------------------------------------------------- one cell
def _child(method: str, problem: Problem, smoke: bool, conn) -> None:
    """In the child process: run the method, send (formula, status) or ("error", reason) back."""
    try:
        conn.send(("done", METHODS[method](problem, smoke)))
    except Exception as exc:  # noqa: BLE001 - sent back to the parent as a result
        traceback.print_exc()
        conn.send(("error", " ".join(f"{type(exc).__name__}: {exc}".split())[:200]))
    finally:
        conn.close()


def _run_with_budget(method: str, problem: Problem, smoke: bool,
                     budget: float) -> tuple[str, object, float]:
    """The method in a forked child, stopped after ``budget`` wall seconds: ("done", (formula,
    status)) / ("error", reason) / ("stopped", None), with the child's CPU seconds."""
    import multiprocessing
    import resource

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    cpu_before = children_cpu()
    child = context.Process(target=_child, args=(method, problem, smoke, send), daemon=True)
    child.start()
    send.close()
    outcome: tuple[str, object] = ("stopped", None)
    if receive.poll(budget):
        try:
            outcome = receive.recv()
        except EOFError:   # the child died without a word (killed from outside, out of memory)
            outcome = ("error", f"the child process ended with exit code {child.exitcode}")
    if outcome[0] == "stopped":
        child.terminate()
    child.join()
    return outcome[0], outcome[1], children_cpu() - cpu_before


def evaluate(problem: Problem, method: str, smoke: bool = False, budget: float | None = None) -> dict[str, object]:
    """Run ``method`` on ``problem`` and score it: one row of results.csv (as a dict). With a
    ``budget`` (wall seconds) the method runs in a child process that is stopped when it is spent."""
    system = problem.system
    row: dict[str, object] = {"system": system.name, "dim": system.dim, "method": method}
    start, cpu_start = time.perf_counter(), time.process_time()

    def missing(status: str, cpu: float) -> dict[str, object]:
        return {**row, "status": status, "recon_r2": -math.inf, "gen_r2": -math.inf,
                "exact_support": False, "worst_coef_error": 1.0,
                "seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(cpu, 2), "formula": ""}

    if budget is None:
        try:
            formula, status = METHODS[method](problem, smoke)
        except Exception as exc:  # noqa: BLE001 - a method that fails is a result, with its reason
            traceback.print_exc()
            return missing(f"failed: {' '.join(f'{type(exc).__name__}: {exc}'.split())[:200]}",
                           time.process_time() - cpu_start)
        cpu_seconds = time.process_time() - cpu_start
    else:
        kind, payload, cpu_seconds = _run_with_budget(method, problem, smoke, budget)
        if kind == "stopped":
            return missing(f"stopped: over the budget of {budget:g} s", cpu_seconds)
        if kind == "error":
            return missing(f"failed: {payload}", cpu_seconds)
        formula, status = payload
    seconds = time.perf_counter() - start
    exact, worst = scoring.support_and_error(formula, system.equations(), problem.names)
    recon = scoring.simulate_formula(formula, problem.names, problem.t, system.y0, problem.clean_train)
    gen = scoring.simulate_formula(formula, problem.names, problem.t, system.y0_test, problem.clean_test)
    return {**row, "status": status, "recon_r2": scoring.r2(recon, problem.clean_train),
            "gen_r2": scoring.r2(gen, problem.clean_test), "exact_support": exact,
            "worst_coef_error": worst, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
            "formula": "; ".join(f"{name}' = {formula[name]}" for name in problem.names)}


# ---------------------------------------------------------------------------------- the table
def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fmt(value: float) -> str:
    return "−∞" if value == -math.inf else f"{value:.3f}"


def latest_rows(csv_path: Path) -> dict[tuple[str, str, float], dict[str, str]]:
    """The last row of each (system, method, noise) in results.csv."""
    with csv_path.open(newline="") as fh:
        return {(r["system"], r["method"], float(r["noise"])): r for r in csv.DictReader(fh)}


def _stopped(row: dict[str, str]) -> bool:
    """A run stopped from outside before it finished (recorded by hand, with its wall and CPU time)."""
    return row["status"].startswith("stopped")


def write_table(csv_path: Path, out: Path, names: list[str]) -> str:
    """table.md: headline fractions per method and noise, then every system (not-run cells listed)."""
    latest = latest_rows(csv_path)
    methods = [m for m in METHODS if any(key[1] == m for key in latest)]
    noises = sorted({key[2] for key in latest})
    lines = ["# Discovery suite", "",
             f"{len(names)} textbook systems (`systems.textbook`); written by "
             "`experiments/discovery_suite.py` from `results.csv` (the latest row of each cell). "
             "R²: variance-weighted, of the formula's own trajectory (−∞: blew up); support: the law's "
             "terms exactly; error: worst relative coefficient error over the law's terms (missing = 100 %); "
             "time: wall seconds of the fit (CPU seconds of its process in the headline; the machine was "
             "shared, so the CPU time is the better measure of cost).", "",
             "| method | noise | run | recon R² > 0.9 | gen R² > 0.9 | exact support | median wall (s) | "
             "median CPU (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for noise in noises:
        for method in methods:
            present = [latest[(n, method, noise)] for n in names if (n, method, noise) in latest]
            if not present:
                continue
            rows = [r for r in present if not _stopped(r)]
            total, stopped = len(names), len(present) - len(rows)
            recon = sum(float(r["recon_r2"]) > 0.9 for r in rows)
            gen = sum(float(r["gen_r2"]) > 0.9 for r in rows)
            exact = sum(r["exact_support"] == "True" for r in rows)
            median = f"{statistics.median(float(r['seconds']) for r in rows):.1f}" if rows else "—"
            cpu = f"{statistics.median(float(r['cpu_seconds']) for r in rows):.1f}" if rows else "—"
            run = f"{len(rows)}/{total}" + (f" ({stopped} stopped)" if stopped else "")
            lines.append(f"| {method} | {noise:g} | {run} | {recon}/{total} | {gen}/{total} | "
                         f"{exact}/{total} | {median} | {cpu} |")
    lines += ["", "run: finished runs (a formula or a failure). Fractions are over all systems: a system a "
              "method did not run on, or did not finish, counts as a miss.", ""]
    for noise in noises:
        lines += [f"## noise {noise:g}", "",
                  "| system | dim | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
        for name in names:
            cells = []
            for method in methods:
                row = latest.get((name, method, noise))
                if row is None:
                    cells.append("not run")
                elif _stopped(row):
                    cells.append(f"not finished: stopped after {float(row['seconds']):.0f} s "
                                 f"({float(row['cpu_seconds']):.0f} CPU s)")
                elif row["status"] != "ok" and not row["status"].startswith("rejected"):
                    cells.append(f"failed ({row['seconds']} s)")
                else:
                    support = "exact" if row["exact_support"] == "True" else "wrong"
                    rejected = " / rejected by its verdict" if row["status"].startswith("rejected") else ""
                    cells.append(f"{_fmt(float(row['recon_r2']))} / {_fmt(float(row['gen_r2']))} / {support} / "
                                 f"{100 * float(row['worst_coef_error']):.1f} % / {float(row['seconds']):.1f} s"
                                 + rejected)
            lines.append(f"| {name} | {systems.get(name).dim} | " + " | ".join(cells) + " |")
        lines += ["", "Cells: recon R² / gen R² / support / worst coefficient error / time.", ""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    names = systems.textbook.names()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=names, choices=names, metavar="NAME",
                        help="textbook systems to run (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--noise", type=float, default=0.0, help="observation noise, fraction of each state's std")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of results.csv and table.md")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny kanode budgets and {SMOKE_POINTS} time points (tests the bookkeeping)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="wall seconds per kanode run; a run over it is stopped and recorded as "
                             "'stopped: over the budget' (default: no limit)")
    parser.add_argument("--table-only", action="store_true", help="only rebuild table.md from results.csv")
    args = parser.parse_args(argv)
    if not args.noise >= 0:
        parser.error(f"--noise must be >= 0, got {args.noise}")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "results.csv"
    if not args.table_only:
        if set(args.methods) - {"kanode"}:
            _import_pysindy()   # not inside the first baseline's timing
        commit, new = _commit(), not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            for name in args.systems:
                problem = make_problem(systems.get(name), args.noise, args.seed,
                                       SMOKE_POINTS if args.smoke else None)
                for method in args.methods:
                    print(f"{name} / {method} ...", flush=True)
                    row = evaluate(problem, method, args.smoke, args.budget if method == "kanode" else None)
                    row.update(noise=args.noise, commit=commit,
                               date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"))
                    writer.writerow(row)
                    fh.flush()
                    print(f"  {name} / {method}: {row['status']}, recon R² {_fmt(row['recon_r2'])}, "
                          f"gen R² {_fmt(row['gen_r2'])}, support {row['exact_support']}, worst error "
                          f"{row['worst_coef_error']:.3g}, {row['seconds']} s\n  {row['formula']}", flush=True)
    if not path.exists():
        parser.error(f"{path} does not exist; run some systems first")
    print(write_table(path, args.results / "table.md", names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
