"""``python -m kanode.ensemble MANIFEST.json [--threads N] [--quiet]``: one packed sweep job.

The manifest lists the members (schema and limits: :mod:`kanode.ensemble.manifest`)::

    {"members": [{"run_dir": "...", "config_path": "...", "resume": false,
                  "lbfgs_steps": null}, ...]}

All members start (from their config files into their run directories) or
all resume (with ``lbfgs_steps`` when given: more than the run's extends it). Members whose checkpoints cannot resume as one ensemble (other
steps or grids) are resumed one by one as single fits. Each member's outcome
is its run directory's ``summary.json``. Exit status: 0 all finished, 3 some
diverged, 2 bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from kanode.cli_args import OneLineParser
from kanode.config import MAX_THREADS, ConfigError, load_config
from kanode.ensemble.manifest import read_manifest
from kanode.exit_codes import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OK
from kanode.fitting import fit, fit_ensemble


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m kanode.ensemble")
    parser.add_argument("manifest", help="JSON manifest of the pack (schema: kanode.ensemble.manifest)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        if not 0 <= args.threads <= MAX_THREADS:
            raise ConfigError(f"--threads must be in [0, {MAX_THREADS}], got {args.threads}")
        members = read_manifest(args.manifest)  # the whole schema, before any work
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        dirs = [m.run_dir for m in members]
        if members[0].resume:
            extend = [{"lbfgs_steps": m.lbfgs_steps} if m.lbfgs_steps is not None else {}
                      for m in members]
            try:
                if any(e != extend[0] for e in extend):
                    raise ConfigError("the members resume to different lbfgs_steps")
                results = fit_ensemble(resume=dirs, quiet=args.quiet, **extend[0])
            except ConfigError as exc:
                print(f"kanode: note: resuming the members one by one ({' '.join(str(exc).split())})")
                results = [fit(resume=d, quiet=args.quiet, **e) for d, e in zip(dirs, extend)]
        else:
            configs = [load_config(m.config_path) for m in members]
            results = fit_ensemble(configs, dirs, quiet=args.quiet)
    except ConfigError as exc:
        print(f"kanode: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for result in results:
        s = result.summary
        print(f"{result.run_dir}: {s['status']} train MSE {s['final_train_loss']} {s['reason']}")
    return EXIT_DIVERGED if any(r.summary["status"] == "diverged" for r in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
