"""KAN vs MLP, tuned and multi-seed, on all five systems (issue 12; settings in study.toml).

Stages (each resumable: rerunning the command skips finished fits and resumes
interrupted ones):

1. ``main``    five systems × {KAN, MLP} × two parameter budgets × five
               learning rates × five seeds, one packed ensemble per
               (system, model) of 25 members (kanode.sweep, --pack auto);
2. ``budget``  Lotka–Volterra, KAN and MLPs (1 and 2 hidden layers) over a
               range of sizes, five learning rates × three seeds;
3. ``reference`` KAN-ODEs' Lotka–Volterra pair (study.toml [reference]:
               KAN [2, 6, 2] and MLP [2, 50, 2]) refitted at the rates the
               budget stage chose, with a longer L-BFGS phase;
4. ``polish``  Levenberg–Marquardt (kanode.polish) from the last checkpoint of
               every budget-stage run at its cell's chosen rate and of every
               reference run, to study.toml [polish]'s plateau: is the L-BFGS
               plateau the model's or the optimiser's?
5. ``analyse`` per (system, family, budget): the learning rate with the lowest
               median validation loss; at it, training / extrapolation / test
               losses over the seeds, win counts, a Mann–Whitney U test, time
               and peak memory of one training step, the Hessian of the median
               run; log–log slopes of the budget curves; figures and tables.

Usage::

    python experiments/study.py [--smoke] [--out runs/study] [--results DIR]
                                [--workers 2] [--stages main,budget,reference,polish,analyse]

Writes ``runs.csv`` (one row per fit), ``verdict.csv``, ``budget.csv``,
``summary.md``, ``timing.json`` (seconds per stage; ``total_from_scratch_s``,
the wall time of one uninterrupted run of every stage from an empty ``--out``,
only when that is what ran) and the figures into ``--results``
(default ``experiments/results/study``, or ``<out>/results`` with --smoke).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kanode.sweep import SweepConfig, expand, make_backend, run_sweep, threads_per_worker  # noqa: E402

STAGES = ("main", "budget", "reference", "polish", "analyse")


def load_study(path: Path, smoke: bool) -> dict[str, Any]:
    """study.toml with the [smoke] overrides applied when ``smoke``."""
    with path.open("rb") as fh:
        study = tomllib.load(fh)
    if smoke:
        s = study["smoke"]
        for key in ("steps", "lbfgs_steps", "plateau_steps", "plateau_rtol", "eval_every", "checkpoint_every",
                    "batch_time"):
            if key in s:
                study["common"][key] = s[key]
        for section in ("main", "budget"):
            study[section]["seeds"] = s["seeds"]
            study[section]["lr"] = s["lr"]
        study["main"]["systems"] = s["systems"]
        study["per_system"] = {}  # the smoke's short schedule for every system
        study["hessian"] = {"max_params": s["hessian_max_params"]}
        study["reference"].update(labels=s["reference_labels"], lbfgs_steps=s["reference_lbfgs_steps"],
                                  plateau_steps=s["reference_plateau_steps"],
                                  plateau_rtol=s["reference_plateau_rtol"])
        for family in ("kan", "mlp1", "mlp2"):
            study["budget"][family] = s[f"budget_{family}"]
        study["polish"] = {k: s[f"polish_{k}"] for k in ("max_steps", "plateau_steps", "plateau_rtol")}
    return study


def main_sweep(study: dict[str, Any], name: str) -> SweepConfig:
    """Stage 1 as a kanode sweep: the budgets are model labels, the rates a grid axis."""
    m = study["main"]
    return SweepConfig.from_dict({"name": name, "systems": m["systems"], "seeds": m["seeds"],
                                  "base": dict(study["common"]), "models": m["models"],
                                  "per_system": study.get("per_system", {}),
                                  "grid": {"lr": m["lr"]}}, source="study.toml [main]")


def budget_sweep(study: dict[str, Any], name: str) -> SweepConfig:
    """Stage 2: one model label per (family, hidden width) on Lotka–Volterra."""
    b = study["budget"]
    return SweepConfig.from_dict({"name": name, "systems": ["lotka_volterra"], "seeds": b["seeds"],
                                  "base": dict(study["common"]), "models": budget_models(study),
                                  "per_system": study.get("per_system", {}),
                                  "grid": {"lr": b["lr"]}}, source="study.toml [budget]")


def budget_models(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The budget stage's model labels: kan_h<h>, mlp1_h<h>, mlp2_h<h>."""
    b = study["budget"]
    models: dict[str, dict[str, Any]] = {}
    for h in b["kan"]:
        models[f"kan_h{h}"] = {"model": "kan", "hidden": [h]}
    for h in b["mlp1"]:
        models[f"mlp1_h{h}"] = {"model": "mlp", "hidden": [h]}
    for h in b["mlp2"]:
        models[f"mlp2_h{h}"] = {"model": "mlp", "hidden": [h, h]}
    return models


