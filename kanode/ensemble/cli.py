"""``python -m kanode.fit --seeds 0-31``: one ensemble, one run directory per seed.

The parent directory (``--out``) holds ``ensemble.json`` (written before the
first step) and ``seed-<s>/`` run directories; ``--resume`` on the parent
continues the whole ensemble, after a crash or kill too. Exit
status: 0 when every member finished, 3 when some diverged (the others are
finished and saved), 2 for bad input. A command-line leaf: only :mod:`kanode.fit` imports it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from kanode.cli_args import given_settings, parse_seeds
from kanode.config import ConfigError, FitConfig, load_config
from kanode.data import describe_split, overfit_warning
from kanode.exit_codes import EXIT_DIVERGED, EXIT_FAILED, EXIT_OK
from kanode.fitting import fit_ensemble, resume_dirs
from kanode.selection import resolve_recipe, write_selection
from kanode.result import FitResult
from kanode.runs import ENSEMBLE_FILE, default_run_dir

__all__ = ["run_ensemble"]


def run_ensemble(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """Fit (or resume) the ensemble the command line asks for; print a table; return the status."""
    if args.resume is not None and args.seeds is not None:
        raise ConfigError("--seeds and --resume cannot be combined: a resumed ensemble keeps its members")
    if args.resume is not None:
        results = fit_ensemble(resume=resume_dirs(args.resume), quiet=args.quiet, **overrides)
        parent = Path(args.resume)
    else:
        seeds = parse_seeds(args.seeds)
        config = load_config(args.config) if args.config is not None else FitConfig()
        given = given_settings(args, overrides)
        recipe = resolve_recipe(config.replace(**overrides), given)
        config = recipe.config
        if recipe.applied:
            print(recipe.describe())
        parent = Path(args.out) if args.out is not None else default_run_dir(config)
        if (parent / ENSEMBLE_FILE).exists():
            raise ConfigError(f"{parent} already holds an ensemble ({ENSEMBLE_FILE}); continue it with "
                              f"--resume {parent} (it resumes every member where it stopped) or choose "
                              "another --out")
        outs = [parent / f"seed-{seed}" for seed in seeds]
        configs = [config.replace(seed=seed) for seed in seeds]
        # ConfigError before any file is written; ensemble.json is written before the first step
        results = fit_ensemble(configs, outs, quiet=args.quiet, parent=parent, given=given)
        if recipe.selection is not None:  # the members share the l2 chosen for the config's seed
            write_selection(parent, recipe.selection)
    _print_table(results, parent)
    statuses = [r.summary["status"] for r in results]
    if "diverged" in statuses:
        bad = [r.summary["seed"] for r in results if r.summary["status"] == "diverged"]
        print(f"kanode: error: seeds {bad} diverged and were frozen at their last good step; the "
              "other members finished", file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_OK if all(s == "finished" for s in statuses) else EXIT_FAILED


def _print_table(results: list[FitResult], parent: Path) -> None:
    fmt = lambda v: "n/a" if v is None else f"{v:.3e}"  # noqa: E731
    first = results[0].summary
    print(f"{len(results)} × {first['model']} ({first['n_params']} parameters) on {first['system']}, "
          f"{first['steps']} steps in {first['wall_time_s']:.1f} s (one ensemble)")
    print(f"  {'seed':>6}  {'status':<9} {'train MSE':>10} {'held-out':>10} {'extrap':>10}")
    for r in results:
        s = r.summary
        print(f"  {s['seed']:>6}  {s['status']:<9} {fmt(s['final_train_loss']):>10} "
              f"{fmt(s['final_val_loss']):>10} {fmt(s['final_extrap_loss']):>10}")
    train = [r.summary["final_train_loss"] for r in results if r.summary["status"] == "finished"]
    if train:
        print(f"  median train MSE {statistics.median(train):.3e} [{min(train):.3e}, {max(train):.3e}] "
              f"over {len(train)} finished members")
    if "n_observed_train" in first:
        print(f"  data (each member): {describe_split(first)}")
        warning = overfit_warning(first["n_params"], first["n_observed_train"])
        if warning and first.get("data_file"):  # measured data
            print(f"kanode: warning: {warning}", file=sys.stderr)
    print(f"  run directories: {parent}/seed-*")
