"""Compare runs: grouped loss curves (median, min–max band across seeds) and a table.

``python -m kanode.compare RUN_DIR... [--metric train_loss|val_loss|extrap_loss]
[--x step|time] [--out fig.png]``

A RUN_DIR is a ``kanode.fit`` run directory (``config.toml`` + ``metrics.csv``)
or any directory above some (a sweep directory). Runs whose configurations
differ only in ``seed`` (and bookkeeping such as ``threads``) form one group.
The figure has one panel per system; the table (printed as markdown, written
next to the figure as ``.csv`` and ``.md``) gives per group the final and best
value of the metric as median [min, max] across runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cli_args import OneLineParser
from .config import ConfigError, read_toml
from .exit_codes import EXIT_BAD_INPUT
from .plots.compare import Curve
from .runs import read_metrics, read_summary

__all__ = ["RunData", "Group", "Curve", "find_runs", "load_run", "group_runs", "group_curve",
           "loss_table", "format_table", "write_table_csv", "main", "METRICS", "SYSTEM_ORDER"]

METRICS = ("train_loss", "val_loss", "extrap_loss")
SYSTEM_ORDER = ("lotka_volterra", "pleiades", "fitzhugh_nagumo", "rigid_body", "spiral")
# Fields that do not change what is learned; runs differing only here are grouped.
_NOT_GROUPED = frozenset({"seed", "threads", "device", "eval_every", "checkpoint_every"})


class CompareError(ValueError):
    """The runs given cannot be compared; the one-line message says why."""


@dataclass(frozen=True)
class RunData:
    """One run directory, loaded.

    ``metrics`` maps each ``metrics.csv`` column to an array of shape
    ``(n_rows,)`` (``nan`` where a cell is empty; ``phase`` stays strings).
    ``summary`` is ``summary.json`` or ``None`` for an unfinished run.
    """

    path: Path
    config: dict[str, Any]
    metrics: dict[str, np.ndarray]
    summary: dict[str, Any] | None

    @property
    def system(self) -> str:
        """The simulated system's name, or a data file's stem (as ``summary.json`` names it)."""
        data = self.config.get("data")
        if isinstance(data, str) and data:
            return Path(data).stem
        return str(self.config.get("system", "?"))

    @property
    def model(self) -> str:
        return str(self.config.get("model", "?"))

    @property
    def n_params(self) -> int | None:
        value = (self.summary or {}).get("n_params")
        return None if value is None else int(value)

    @property
    def widths(self) -> list[int]:
        return list((self.summary or {}).get("widths") or self.config.get("widths") or [])

    @property
    def status(self) -> str:
        return str((self.summary or {}).get("status", "unfinished"))


@dataclass(frozen=True)
class Group:
    """Runs of one system and one configuration (up to the seed)."""

    system: str
    model: str
    label: str
    runs: tuple[RunData, ...]

    @property
    def n_params(self) -> int | None:
        counts = {r.n_params for r in self.runs if r.n_params is not None}
        return counts.pop() if len(counts) == 1 else None


# ------------------------------------------------------------------ loading
def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories at or below ``paths`` (those with ``config.toml`` and ``metrics.csv``)."""
    found: list[Path] = []
    for given in paths:
        if not str(given).strip():
            raise CompareError("a run directory path is empty; give RUN_DIR paths")
        path = Path(given)
        if not path.is_dir():
            raise CompareError(f"{path} is not a directory")
        if _is_run(path):
            found.append(path)
            continue
        below = sorted(p.parent for p in path.rglob("metrics.csv") if _is_run(p.parent))
        if not below:
            raise CompareError(f"no run directories (config.toml + metrics.csv) in {path}")
        found.extend(below)
    return list(dict.fromkeys(found))  # unique, order kept


def _is_run(path: Path) -> bool:
    return (path / "config.toml").is_file() and (path / "metrics.csv").is_file()


def load_run(path: str | Path) -> RunData:
    """Read ``config.toml``, ``metrics.csv`` and (if present) ``summary.json`` of a run.

    The files are read by the run directory's own readers
    (:func:`kanode.runs.read_metrics`, :func:`kanode.runs.read_summary`).

    Raises
    ------
    CompareError : ``config.toml`` is missing or not TOML.
    ConfigError : ``metrics.csv`` (e.g. without a ``step`` column) or ``summary.json``
        is damaged; the one-line message names the file.
    """
    path = Path(path)
    config = read_toml(path / "config.toml", what="run config", error=CompareError)
    rows = read_metrics(path / "metrics.csv")
    metrics = {column: _column(column, [row.get(column) for row in rows])
               for column in (rows[0] if rows else ())}
    return RunData(path=path, config=config, metrics=metrics, summary=read_summary(
        path / "summary.json"))


def _column(name: str, values: list[Any]) -> np.ndarray:
    """One metrics column as an array: ``phase`` as strings, the rest as floats (nan if empty)."""
    if name == "phase":
        return np.array(["" if v is None else str(v) for v in values])
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