def reference_sweep(study: dict[str, Any], name: str, budget_out: Path) -> SweepConfig:
    """Stage 3: the [reference] labels of the budget stage, each at the rate the budget stage
    chose for it on validation, with [reference]'s L-BFGS cap and plateau rule (no per-system
    override)."""
    from study_report import _budget, _family, collect, select

    r, models = study["reference"], budget_models(study)
    unknown = [label for label in r["labels"] if label not in models]
    if unknown:
        raise SystemExit(f"study.py: error: [reference] labels {unknown} are not budget-stage models "
                         f"({', '.join(models)})")
    rates = select(collect(budget_out.parent, study, stages=(budget_out.name,), test=False), budget_out.name)
    picked = {}
    for label in r["labels"]:
        model = models[label]
        family = _family(model["model"], [2, *model["hidden"], 2])
        lr = rates.get(("lotka_volterra", family, _budget(label)))
        if lr is None:
            raise SystemExit(f"study.py: error: stage reference needs stage budget's runs of {label} "
                             f"in {budget_out}; run --stages budget first")
        picked[label] = {**model, "lr": lr}
    base = dict(study["common"], **{k: r[k] for k in ("lbfgs_steps", "plateau_steps", "plateau_rtol")})
    return SweepConfig.from_dict({"name": name, "systems": ["lotka_volterra"], "seeds": study["budget"]["seeds"],
                                  "base": base, "models": picked}, source="study.toml [reference]")


def polish_targets(study: dict[str, Any], out: Path) -> list[Path]:
    """The runs stage ``polish`` polishes: every finished budget-stage run at its cell's chosen rate
    (on validation, as the tables choose) and every finished reference run, largest models first."""
    from study_report import chosen, collect

    rows = collect(out, study, stages=("budget", "reference"), test=False)
    picked = [r for runs in chosen(rows, "budget").values() for r in runs]
    picked += [r for r in rows if r["stage"] == "reference"]
    picked = [r for r in picked if r["status"] == "finished"]
    return [out / r["run_dir"] for r in sorted(picked, key=lambda r: -int(r["n_params"]))]


def _polish_one(run: Path, settings: dict[str, Any]) -> tuple[Path, str | None]:
    """Polish one run in a worker process (one torch thread); (run, error message or None)."""
    import torch

    from kanode.config import ConfigError
    from kanode.polish import polish_run

    torch.set_num_threads(1)
    try:
        polish_run(run, **settings)
    except (ConfigError, ValueError, RuntimeError) as exc:
        return run, str(exc)
    return run, None


def polish_stage(study: dict[str, Any], out: Path, workers: int) -> tuple[float, int]:
    """Stage 4 (resumable: a run with its ``polish.json`` is done); (wall seconds, runs failed)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from kanode.polish import POLISH_FILE
    from tqdm import tqdm

    start = time.perf_counter()
    todo = [run for run in polish_targets(study, out) if not (run / POLISH_FILE).exists()]
    settings = {k: study["polish"][k] for k in ("max_steps", "plateau_steps", "plateau_rtol")}
    failed = 0
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_polish_one, run, settings) for run in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="Study stage polish", unit="run"):
            run, error = future.result()
            if error is not None:
                failed += 1
                print(f"polish {run}: {error}", file=sys.stderr, flush=True)
    return time.perf_counter() - start, failed


def run_stage(sweep: SweepConfig, out: Path, workers: int) -> tuple[float, int]:
    """Run (or resume) a sweep with packing; (wall seconds, runs not finished/diverged)."""
    specs = expand(sweep)
    start = time.perf_counter()
    rows = run_sweep(specs, out, make_backend("local", workers), threads=threads_per_worker(workers),
                     title=f"Study stage {sweep.name}", progress=True, pack=True)
    failed = sum(r.status not in ("finished", "diverged") for r in rows)
    return time.perf_counter() - start, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).with_name("study.toml")))
    parser.add_argument("--smoke", action="store_true", help="every stage on study.toml's [smoke] grid")
    parser.add_argument("--out", default=None, help="runs directory (default runs/study[-smoke])")
    parser.add_argument("--results", default=None, help="tables and figures (default: see above)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--skip-hessians", action="store_true",
                        help="analyse: report only the Hessians already computed (cached), NaN for the rest")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    study = load_study(Path(args.config), args.smoke)
    out = Path(args.out or ("runs/study-smoke" if args.smoke else "runs/study"))
    results = Path(args.results or (out / "results" if args.smoke else ROOT / "experiments/results/study"))
    results.mkdir(parents=True, exist_ok=True)
    timing_path = results / "timing.json"
    started = time.perf_counter()
    # From scratch: every stage, no fit started before. Only then is the wall time of the whole
    # study measured (total_from_scratch_s); a resumed study adds each stage's remaining time.
    from_scratch = set(stages) == set(STAGES) and not any(out.glob("*/*/*/seed*/metrics.csv"))
    timing = {} if from_scratch or not timing_path.exists() else json.loads(timing_path.read_text())
    failed = 0
    builders = {"main": lambda: main_sweep(study, "main"), "budget": lambda: budget_sweep(study, "budget"),
                "reference": lambda: reference_sweep(study, "reference", out / "budget")}
    for stage in ("main", "budget", "reference", "polish"):
        if stage in stages:
            seconds, bad = (polish_stage(study, out, args.workers) if stage == "polish"
                            else run_stage(builders[stage](), out / stage, args.workers))
            timing[stage] = timing.get(stage, 0.0) + seconds  # a resumed stage adds its remaining time
            failed += bad
            timing_path.write_text(json.dumps(timing, indent=1) + "\n")
            print(f"stage {stage}: {seconds:.0f} s ({bad} runs failed)", flush=True)
    if "analyse" in stages:
        from study_report import analyse

        analyse(study, out, results, timing, hessians=not args.skip_hessians,  # sets timing["analyse"]
                started=started if from_scratch and not failed else None)      # and the total
        timing_path.write_text(json.dumps(timing, indent=1) + "\n")
        print(f"stage analyse: {timing['analyse']:.0f} s; results in {results}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
