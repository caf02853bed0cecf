"""What the KAN contributes: the polish started from kanode's formula, SINDy's, or zeros.

The last stage of ``kanode.symbolic.discover`` — the polish: trajectory-matched refits,
thresholding, the forecast-validated term selection — is started, on the same data, from

* ``kanode``: the formula exported from the recipe's fine-tuned symbolic KAN (``discover`` with
  ``polish_rounds=0``; its ``raw_formula``, unrounded, as the recipe hands it to the polish);
  its time includes the KAN stages;
* ``sindy``: pysindy STLSQ (threshold 0.1, finite differences) — on Lotka–Volterra the
  degree-2 polynomial library of ``discovery.py``, on the textbook systems the ``stlsq``
  baseline of ``discovery_suite.py`` (degree 3 + sin, cos);
* ``zero``: every term of that same library at coefficient 0 (``kanode.symbolic.term_library``):
  the candidate terms and nothing else;

through one function, ``kanode.symbolic.polish_from``. Cases: the canonical noisy
Lotka–Volterra protocol of ``discovery.py`` (4 trajectories, t ≤ 3.4, ``--lv-noise``, data
seeds ``--seeds``; generalisation from the dataset's held-out initial state over the whole
grid t ≤ 14, noise-free) and textbook systems of ``discovery_suite.py`` (``--systems``, one
noise-free trajectory; generalisation from the system's second start).

    python experiments/discovery_ablation.py --lv-noise 0 0.05 0.1 --seeds 0 1 2
    python experiments/discovery_ablation.py --systems logistic bistable --starts sindy zero
    python experiments/discovery_ablation.py --table-only

Appends rows to ``results/discovery_ablation/results.csv`` and rewrites ``table.md`` (the latest
row of each case, noise, seed and start).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import discovery_suite as suite  # noqa: E402 - the experiments folder is not a package
import suite_scoring as scoring  # noqa: E402

import systems  # noqa: E402
from kanode.config import FitConfig  # noqa: E402
from kanode.data import FitData, load_data  # noqa: E402
from kanode.symbolic import Formula, SymbolicConfig, discover, polish_from, term_library  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "discovery_ablation"
STARTS = ("kanode", "sindy", "zero")
COLUMNS = ("case", "noise", "seed", "start", "start_terms", "status", "exact_support", "worst_coef_error",
           "gen_r2", "start_seconds", "polish_seconds", "terms_from", "formula", "commit", "date")
LV_DEGREE = 2
SUITE_DEGREE = 3


class Case:
    """One data set: training data, the law, and a noise-free trajectory from a start never trained on."""

    def __init__(self, name: str, noise: float, seed: int, data: FitData, config: FitConfig, law: tuple[str, ...],
                 test_t: np.ndarray, test_y0: np.ndarray, test_clean: np.ndarray, sindy, library) -> None:
        self.name, self.noise, self.seed, self.data, self.config, self.law = name, noise, seed, data, config, law
        self.test_t, self.test_y0, self.test_clean = test_t, test_y0, test_clean
        self.sindy, self.library = sindy, library


def lotka_volterra_case(noise: float, seed: int) -> Case:
    config = FitConfig(noise=noise, data_seed=seed, n_traj=4, threads=1)
    data = load_data(config).to(torch.float64, "cpu")
    clean = load_data(config.replace(noise=0.0)).to(torch.float64, "cpu")
    lv = data.system
    law = (f"{lv.alpha}*x - {lv.beta}*x*y", f"{lv.delta}*x*y - {lv.gamma}*y")
    test = clean.y_held_out[0].numpy()                                       # (n_t, 2)

    def sindy() -> dict[str, str]:
        import pysindy as ps

        model = ps.SINDy(optimizer=ps.STLSQ(threshold=0.1), feature_library=ps.PolynomialLibrary(degree=LV_DEGREE),
                         differentiation_method=ps.FiniteDifference())
        model.fit(list(data.y_train.numpy()), t=data.t_train.numpy(), feature_names=["x", "y"])
        return suite._sindy_formula(model, ("x", "y"))

    return Case("lotka_volterra", noise, seed, data, config, law, data.t.numpy(), test[0], test, sindy,
                term_library(("x", "y"), LV_DEGREE))


def suite_case(name: str) -> Case:
    problem = suite.make_problem(systems.get(name), 0.0, 0)
    n_t, dim = problem.y_train.shape
    data = FitData(t=torch.tensor(problem.t), y=torch.tensor(problem.y_train)[None],
                   y_held_out=torch.zeros((0, n_t, dim), dtype=torch.float64), n_train=n_t,
                   system=problem.system, state_names=problem.names)
    config = FitConfig(system=name, n_traj=1, n_test_traj=0, train_fraction=1.0, threads=1)
    return Case(name, 0.0, 0, data, config, problem.system.equations(), problem.t, problem.system.y0_test,
                problem.clean_test, lambda: suite.run_stlsq(problem, False)[0],
                term_library(problem.names, SUITE_DEGREE, trig=True))


def start_formula(case: Case, start: str):
    """The polish's start for ``case``: a Formula, or the zero term set."""
    names = tuple(case.data.state_names)
    if start == "kanode":
        torch.set_num_threads(1)
        found = discover(case.data, case.config, SymbolicConfig(start="kan", polish_rounds=0),
                         progress=lambda line: print(f"    kanode {line}", flush=True))
        return found.raw_formula
    if start == "sindy":
        strings = case.sindy()
        return Formula(names, tuple(scoring.parse(strings[n], names) for n in names))
    return case.library


