"""Figure 2 of Pal & Das (2024), reproduced: KAN vs MLP training loss on five systems.

Usage::

    python -m kanode.sweep experiments/figure2.toml --workers 2        # ~60 min, runs/figure2
    python experiments/figure2.py runs/figure2                          # figure + tables

    python -m kanode.sweep experiments/figure2.toml --smoke            # ~2 min, runs/figure2-smoke
    python experiments/figure2.py runs/figure2-smoke --results /tmp/fig2

Writes into ``--results`` (default ``experiments/results``): ``figure2.png``
(one panel per system, median over seeds with min–max band),
``figure2_results.csv`` and ``figure2_summary.md`` (the sweep's tables),
``figure2_table.md`` (final and best training loss per model) and
``figure2_provenance.md`` (the commands, the commit, the machine, the time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from kanode.compare import (find_runs, format_table, group_curve, group_runs, load_run,
                            loss_table)
from kanode.plots.compare import plot_loss_comparison

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", nargs="?", default="runs/figure2",
                        help="directory written by python -m kanode.sweep (default: runs/figure2)")
    parser.add_argument("--results", default=str(REPO / "experiments" / "results"),
                        help="where to write the figure and tables")
    args = parser.parse_args(argv)
    sweep_dir, results = Path(args.sweep_dir), Path(args.results)
    if not (sweep_dir / "results.csv").exists():
        print(f"kanode: error: {sweep_dir} holds no results.csv; run the sweep first",
              file=sys.stderr)
        return 2
    results.mkdir(parents=True, exist_ok=True)
    groups = group_runs([load_run(p) for p in find_runs([sweep_dir])])
    fig = plot_loss_comparison([group_curve(g, "train_loss", "step") for g in groups],
                               metric="train_loss", x="step")
    fig.savefig(results / "figure2.png", dpi=80)
    table = format_table(loss_table(groups, "train_loss"), "train_loss")
    (results / "figure2_table.md").write_text(table)
    shutil.copyfile(sweep_dir / "results.csv", results / "figure2_results.csv")
    shutil.copyfile(sweep_dir / "summary.md", results / "figure2_summary.md")
    (results / "figure2_provenance.md").write_text(_provenance(sweep_dir))
    print(table, end="")
    print(f"wrote {results}/figure2.png and tables")
    return 0


def _provenance(sweep_dir: Path) -> str:
    """The commands, commit, machine and timing that produced the results."""
    records = [json.loads(line) for line in (sweep_dir / "sweep_log.jsonl").read_text()
               .splitlines() if line.strip()] if (sweep_dir / "sweep_log.jsonl").exists() else []
    run_seconds = sum(r.get("wall_time_s", 0.0) for r in records)
    span = ""
    if records:
        stamps = [datetime.fromisoformat(r["time"]) for r in records]
        first_start = min(s.timestamp() - r.get("wall_time_s", 0.0)
                          for s, r in zip(stamps, records))
        span = f"{(max(s.timestamp() for s in stamps) - first_start) / 60:.1f} min"
    import torch

    return "\n".join([
        "# Provenance of figure2.*",
        "",
        *(f"- sweep: `{line.split('  ', 1)[-1]}`" for line in _commands(sweep_dir)),
        f"- figure: `python experiments/figure2.py {sweep_dir}`",
        f"- commit: `{_git('rev-parse', 'HEAD')}`"
        + (" (with uncommitted changes)" if _git("status", "--porcelain") else ""),
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        f"- sweep wall time: {span or 'unknown'} (sum over runs {run_seconds / 60:.1f} min, "
        f"{len(records)} attempts)",
        "",
    ])


def _commands(sweep_dir: Path) -> list[str]:
    path = sweep_dir / "commands.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return lines or ["?  (not recorded)"]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
