"""One neural-ODE fit from the command line: ``python -m kanode.fit`` (a leaf: nothing in
the library imports it).

With no arguments it fits a KAN [2, 10, 2] (grid 5) to Lotka–Volterra with
the KAN-ODE paper's protocol: train on t ∈ [0, 3.5], extrapolate to t = 14.
``--seeds`` fits an ensemble (:mod:`kanode.ensemble.cli`). The library function
is :func:`kanode.fitting.fit`, re-exported here (``from kanode.fit import fit``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .build import build_field, build_model
from .cli_args import build_parser, given_settings, overrides_from_args
from .config import ConfigError, FitConfig, load_config
from .data import describe_split, overfit_warning
from .exit_codes import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_FAILED, EXIT_OK
from .fitting import fit
from .outdirs import check_out_dir
from .selection import resolve_recipe, write_selection
from .result import FitResult
from .runs import default_run_dir, is_ensemble_dir

__all__ = ["fit", "FitResult", "build_model", "build_field", "main"]


def default_widths(config: FitConfig, dim: int) -> list[int]:
    """The widths the fit builds (kept for callers; see :meth:`FitConfig.resolved_widths`)."""
    return config.resolved_widths(dim)


def print_summary(result: FitResult) -> None:
    s = result.summary
    fmt = lambda v: "n/a" if v is None else f"{v:.3e}"  # noqa: E731
    print(f"{s['status']}: {s['model']} ({s['n_params']} parameters) on {s['system']}, "
          f"{s['steps']} steps in {s['wall_time_s']:.1f} s")
    print(f"  train MSE {fmt(s['final_train_loss'])} (best {fmt(s['best_train_loss'])}), "
          f"held-out MSE {fmt(s['final_val_loss'])}, extrapolation MSE {fmt(s['final_extrap_loss'])}")
    if "n_observed_train" in s:
        print(f"  data: {describe_split(s)}")
        warning = overfit_warning(s["n_params"], s["n_observed_train"])
        if warning and s.get("data_file") and s["status"] != "diverged":  # measured data
            print(f"kanode: warning: {warning}", file=sys.stderr)
    start = s.get("fitted_initial_state")
    if start is not None:
        shown = "; ".join(", ".join(f"{n} {v:.4g}" for n, v in zip(start["state_names"], row))
                          for row in start["fitted"])
        print(f"  fitted initial state at t = {start['t0']:g}: {shown} (summary.json)")
    if s.get("compile_s"):
        print(f"  compiled training step (compile {s['compile_s']:.1f} s in this process, included "
              "in the time; cached across processes)")
    if s["reason"]:
        print(f"  reason: {s['reason']}")
    if result.run_dir is not None:
        print(f"  run directory: {result.run_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = overrides_from_args(args)
        if args.out is not None and args.resume is None:  # before any work (kanode.outdirs)
            check_out_dir(args.out, "ensemble" if args.seeds is not None else "run")
        if args.seeds is not None or (args.resume is not None and is_ensemble_dir(args.resume)):
            from .ensemble.cli import run_ensemble
            return run_ensemble(args, overrides)
        if args.resume is not None:
            result = fit(resume=args.resume, quiet=args.quiet, **overrides)
        else:
            config = load_config(args.config) if args.config is not None else FitConfig()
            given = given_settings(args, overrides)
            recipe = resolve_recipe(config.replace(**overrides), given)
            config = recipe.config
            if recipe.applied:
                print(recipe.describe())
            out = Path(args.out) if args.out is not None else check_out_dir(default_run_dir(config), "run")
            result = fit(config, out=out, quiet=args.quiet, given=given)
            if recipe.selection is not None:
                write_selection(out, recipe.selection)
    except ConfigError as exc:
        print(f"kanode: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print_summary(result)
    if result.summary["status"] == "diverged":
        print(f"kanode: error: training diverged ({result.summary['reason']}); the last good "
              f"checkpoint is {result.run_dir}/checkpoints/last.pt", file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_OK if result.summary["status"] == "finished" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
