"""The study's analysis stage (experiments/study.py): selection, tables, tests, figures.

Every number comes from the run directories under ``<out>/main``,
``<out>/budget`` and ``<out>/reference``; ``runs.csv`` holds one row per fit
so that every table can be recomputed from it.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kanode.analysis import EXACT_MAX_PARAMS, load_run_field, run_hessian
from kanode.analysis.step_memory import peak_bytes
from kanode.config import ConfigError, FitConfig, load_config
from kanode.data import FitData, data_key, load_data
from kanode.fit import build_field
from kanode.ode import SolverError, solve
from kanode.plateau import plateau_drop
from kanode.polish import read_polish
from kanode.runs import read_metrics, read_summary
from kanode.ensemble.field import EnsembleVectorField
from kanode.train import Trainer, solver_options

COLUMNS = ("stage", "system", "model", "family", "label", "budget", "lr", "seed", "n_params", "status",
           "final_train_loss", "best_train_loss", "final_val_loss", "final_extrap_loss", "test_loss",
           "plateau", "stopped_on", "plateau_drop", "falling_at_cap", "steps", "time_per_step_s", "wall_time_s", "run_dir",
           "reason", "polished_train_loss", "polished_test_loss", "polish_steps", "polish_stopped_on",
           "polish_falling_at_cap", "polish_seconds")


# ----------------------------------------------------------------- per run
def test_loss(run_dir: Path, n_ic: int, data_seed: int, checkpoint: str = "last") -> float:
    """MSE over the training window of the final model's trajectories from ``n_ic`` new
    initial conditions (drawn with ``data_seed``, as the fit draws its own) against the truth;
    ``checkpoint="polished"``: of the model stage polish left."""
    field, _, config = load_run_field(run_dir, checkpoint)
    data = _test_data(config.replace(n_traj=n_ic, n_test_traj=0, data_seed=data_seed, noise=0.0))
    t, y = data.t_train, data.y_train                                            # (n_train,), (n_ic, n_train, dim)
    try:
        with torch.no_grad():
            pred = solve(field, y[:, 0], t, adjoint=False, **solver_options(config, data)).transpose(0, 1)
    except SolverError:
        return math.inf
    value = float(torch.mean((pred - y) ** 2))
    return value if math.isfinite(value) else math.inf


_TEST_DATA: dict[tuple, FitData] = {}


def _test_data(config: FitConfig) -> FitData:
    """The test trajectories a config asks for, simulated once per analysis (the runs of one
    system share them: same data fields)."""
    key = data_key(config)
    if key not in _TEST_DATA:
        _TEST_DATA[key] = load_data(config).to(torch.float64, "cpu")
    return _TEST_DATA[key]


def plateau(run_dir: Path) -> float:
    """Relative drop of the training loss over the last 10 % (at least 5) of the steps of the
    run's last phase (L-BFGS after Adam): about 0 when the loss has plateaued; NaN when unknown."""
    rows = [r for r in read_metrics(run_dir / "metrics.csv") if r["train_loss"] is not None]
    if not rows:
        return math.nan
    last = [r["train_loss"] for r in rows if r["phase"] == rows[-1]["phase"]]
    tail = last[-max(5, len(last) // 10):]
    if len(tail) < 5 or not all(math.isfinite(v) for v in tail):
        return math.nan
    return (tail[0] - tail[-1]) / tail[0] if tail[0] > 0 else 0.0


def collect(out: Path, study: dict[str, Any], stages: tuple[str, ...] = ("main", "budget", "reference"),
            test: bool = True) -> list[dict[str, Any]]:
    """One row per run of ``stages``; ``test=False`` leaves test_loss and plateau out (NaN)."""
    rows = []
    for stage in stages:
        for summary_path in sorted((out / stage).glob("*/*/seed*/summary.json")):
            run_dir = summary_path.parent
            summary = read_summary(summary_path) or {}
            config = load_config(run_dir / "config.toml")
            label = run_dir.parent.name
            family = _family(config.model, config.widths)
            row = {k: summary.get(k) for k in COLUMNS if k in summary}
            row.update(stage=stage, system=config.system, model=config.model, family=family,
                       label=label, budget=_budget(label), lr=config.lr, seed=config.seed,
                       run_dir=str(run_dir.relative_to(out)))
            finished = summary.get("status") == "finished"
            row["falling_at_cap"] = falling_at_cap(summary, config.plateau_rtol)
            if not test:
                row["test_loss"] = row["plateau"] = math.nan
                rows.append(row)
                continue
            row["test_loss"] = (_cached(run_dir, "study_test_loss.json", lambda run_dir=run_dir: test_loss(
                run_dir, study["test"]["n_ic"], study["test"]["data_seed"])) if finished else math.inf)
            row["plateau"] = plateau(run_dir) if finished else math.nan
            row.update(polish_columns(run_dir, study))
            rows.append(row)
    return rows


def fitted_values(stage_dir: Path) -> int | None:
    """How many observed values a run of this stage fits (its whole training window; one run's
    count, the stage's runs share their data), None when there is no run."""
    run = next(stage_dir.glob("*/*/seed*/summary.json"), None)
    if run is None:
        return None
    _, data, _ = load_run_field(run.parent)
    return int((~torch.isnan(data.y_train)).sum())


def polish_columns(run_dir: Path, study: dict[str, Any]) -> dict[str, Any]:
    """Stage polish's result for one run (NaN / None where it was not polished): the training
    MSE and test loss of the polished model, its steps, how it stopped, and whether it reached the
    cap still falling by at least the rule's tolerance."""
    result = read_polish(run_dir)
    if result is None:
        return {"polished_train_loss": math.nan, "polished_test_loss": math.nan, "polish_steps": None,
                "polish_stopped_on": None, "polish_falling_at_cap": False, "polish_seconds": math.nan}
    rule = study["polish"]
    drop = plateau_drop(result.losses, rule["plateau_steps"])
    test = _cached(run_dir, "study_test_loss_polished.json", lambda: test_loss(
        run_dir, study["test"]["n_ic"], study["test"]["data_seed"], checkpoint="polished"), checkpoint="polished")
    return {"polished_train_loss": result.train_mse, "polished_test_loss": test, "polish_steps": result.steps,
            "polish_stopped_on": result.stopped_on, "polish_seconds": result.seconds,
            "polish_falling_at_cap": falling_at_cap({"status": "finished", "stopped_on": result.stopped_on,
                                                     "plateau_drop": drop}, rule["plateau_rtol"])}


def falling_at_cap(summary: dict[str, Any], rtol: float) -> bool:
    """Whether a finished run with the plateau rule on ran to its step cap while its loss was still
    falling (its last drop over the rule's window ≥ ``plateau_rtol``, or not measured)."""
    if summary.get("status") != "finished" or summary.get("stopped_on") != "cap":
        return False
    drop = summary.get("plateau_drop")
    return drop is None or not drop < rtol


def _family(model: str, widths: list[int]) -> str:
    return model if model == "kan" or len(widths) <= 3 else f"{model}{len(widths) - 2}"


def _budget(label: str) -> str:
    """'small'/'large' in stage main; the hidden width ('h12') in stage budget."""
    head = label.split("_lr=")[0]
    return head.split("_", 1)[1] if "_" in head else head


def _loss(row: dict[str, Any], key: str) -> float:
    value = row.get(key)
    return math.inf if value is None or row.get("status") != "finished" else float(value)


def _diverged(row: dict[str, Any]) -> bool:
    """Not a finished run: diverged (kanode.divergence), or failed."""
    return row.get("status") != "finished"


# ----------------------------------------------------------- selection
def select(rows: list[dict[str, Any]], stage: str) -> dict[tuple[str, str, str], float]:
    """(system, family, budget) → its learning rate: among the rates with the fewest diverged
    runs, the one with the lowest median validation loss over seeds; never one whose median run
    diverged (a cell where every rate's did has no rate and is not reported)."""
    by: dict[tuple[str, str, str], dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["stage"] == stage:
            by[(r["system"], r["family"], r["budget"])][r["lr"]].append(r)
    picked = {}
    for cell, rates in by.items():
        fewest = min(sum(map(_diverged, runs)) for runs in rates.values())
        medians = {lr: statistics.median(_loss(r, "final_val_loss") for r in runs) for lr, runs in rates.items()
                   if sum(map(_diverged, runs)) == fewest and 2 * fewest < len(runs)}
        if medians:
            picked[cell] = min(medians, key=lambda lr: (medians[lr], lr))
    return picked


def chosen(rows: list[dict[str, Any]], stage: str) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    lrs = select(rows, stage)
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        cell = (r["system"], r["family"], r["budget"])
        if r["stage"] == stage and cell in lrs and r["lr"] == lrs[cell]:
            out[cell].append(r)
    return out


def verdict(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system × budget: KAN against MLP at their chosen rates."""
    from scipy.stats import mannwhitneyu

    cells = chosen(rows, "main")
    table = []
    for system, budget in sorted({(s, b) for s, _, b in cells}):
        kan, mlp = cells.get((system, "kan", budget), []), cells.get((system, "mlp", budget), [])
        if not kan or not mlp:
            continue
        entry: dict[str, Any] = {"system": system, "budget": budget,
                                 "kan_params": kan[0]["n_params"], "mlp_params": mlp[0]["n_params"],
                                 "kan_lr": kan[0]["lr"], "mlp_lr": mlp[0]["lr"], "seeds": min(len(kan), len(mlp))}
        for key in ("final_train_loss", "final_extrap_loss", "test_loss"):
            a = [_loss(r, key) for r in sorted(kan, key=lambda r: r["seed"])]
            b = [_loss(r, key) for r in sorted(mlp, key=lambda r: r["seed"])]
            short = key.replace("final_", "").replace("_loss", "")
            entry[f"kan_{short}"] = _median_range(r for r in a if math.isfinite(r))
            entry[f"mlp_{short}"] = _median_range(r for r in b if math.isfinite(r))
            entry[f"kan_wins_{short}"] = sum(x < y for x, y in zip(a, b))
            finite = [v for v in a + b if math.isfinite(v)]
            cap = 10 * max(finite) if finite else 1.0  # ranks only: a diverged run ranks last
            entry[f"p_{short}"] = float(mannwhitneyu([min(v, cap) for v in a], [min(v, cap) for v in b],
                                                     alternative="two-sided").pvalue)
        for family, runs in (("kan", kan), ("mlp", mlp)):
            drops = [r["plateau"] for r in runs if math.isfinite(r["plateau"])]
            entry[f"{family}_plateau"] = statistics.median(drops) if drops else math.nan
            entry[f"{family}_diverged"] = sum(map(_diverged, runs))
            entry[f"{family}_falling_at_cap"] = sum(bool(r.get("falling_at_cap")) for r in runs)
        table.append(entry)
    return table


def _median_range(values: Iterable[float]) -> tuple[float, float, float]:
    """Median, min and max of ``values`` (NaN for none: every run diverged)."""
    values = list(values)
    if not values:
        return math.nan, math.nan, math.nan
    return statistics.median(values), min(values), max(values)


def budget_curves(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, dict[str, float]]]]:
    """Converged loss (median final training MSE over seeds at the best rate) per size, before
    and after stage polish, with the median test losses; and the log–log slope with its standard
    error per family, ``{"lbfgs": {family: ...}, "polished": {family: ...}}``."""
    cells = chosen(rows, "budget")
    points = []
    for (_, family, budget), runs in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[1][0]["n_params"])):
        spread, polished = _spread(runs), _spread(runs, "polished_train_loss")
        points.append({"family": family, "hidden": budget, "n_params": runs[0]["n_params"], "lr": runs[0]["lr"],
                       "median_train_loss": spread["median"], "min": spread["min"], "max": spread["max"],
                       "seeds": len(runs), "steps": spread["steps"], "diverged": spread["diverged"],
                       "falling_at_cap": spread["falling_at_cap"],
                       "test_median": _median_range(_finite(runs, "test_loss"))[0],
                       "polished_median": polished["median"], "polished_min": polished["min"],
                       "polished_max": polished["max"], "polished_runs": polished["count"],
                       "polish_steps": polished["polish_steps"], "polish_falling_at_cap": polished["polish_falling_at_cap"],
                       "polished_test_median": _median_range(_finite(runs, "polished_test_loss"))[0]})
    return points, {"lbfgs": _slopes(points, "median_train_loss"), "polished": _slopes(points, "polished_median")}


def _finite(runs: list[dict[str, Any]], key: str) -> list[float]:
    """The finite values of ``key`` over the finished runs."""
    return [v for r in runs if math.isfinite(v := _loss(r, key))]


def _slopes(points: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """Per family: least-squares slope of log(points[key]) on log(parameters), its standard error."""
    from scipy.stats import linregress

    slopes = {}
    for family in sorted({p["family"] for p in points}):
        pts = [p for p in points if p["family"] == family and math.isfinite(p[key]) and p[key] > 0]
        if len(pts) >= 3:
            fit = linregress(np.log([p["n_params"] for p in pts]), np.log([p[key] for p in pts]))
            slopes[family] = {"slope": float(fit.slope), "stderr": float(fit.stderr), "points": len(pts)}
    return slopes


def lv_references(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Lotka–Volterra against KAN-ODEs: the lowest training loss of any KAN run of at most
    400 parameters (both stages, any rate; KAN-ODEs: 8.3e-7 at 240), and the MLP [2, 50, 2]
    of the budget stage at its chosen rate (KAN-ODEs: 4.1e-5)."""
    lv = [r for r in rows if r["system"] == "lotka_volterra"]
    kans = [r for r in lv if r["family"] == "kan" and int(r["n_params"]) <= 400 and not _diverged(r)]
    best = min(kans, key=lambda r: _loss(r, "final_train_loss"), default=None)
    out: dict[str, Any] = {"kan_le_400_best": None, "mlp_2_50_2": None}
    if best is not None:
        out["kan_le_400_best"] = {k: best[k] for k in ("final_train_loss", "n_params", "lr", "seed", "run_dir")}
    mlp = chosen(rows, "budget").get(("lotka_volterra", "mlp", "h50"), [])
    if mlp:
        out["mlp_2_50_2"] = _spread(mlp)
    out["reference"] = {}
    for r in lv:
        if r["stage"] == "reference":
            out["reference"].setdefault(r["label"], []).append(r)
    by_label = sorted(out["reference"].items())
    out["reference"] = {label: _spread(runs) for label, runs in by_label}
    out["reference_polished"] = {label: {**_spread(runs, "polished_train_loss"),
                                         "test_median": _median_range(_finite(runs, "test_loss"))[0],
                                         "polished_test_median": _median_range(_finite(runs, "polished_test_loss"))[0]}
                                 for label, runs in by_label}
    return out


def _spread(runs: list[dict[str, Any]], key: str = "final_train_loss") -> dict[str, Any]:
    """Median [min, max] of ``key`` (final training MSE, or ``polished_train_loss``) over the runs of
    one cell that did not diverge and have it (NaN when none; ``count`` of them), the median of their
    plateau measures and of their steps (L-BFGS, and stage polish's), and how many runs diverged and
    how many reached the step cap still falling (L-BFGS, and stage polish)."""
    values = _finite(runs, key)
    median, low, high = _median_range(values)
    drops = [r["plateau"] for r in runs if math.isfinite(r["plateau"])]
    steps = [int(r["steps"]) for r in runs if r.get("steps") is not None]
    polish_steps = [int(r["polish_steps"]) for r in runs if r.get("polish_steps") is not None]
    return {"median": median, "min": low, "max": high, "count": len(values), "lr": runs[0]["lr"],
            "n_params": runs[0]["n_params"], "seeds": len(runs),
            "steps": statistics.median(steps) if steps else math.nan,
            "polish_steps": statistics.median(polish_steps) if polish_steps else math.nan,
            "plateau": statistics.median(drops) if drops else math.nan,
            "diverged": sum(map(_diverged, runs)), "falling_at_cap": sum(bool(r.get("falling_at_cap")) for r in runs),
            "polish_falling_at_cap": sum(bool(r.get("polish_falling_at_cap")) for r in runs)}


def pack_times(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training wall time of each packed ensemble: its members share their steps, so a pack's
    time is its members' largest ``wall_time_s`` (summed over resumes; start-up, data and the
    final evaluation are not in it)."""
    packs: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        packs[(r["stage"], r["system"], r["label"].split("_lr=")[0])].append(r)
    return [{"stage": stage, "system": system, "model": label, "members": len(members),
             "wall_time_s": max(float(m.get("wall_time_s") or 0.0) for m in members)}
            for (stage, system, label), members in sorted(packs.items())]


# ------------------------------------------------------- cost, Hessian
LANCZOS_TOL = 1e-4
"""Relative accuracy of the Lanczos eigenvalues of models too large for the exact Hessian
(above ``kanode.analysis.hessian.EXACT_MAX_PARAMS``; none of the study's are)."""

def step_cost(run_dir: Path, repeats: int = 5) -> tuple[float, int]:
    """Median wall time (s) and peak bytes of one training step of the run's model as a single fit."""
    config = load_config(run_dir / "config.toml").replace(plots=False)
    data = load_data(config).to(torch.float64, "cpu")
    trainer = Trainer(EnsembleVectorField.from_fields([build_field(config, data)]), [data], [config])
    steps = trainer.steps()
    next(steps)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        next(steps)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_bytes(lambda: next(steps))


def _cached(run_dir: Path, name: str, compute: Any, checkpoint: str = "last") -> Any:
    """``compute()`` cached in ``<run_dir>/<name>`` with the mtime of ``checkpoints/<checkpoint>.pt``
    (a rerun of the analysis reuses it while the run has not changed); None from compute is not cached."""
    cache, checkpoint = run_dir / name, run_dir / "checkpoints" / f"{checkpoint}.pt"
    stamp = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("checkpoint_mtime_ns") == stamp:
            return saved["value"]
    value = compute()
    if value is not None:
        cache.write_text(json.dumps({"checkpoint_mtime_ns": stamp, "value": value}) + "\n")
    return value


def hessian_summary(run_dir: Path, compute: bool = True, exact_max: int = EXACT_MAX_PARAMS,
                    k: int = 20, max_params: int | None = None) -> dict[str, Any]:
    """λ_max, trace and the count of eigenvalues above 1e-6 λ_max of the final model's loss
    (cached in ``<run_dir>/study_hessian.json``); NaN when not ``compute`` and not cached, or
    for a model of more than ``max_params`` parameters. Exact up to ``exact_max`` parameters,
    else the ``k`` largest eigenvalues by Lanczos."""
    skipped = {"lambda_max": math.nan, "trace": math.nan, "n_above": math.nan, "method": "not computed"}

    def spectrum() -> dict[str, Any] | None:
        if not compute:
            return None
        n = int((read_summary(run_dir / "summary.json") or {}).get("n_params") or 0)
        if max_params is not None and n > max_params:
            return None
        exact = n <= exact_max
        try:
            result = run_hessian(run_dir, method="exact" if exact else "lanczos", k=k, tol=LANCZOS_TOL)
        except ConfigError as exc:
            return {"lambda_max": math.nan, "trace": math.nan, "n_above": math.nan, "method": str(exc)[:60]}
        eig = np.asarray(result.eigenvalues)
        top = float(eig.max())
        above = int((eig > 1e-6 * top).sum())
        if not exact and above >= k:  # all k largest are above: the count is not known
            above = math.nan
        return {"lambda_max": top, "trace": float(result.trace), "n_above": above,
                "method": result.method, "seconds": result.time_s}

    return _cached(run_dir, "study_hessian.json", spectrum) or skipped


# --------------------------------------------------------------- driver
def analyse(study: dict[str, Any], out: Path, results: Path, timing: dict[str, float],
            hessians: bool = True, started: float | None = None) -> None:
    """Every table and figure of the study into ``results``, from the runs under ``out``;
    records its own wall time in ``timing["analyse"]`` before writing summary.md, and with
    ``started`` (the ``time.perf_counter()`` of a study run from scratch) the whole study's in
    ``timing["total_from_scratch_s"]``."""
    from study_figures import budget_figure, generalisation_figure, loss_figure

    start = time.perf_counter()
    rows = collect(out, study)
    _write_csv(results / "runs.csv", rows, COLUMNS)
    table = verdict(rows)
    cells = chosen(rows, "main")
    for entry in table:
        for family in ("kan", "mlp"):
            runs = sorted(cells[(entry["system"], family, entry["budget"])],
                          key=lambda r: _loss(r, "test_loss"))
            median_run = out / runs[len(runs) // 2]["run_dir"]
            entry[f"{family}_median_run"] = runs[len(runs) // 2]["run_dir"]
            seconds, nbytes = step_cost(median_run)
            entry[f"{family}_step_ms"] = 1e3 * seconds
            entry[f"{family}_step_peak_kib"] = nbytes / 1024
            for key, value in hessian_summary(median_run, compute=hessians, **study.get("hessian", {})).items():
                entry[f"{family}_hessian_{key}"] = value
    _write_csv(results / "verdict.csv", [_flat(e) for e in table])
    points, slopes = budget_curves(rows)
    _write_csv(results / "budget.csv", points)
    (results / "slopes.json").write_text(json.dumps(slopes, indent=1) + "\n")
    packs = pack_times(rows)
    _write_csv(results / "packs.csv", packs)
    for stage in ("main", "budget", "reference"):
        timing[f"{stage}_packs_sum"] = sum(p["wall_time_s"] for p in packs if p["stage"] == stage)
    references = lv_references(rows)
    (results / "lv_references.json").write_text(json.dumps(references, indent=1) + "\n")
    loss_figure(out, cells).savefig(results / "loss_curves.png", dpi=130)
    budget_figure(points, slopes, references["reference"], n_fitted=fitted_values(out / "budget")).savefig(
        results / "budget.png", dpi=130)
    generalisation_figure(out, table).savefig(results / "generalisation.png", dpi=130)
    timing["analyse"] = time.perf_counter() - start  # summary.md is the last file written
    if started is not None:
        timing["total_from_scratch_s"] = time.perf_counter() - started
    (results / "summary.md").write_text(summary_markdown(table, points, slopes, timing, references, rows))


def _flat(entry: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in entry.items():
        if isinstance(value, tuple):
            flat[f"{key}_median"], flat[f"{key}_min"], flat[f"{key}_max"] = value
        else:
            flat[key] = value
    return flat


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> None:
    if not rows:
        path.write_text("")
        return
    names = list(columns or rows[0])
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plateau_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per stage: how many runs the plateau rule stopped, how many ran to the cap (and how many
    of those were still falling), how many diverged; empty when no run had the rule on."""
    lines = []
    for stage in ("main", "budget", "reference"):
        runs = [r for r in rows if r["stage"] == stage]
        ruled = [r for r in runs if r.get("stopped_on") and not _diverged(r)]  # finished, with the rule on
        if not ruled:
            continue
        capped = [r for r in ruled if r["stopped_on"] == "cap"]
        lines.append(f"- {stage}: {len(ruled) - len(capped)} of {len(runs)} runs stopped on the plateau rule, "
                     f"{len(capped)} ran to the cap ({sum(bool(r.get('falling_at_cap')) for r in capped)} of them "
                     f"still falling), {sum(map(_diverged, runs))} diverged")
    polished = [r for r in rows if r.get("polish_stopped_on")]
    if polished:
        count = {how: sum(r["polish_stopped_on"] == how for r in polished) for how in ("plateau", "cap", "stalled")}
        lines.append(f"- polish: {count['plateau']} of {len(polished)} polished runs stopped on its plateau rule, "
                     f"{count['cap']} ran to its cap ({sum(bool(r.get('polish_falling_at_cap')) for r in polished)} "
                     f"of them still falling), {count['stalled']} stalled (no step lowered the loss)")
    if not lines:
        return []
    return ["", "Plateau rule (`stopped_on`, `plateau_drop`, `falling_at_cap` in runs.csv):", "", *lines]


def _slope_text(slopes: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{f} {s['slope']:.2f} ± {s['stderr']:.2f} ({s['points']} sizes)" for f, s in slopes.items()) or "–"


def _fmt(value: tuple[float, float, float]) -> str:
    return f"{value[0]:.2e} [{value[1]:.1e}, {value[2]:.1e}]"


def summary_markdown(table: list[dict[str, Any]], points: list[dict[str, Any]],
                     slopes: dict[str, dict[str, dict[str, float]]], timing: dict[str, float],
                     references: dict[str, Any], rows: Sequence[dict[str, Any]] = ()) -> str:
    lines = ["# KAN vs MLP study", "",
             "Median [min, max] over seeds at each family's chosen learning rate (lowest median validation "
             "loss). Wins: seeds (paired by seed) where the KAN's loss is lower. p: two-sided Mann–Whitney U.",
             "Medians and ranges are over the runs that did not diverge; *diverged* counts the others (they "
             "rank last in the wins and the test). *falling at cap*: runs that reached the L-BFGS step cap "
             "while their loss still fell by at least the plateau rule's tolerance (not converged).",
             "", "| system | budget | params KAN / MLP | lr KAN / MLP | diverged KAN / MLP | falling at cap KAN / MLP | "
             "train KAN | train MLP | wins | p | test KAN | test MLP | wins | p | extrap KAN | extrap MLP | p |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        lines.append(f"| {e['system']} | {e['budget']} | {e['kan_params']} / {e['mlp_params']} | "
                     f"{e['kan_lr']:g} / {e['mlp_lr']:g} | {e['kan_diverged']} / {e['mlp_diverged']} | "
                     f"{e['kan_falling_at_cap']} / {e['mlp_falling_at_cap']} | {_fmt(e['kan_train'])} | {_fmt(e['mlp_train'])} | "
                     f"{e['kan_wins_train']}/{e['seeds']} | {e['p_train']:.3f} | {_fmt(e['kan_test'])} | "
                     f"{_fmt(e['mlp_test'])} | {e['kan_wins_test']}/{e['seeds']} | {e['p_test']:.3f} | "
                     f"{_fmt(e['kan_extrap'])} | {_fmt(e['mlp_extrap'])} | {e['p_extrap']:.3f} |")
    lines += ["", "Cost of one training step (single fit, median run), Hessian of the median run's loss, and the "
              "median relative drop of the training loss over the last 10 % of the L-BFGS steps (small: plateaued):", "",
              "| system | budget | step ms KAN / MLP | peak KiB KAN / MLP | λmax KAN / MLP | trace KAN / MLP | "
              "#λ > 1e-6 λmax KAN / MLP | loss drop, last 10 % of L-BFGS KAN / MLP |",
              "|---|---|---|---|---|---|---|---|"]
    for e in table:
        lines.append(f"| {e['system']} | {e['budget']} | {e['kan_step_ms']:.1f} / {e['mlp_step_ms']:.1f} | "
                     f"{e['kan_step_peak_kib']:.0f} / {e['mlp_step_peak_kib']:.0f} | "
                     f"{e['kan_hessian_lambda_max']:.2e} / {e['mlp_hessian_lambda_max']:.2e} | "
                     f"{e['kan_hessian_trace']:.2e} / {e['mlp_hessian_trace']:.2e} | "
                     f"{e['kan_hessian_n_above']} / {e['mlp_hessian_n_above']} | "
                     f"{e['kan_plateau']:.1%} / {e['mlp_plateau']:.1%} |")
    lines += ["", "Lotka–Volterra budget curves (median final training MSE at the best rate):", "",
              "| family | hidden | params | lr | median | min | max | steps (median) | diverged | falling at cap |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['family']} | {p['hidden']} | {p['n_params']} | {p['lr']:g} | "
                     f"{p['median_train_loss']:.2e} | {p['min']:.2e} | {p['max']:.2e} | {p['steps']:.0f} | "
                     f"{p['diverged']}/{p['seeds']} | {p['falling_at_cap']}/{p['seeds']} |")
    lines += ["", "Log–log slopes (loss ∝ N^slope, least squares over sizes, ± standard error), at the L-BFGS "
              "plateau: " + _slope_text(slopes["lbfgs"]) + "; after stage polish: " + _slope_text(slopes["polished"]), ""]
    if any(p["polished_runs"] for p in points):
        lines += ["Stage polish (Levenberg–Marquardt from each run's L-BFGS plateau, study.toml [polish]): the same "
                  "runs' training MSE before and after, and their test MSE (new initial conditions):", "",
                  "| family | hidden | params | L-BFGS median | polished median | min | max | LM steps (median) | "
                  "LM falling at cap | test, L-BFGS | test, polished |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in points:
            lines.append(f"| {p['family']} | {p['hidden']} | {p['n_params']} | {p['median_train_loss']:.2e} | "
                         f"{p['polished_median']:.2e} | {p['polished_min']:.2e} | {p['polished_max']:.2e} | "
                         f"{p['polish_steps']:.0f} | {p['polish_falling_at_cap']}/{p['polished_runs']} | "
                         f"{p['test_median']:.2e} | {p['polished_test_median']:.2e} |")
        lines.append("")
    small = [p for p in points if p["family"] == "kan" and int(p["n_params"]) <= 400]
    if small:
        lines.append("Median training MSE of the Lotka–Volterra KANs of at most 400 parameters (goal <= 1e-6): "
                     + "; ".join(f"{p['n_params']} p. {p['median_train_loss']:.2e} at the L-BFGS plateau, "
                                 f"{p['polished_median']:.2e} polished" for p in small) + ".")
    kan, mlp = references["kan_le_400_best"], references["mlp_2_50_2"]
    if kan:
        lines.append(f"Best KAN of at most 400 parameters on Lotka–Volterra: training MSE {kan['final_train_loss']:.2e} "
                     f"({kan['n_params']} parameters, lr {kan['lr']:g}, seed {kan['seed']}; KAN-ODEs: 8.3e-7 at 240).")
    if mlp:
        lines.append(f"MLP [2, 50, 2] ({mlp['n_params']} parameters, lr {mlp['lr']:g}): median {mlp['median']:.2e} "
                     f"[{mlp['min']:.1e}, {mlp['max']:.1e}] over {mlp['seeds']} seeds (KAN-ODEs: 4.1e-5).")
    if references.get("reference"):
        lines += ["", "Stage reference (the same cells refitted to the stricter plateau of study.toml [reference]):", "",
                  "| model | params | lr | steps (median) | median | min | max | loss drop, last 10 % of L-BFGS | "
                  "diverged | falling at cap |", "|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in references["reference"].items():
            lines.append(f"| {label} | {r['n_params']} | {r['lr']:g} | {r['steps']:.0f} | {r['median']:.2e} | "
                         f"{r['min']:.2e} | {r['max']:.2e} | {r['plateau']:.1%} | {r['diverged']}/{r['seeds']} | "
                         f"{r['falling_at_cap']}/{r['seeds']} |")
    polished = {k: v for k, v in references.get("reference_polished", {}).items() if v["count"]}
    if polished:
        lines += ["", "Stage reference after stage polish:", "",
                  "| model | params | L-BFGS median | polished median | min | max | LM steps (median) | "
                  "LM falling at cap | test, L-BFGS | test, polished |", "|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in polished.items():
            lines.append(f"| {label} | {r['n_params']} | {references['reference'][label]['median']:.2e} | "
                         f"{r['median']:.2e} | {r['min']:.2e} | {r['max']:.2e} | {r['polish_steps']:.0f} | "
                         f"{r['polish_falling_at_cap']}/{r['count']} | {r['test_median']:.2e} | "
                         f"{r['polished_test_median']:.2e} |")
    lines += plateau_lines(rows)
    lines += ["", "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items()),
              "(`<stage>_packs_sum`: the packs' training times added up, one after another; packs.csv lists them.)", ""]
    return "\n".join(lines)