# ----------------------------------------------------------------- grouping
def group_runs(runs: Sequence[RunData]) -> list[Group]:
    """Group runs that differ only in seed; order by system (paper order), then model.

    Labels read ``KAN [2, 10, 2]`` plus, where groups of the same system and
    model differ in other settings, those settings (``lr=0.01``).
    """
    buckets: dict[str, list[RunData]] = {}
    for run in runs:
        key = json.dumps({k: v for k, v in run.config.items() if k not in _NOT_GROUPED},
                         sort_keys=True, default=str)  # default: TOML dates
        buckets.setdefault(key, []).append(run)
    groups = []
    for members in buckets.values():
        first = members[0]
        siblings = [b[0].config for b in buckets.values()
                    if b[0].system == first.system and b[0].model == first.model]
        groups.append(Group(system=first.system, model=first.model,
                            label=_label(first, siblings), runs=tuple(members)))
    rank = {name: i for i, name in enumerate(SYSTEM_ORDER)}
    return sorted(groups, key=lambda g: (rank.get(g.system, len(rank)), g.system, g.model,
                                         g.label))


def _label(run: RunData, siblings: list[dict[str, Any]]) -> str:
    label = run.model.upper()
    if run.widths:
        label += " " + str(run.widths)
    differing = sorted(k for k in run.config if k not in _NOT_GROUPED | {"widths"}
                       and any(s.get(k) != run.config[k] for s in siblings))
    if differing:
        label += " " + ",".join(f"{k}={run.config[k]}" for k in differing)
    return label


# ------------------------------------------------------------------- curves
def _xy(run: RunData, metric: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """The finite points of one run's metric: ``(x, y)``, each of shape ``(n,)``."""
    if metric not in run.metrics:
        return np.empty(0), np.empty(0)
    column = "step" if x == "step" else "wall_time"
    if column not in run.metrics:
        raise CompareError(f"{run.path / 'metrics.csv'} has no {column!r} column for --x {x}")
    xs = run.metrics[column]
    ys = run.metrics[metric]
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def group_curve(group: Group, metric: str = "train_loss", x: str = "step") -> Curve:
    """Median and min–max across the group's runs of ``metric`` against ``x``: the figure's data.

    Every run is interpolated (linearly in log10 of the loss) onto the union
    of the runs' x values; at each x only the runs that reach it count, so a
    run that stopped early shortens no other run's curve.
    """
    if x not in ("step", "time"):
        raise CompareError(f"x must be step or time, got {x!r}")
    pairs = [_xy(r, metric, x) for r in group.runs]
    pairs = [(a, b) for a, b in pairs if a.size]
    about = {"system": group.system, "model": group.model, "label": group.label,
             "n_runs": len(group.runs), "n_params": group.n_params}
    if not pairs:
        nothing = np.empty(0)
        return Curve(nothing, nothing, nothing, nothing, math.nan, **about)
    grid = np.unique(np.concatenate([a for a, _ in pairs]))  # (n_x,)
    stack = np.full((len(pairs), grid.size), np.nan)          # (n_runs, n_x)
    for i, (xs, ys) in enumerate(pairs):
        order = np.argsort(xs, kind="stable")
        xs, logs = xs[order], np.log10(np.maximum(ys[order], 1e-300))
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        stack[i, inside] = 10.0 ** np.interp(grid[inside], xs, logs)
    return Curve(x=grid, median=np.nanmedian(stack, axis=0), low=np.nanmin(stack, axis=0),
                 high=np.nanmax(stack, axis=0), switch=_switch(group.runs, x), **about)


def _switch(runs: Sequence[RunData], x: str) -> float:
    """Median x of each run's first L-BFGS row (``nan`` if no run has one)."""
    points = []
    for run in runs:
        phase = run.metrics.get("phase")
        if phase is None or not (phase == "lbfgs").any():
            continue
        first = int(np.argmax(phase == "lbfgs"))
        xs = run.metrics.get("step" if x == "step" else "wall_time")
        if xs is not None:
            points.append(xs[first])
    return float(np.median(points)) if points else math.nan


# -------------------------------------------------------------------- table
def loss_table(groups: Sequence[Group], metric: str = "train_loss") -> list[dict[str, Any]]:
    """Per group: final and best ``metric`` as median/min/max across its runs.

    "final" is the value after the last step for a finished run
    (``summary.json``'s ``final_<metric>``, as in a sweep's ``results.csv``),
    else the last finite value in ``metrics.csv``; "best" is the smallest of
    these values.
    """
    table = []
    for group in groups:
        finals, bests, steps = [], [], []
        for run in group.runs:
            _, ys = _xy(run, metric, "step")
            final = _summary_final(run, metric)
            if math.isfinite(final):
                ys = np.append(ys, final)
            if ys.size:
                finals.append(ys[-1])
                bests.append(ys.min())
            if "step" in run.metrics and run.metrics["step"].size:
                steps.append(np.nanmax(run.metrics["step"]))
        finished = sum(r.status == "finished" for r in group.runs)
        row: dict[str, Any] = {"system": group.system, "model": group.label,
                               "n_params": group.n_params, "runs": len(group.runs),
                               "finished": finished,
                               "steps": int(np.median(steps)) if steps else None}
        for name, values in (("final", finals), ("best", bests)):
            arr = np.asarray(values, dtype=np.float64)
            row[f"{name}_median"] = float(np.median(arr)) if arr.size else math.nan
            row[f"{name}_min"] = float(arr.min()) if arr.size else math.nan
            row[f"{name}_max"] = float(arr.max()) if arr.size else math.nan
        table.append(row)
    return table


def _summary_final(run: RunData, metric: str) -> float:
    """``final_<metric>`` of a finished run's summary (``nan`` if absent)."""
    if run.status != "finished":
        return math.nan
    value = (run.summary or {}).get(f"final_{metric}")
    return math.nan if value is None else float(value)


def format_table(table: Sequence[dict[str, Any]], metric: str = "train_loss") -> str:
    """Markdown: one line per group, values as ``median [min, max]``."""
    lines = [f"| system | model | params | runs | final {metric} | best {metric} |",
             "|---|---|---:|---:|---|---|"]
    for row in table:
        cells = [f"{_g(row[f'{n}_median'])} [{_g(row[f'{n}_min'])}, {_g(row[f'{n}_max'])}]"
                 for n in ("final", "best")]
        runs = f"{row['finished']}/{row['runs']}"
        lines.append(f"| {row['system']} | {row['model']} | {row['n_params'] or '?'} | {runs} "
                     f"| {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def write_table_csv(table: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write the table as CSV (full precision, empty cells for missing values)."""
    if not table:
        raise CompareError("no groups to write")
    with Path(path).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        for row in table:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v))
                                 else (repr(v) if isinstance(v, float) else v))
                             for k, v in row.items()})


