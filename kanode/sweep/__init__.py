"""Many fits at once: a grid of systems × models × seeds, run locally or on Ray.

>>> from kanode.sweep import load_sweep, expand, make_backend, run_sweep
>>> sweep = load_sweep("experiments/figure2.toml")            # doctest: +SKIP
>>> specs = expand(sweep, smoke=True)                          # doctest: +SKIP
>>> rows = run_sweep(specs, "runs/figure2-smoke", make_backend("local", 2))  # doctest: +SKIP

Command line: ``python -m kanode.sweep CONFIG.toml [--out DIR] [--workers N]
[--backend local|ray] [--ray-address ADDR] [--pack auto|off] [--smoke] [--list]``. The config
format is described in :mod:`kanode.sweep.grid`.
"""

from .backends import (Backend, LocalBackend, PackTask, RayBackend, RunOutcome, Runner, RunTask,
                       make_backend, run_fit_subprocess, run_task, threads_per_worker)
from .driver import Action, plan, run_sweep
from .grid import RunSpec, SweepConfig, SweepError, estimate_params, expand, load_sweep
from .results import COLUMNS, ResultRow, collect_results, write_results_csv, write_summary_md

__all__ = [
    "COLUMNS",
    "Action",
    "Backend",
    "LocalBackend",
    "PackTask",
    "RayBackend",
    "ResultRow",
    "RunOutcome",
    "RunSpec",
    "RunTask",
    "Runner",
    "SweepConfig",
    "SweepError",
    "collect_results",
    "estimate_params",
    "expand",
    "load_sweep",
    "make_backend",
    "plan",
    "run_fit_subprocess",
    "run_sweep",
    "run_task",
    "threads_per_worker",
    "write_results_csv",
    "write_summary_md",
]
