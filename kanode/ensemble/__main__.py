"""``python -m kanode.ensemble MANIFEST.json [--threads N] [--quiet]``: one packed sweep job.

The manifest lists the members::

    {"members": [{"run_dir": "...", "config_path": "...", "resume": false,
                  "lbfgs_steps": null}, ...]}

All members start (from their config files into their run directories) or
all resume (with ``lbfgs_steps`` when given: more than the run's extends it). Members whose checkpoints cannot resume as one ensemble (other
steps or grids) are resumed one by one as single fits. Each member's outcome
is its run directory's ``summary.json``. Exit status: 0 all finished, 3 some
diverged, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from kanode.config import ConfigError, load_config
from kanode.ensemble.fit import fit_ensemble
from kanode.exit_codes import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OK
from kanode.fit import fit


def _members(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            members = json.load(fh)["members"]
        if not members or not all(isinstance(m, dict) and {"run_dir", "config_path", "resume"} <= set(m)
                                  for m in members):
            raise ValueError("members must be a non-empty list of {run_dir, config_path, resume}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not an ensemble manifest ({exc})") from None
    if len({bool(m["resume"]) for m in members}) != 1:
        raise ConfigError(f"{path}: members must all start or all resume")
    return members


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kanode.ensemble")
    parser.add_argument("manifest")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        members = _members(args.manifest)
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        dirs = [m["run_dir"] for m in members]
        if members[0]["resume"]:
            extend = [{"lbfgs_steps": m["lbfgs_steps"]} if m.get("lbfgs_steps") is not None else {}
                      for m in members]
            try:
                if any(e != extend[0] for e in extend):
                    raise ConfigError("the members resume to different lbfgs_steps")
                results = fit_ensemble(resume=dirs, quiet=args.quiet, **extend[0])
            except ConfigError as exc:
                print(f"kanode: note: resuming the members one by one ({' '.join(str(exc).split())})")
                results = [fit(resume=d, quiet=args.quiet, **e) for d, e in zip(dirs, extend)]
        else:
            configs = [load_config(m["config_path"]) for m in members]
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
