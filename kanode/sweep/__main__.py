"""``python -m kanode.sweep CONFIG.toml``: run a grid of fits (see :mod:`kanode.sweep.grid`).

Exit status: 0 when every run finished or diverged (a diverged run is a
result, recorded with its reason), 1 when some run failed (crash or rejected
input; see ``<out>/logs``), 2 for bad input (including a sweep directory
in use by another sweep, or a cell's run directory in use by another
process), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kanode.config import ConfigError

from ..cli_args import OneLineParser
from ..exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from ..outdirs import check_out_dir
from .backends import make_backend, threads_per_worker
from .driver import check_not_busy, plan, run_sweep, sweep_lock
from .grid import estimate_params, expand, load_sweep


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m kanode.sweep",
                description="Run a grid of kanode.fit runs (systems × models × seeds) "
                            "locally or on Ray. Rerunning skips finished runs and resumes "
                            "interrupted ones.")
    p.add_argument("config", help="sweep TOML file (format: see kanode/sweep/grid.py)")
    p.add_argument("--out", help="sweep directory (default: runs/<name>, or runs/<name>-smoke)")
    p.add_argument("--workers", type=int, default=2,
                   help="concurrent runs; each gets cores/workers torch threads (default: 2)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local process pool (default) or Ray tasks")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster address for ray.init (default: start a local Ray)")
    p.add_argument("--pack", choices=("auto", "off"), default="auto",
                   help="auto (default): cells that can share a solve (same data shape, model "
                        "shape, solver, schedule) run as one ensemble each; off: one process per cell")
    p.add_argument("--smoke", action="store_true",
                   help="apply the config's [smoke] overrides and its seeds "
                        "(default: the first seed)")
    p.add_argument("--list", action="store_true",
                   help="print the runs (widths, parameter counts, skip/resume/start) and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-run lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    lock = None
    try:
        sweep = load_sweep(args.config)
        specs = expand(sweep, smoke=args.smoke)
        out = check_out_dir(args.out or f"runs/{sweep.name}{'-smoke' if args.smoke else ''}", "sweep")
        if args.list:
            _print_plan(specs, out)
            return 0
        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {args.workers}")
        if args.ray_address and args.backend != "ray":
            raise ConfigError("--ray-address needs --backend ray")
        backend = make_backend(args.backend, args.workers, args.ray_address)
        lock = sweep_lock(out).acquire()  # one sweep per directory, until this one ends
        # refuse a directory made by a different config, or a cell in use, before writing
        check_not_busy(plan(specs, out))
        shutil.copyfile(args.config, out / "sweep.toml")
        with (out / "commands.log").open("a") as fh:  # provenance: how this directory was made
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}  python -m kanode.sweep "
                     f"{shlex.join(sys.argv[1:] if argv is None else list(argv))}\n")
    except (ConfigError, OSError) as exc:
        if lock is not None:
            lock.release()
        print(f"kanode: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"sweep {sweep.name!r}: {len(specs)} runs into {out} "
          f"({args.backend}, {args.workers} workers)", file=sys.stderr)
    try:
        rows = run_sweep(specs, out, backend,
                         threads=threads_per_worker(args.workers), title=f"Sweep {sweep.name}",
                         progress=not args.no_progress, lock=False, pack=args.pack == "auto")
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume ({out})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as exc:  # a cell taken by another process since the check above
        print(f"kanode: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        lock.release()
    print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}")
    return EXIT_FAILED if any(r.status not in ("finished", "diverged") for r in rows) else EXIT_OK


def _print_plan(specs, out: Path) -> None:
    import systems

    print(f"{'run':<44} {'action':<7} {'widths':<16} {'params':>7}")
    for action in plan(specs, out):
        cfg = action.spec.config
        dim = systems.get(cfg.system).dim
        widths = cfg.widths or "default"
        params = estimate_params(cfg, dim)
        print(f"{action.spec.key:<44} {action.kind:<7} {str(widths):<16} "
              f"{'?' if params is None else params:>7}")


if __name__ == "__main__":
    sys.exit(main())