def _g(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "–"


# ---------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m kanode.compare",
                description="Overlay loss curves of runs (median and min-max band across "
                            "seeds) and print a table of final and best losses.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directories, or directories holding runs (e.g. a sweep)")
    p.add_argument("--metric", choices=METRICS, default="train_loss")
    p.add_argument("--x", choices=("step", "time"), default="step",
                   help="optimiser step or wall-clock seconds on the x axis")
    p.add_argument("--out", default="compare.png",
                   help="figure path; the table goes next to it as .csv and .md "
                        "(default: compare.png)")
    p.add_argument("--title", default=None, help="figure title")
    return p


def _figure_path(out: str) -> Path:
    """``--out`` checked up front: not empty, a format matplotlib can write."""
    from matplotlib.backend_bases import FigureCanvasBase

    if not out.strip():
        raise CompareError("--out is empty; give a figure path such as compare.png")
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise CompareError(f"--out {out!r} must end in a figure format matplotlib writes: "
                           + ", ".join(f".{f}" for f in sorted(formats)))
    return Path(out)


def _check_title(title: str | None) -> None:
    """A title with ``$...$`` must be valid mathtext; say so before any work is done."""
    if not title or title.replace(r"\$", "").count("$") < 2:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.suptitle(title)
    try:
        FigureCanvasAgg(fig).draw()
    except ValueError as exc:  # matplotlib's mathtext parser reports bad TeX as ValueError
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid mathtext"
        raise CompareError(f"--title '{title}' cannot be drawn ({reason}); write a literal "
                           "$ as \\$") from None


def _one_line(text: str) -> str:
    """A message on one line (line breaks inside a path or value become spaces)."""
    return " ".join(text.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0, or 2 (one line on stderr) for bad input."""
    args = _parser().parse_args(argv)
    try:
        out = _figure_path(args.out)
        _check_title(args.title)
        runs = [load_run(p) for p in find_runs(args.runs)]
        groups = group_runs(runs)
        table = loss_table(groups, args.metric)
        if all(math.isnan(row["final_median"]) for row in table):
            raise CompareError(f"no {args.metric} values in these runs")
        from kanode.plots.compare import plot_loss_comparison

        curves = [group_curve(g, args.metric, args.x) for g in groups]
        fig = plot_loss_comparison(curves, metric=args.metric, x=args.x, title=args.title)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110, bbox_inches="tight")
        markdown = format_table(table, args.metric)
        out.with_suffix(".md").write_text(markdown)
        write_table_csv(table, out.with_suffix(".csv"))
    except (CompareError, ConfigError) as exc:
        print(f"kanode: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"kanode: error: {_one_line(where + (exc.strerror or str(exc)))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(markdown, end="")
    print(f"\n{len(runs)} runs in {len(groups)} groups; figure: {out}; "
          f"table: {out.with_suffix('.csv')}, {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