def run(case: Case, start: str) -> dict[str, object]:
    row: dict[str, object] = {"case": case.name, "noise": case.noise, "seed": case.seed, "start": start}
    names = tuple(case.data.state_names)
    clock = time.perf_counter()
    try:
        begin = start_formula(case, start)
        start_seconds = time.perf_counter() - clock
        n_terms = (sum(len(f) for f in begin) if not isinstance(begin, Formula)
                   else sum(len(scoring.term_table(str(e), names)) for e in begin.rhs))
        clock = time.perf_counter()
        polished = polish_from(begin, case.data)
        polish_seconds = time.perf_counter() - clock
    except Exception as exc:  # noqa: BLE001 - a start or polish that fails is a result
        traceback.print_exc()
        return {**row, "start_terms": 0, "status": f"failed: {' '.join(str(exc).split())[:200]}",
                "exact_support": False, "worst_coef_error": 1.0, "gen_r2": -math.inf,
                "start_seconds": round(time.perf_counter() - clock, 1), "polish_seconds": 0.0,
                "terms_from": "", "formula": ""}
    formula = polished.formula.as_strings()
    exact, worst = scoring.support_and_error(formula, case.law, names)
    gen = scoring.simulate_formula(formula, names, case.test_t, case.test_y0, case.test_clean)
    return {**row, "start_terms": n_terms, "status": "ok", "exact_support": exact, "worst_coef_error": worst,
            "gen_r2": scoring.r2(gen, case.test_clean), "start_seconds": round(start_seconds, 1),
            "polish_seconds": round(polish_seconds, 1), "terms_from": polished.terms_from,
            "formula": "; ".join(f"{n}' = {formula[n]}" for n in names)}


def write_table(csv_path: Path, out: Path) -> str:
    with csv_path.open(newline="") as fh:
        latest = {(r["case"], float(r["noise"]), r["seed"], r["start"]): r for r in csv.DictReader(fh)}
    groups: dict[tuple[str, float, str], list[dict[str, str]]] = {}
    for (case, noise, _, start), row in latest.items():
        groups.setdefault((case, noise, start), []).append(row)
    lines = ["# Ablation: where the polish starts", "",
             "Written by `experiments/discovery_ablation.py` from `results.csv` (latest row per case, noise, "
             "seed, start). exact: the law's terms exactly; error: worst relative coefficient error over the "
             "law's terms (missing = 100 %); gen R²: the formula's trajectory from a start never trained on "
             "(−∞: blew up); times: wall seconds on a shared 2-core machine (start: making the start formula, "
             "for `kanode` the KAN stages).", "",
             "| case | noise | start | runs | exact support | median worst error | median gen R² | "
             "median start s | median polish s |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = {s: k for k, s in enumerate(STARTS)}
    for (case, noise, start), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order[kv[0][2]])):
        ok = [r for r in rows if r["status"] == "ok"]
        exact = sum(r["exact_support"] == "True" for r in rows)
        err = statistics.median(float(r["worst_coef_error"]) for r in rows)
        gen = statistics.median(float(r["gen_r2"]) for r in rows)
        med = (lambda key: f"{statistics.median(float(r[key]) for r in ok):.0f}" if ok else "—")
        gen_text = "−∞" if gen == -math.inf else f"{gen:.3f}"
        lines.append(f"| {case} | {noise:g} | {start} | {len(rows)} | {exact}/{len(rows)} | {100 * err:.2f} % | "
                     f"{gen_text} | {med('start_seconds')} | {med('polish_seconds')} |")
    lines += ["", "## Every run", "", "| case | noise | seed | start | start terms | exact | error | gen R² | "
              "polish s | terms from | formula |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (case, noise, seed, start), r in sorted(latest.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2],
                                                                                  order[kv[0][3]])):
        gen = float(r["gen_r2"])
        lines.append(f"| {case} | {noise:g} | {seed} | {start} | {r['start_terms']} | {r['exact_support']} | "
                     f"{100 * float(r['worst_coef_error']):.2f} % | {'−∞' if gen == -math.inf else f'{gen:.3f}'} | "
                     f"{r['polish_seconds']} | {r['terms_from'] or r['status']} | {r['formula']} |")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lv-noise", type=float, nargs="*", default=[],
                        help="noise levels of the Lotka–Volterra case")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="data seeds of the Lotka–Volterra case")
    parser.add_argument("--systems", nargs="*", default=[], choices=systems.textbook.names(), metavar="NAME")
    parser.add_argument("--starts", nargs="+", default=list(STARTS), choices=STARTS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "results.csv"
    if not args.table_only:
        cases = ([lambda n=n, s=s: lotka_volterra_case(n, s) for n in args.lv_noise for s in args.seeds]
                 + [lambda name=name: suite_case(name) for name in args.systems])
        commit, new = suite._commit(), not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            for make in cases:
                case = make()
                for start in args.starts:
                    print(f"{case.name} noise {case.noise:g} seed {case.seed} / {start} ...", flush=True)
                    row = run(case, start)
                    row.update(commit=commit, date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"))
                    writer.writerow(row)
                    fh.flush()
                    print(f"  {row['status']}, exact {row['exact_support']}, worst error "
                          f"{float(row['worst_coef_error']):.3g}, gen R² {float(row['gen_r2']):.4g}, start "
                          f"{row['start_seconds']} s, polish {row['polish_seconds']} s\n  {row['formula']}", flush=True)
    if not path.exists():
        parser.error(f"{path} does not exist; run some cases first")
    print(write_table(path, args.results / "table.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
