"""Sweep results: one row per run (``results.csv``) and grouped medians (``summary.md``).

Rows are read back from the run directories (``summary.json``, else the partial
``metrics.csv``) and from the sweep's own log of outcomes (``sweep_log.jsonl``),
so the table is correct after any mix of finished, diverged, failed,
interrupted and resumed runs.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from kanode.config import ConfigError
from kanode.runs import read_metrics, read_summary

from .grid import RunSpec, estimate_params

__all__ = ["ResultRow", "COLUMNS", "collect_results", "write_results_csv", "write_summary_md",
           "read_log", "LOG_NAME"]

LOG_NAME = "sweep_log.jsonl"
_NUMERIC = ("final_train_loss", "best_train_loss", "final_val_loss", "final_extrap_loss",
            "time_per_step_s", "wall_time_s")


@dataclass(frozen=True)
class ResultRow:
    """One run of a sweep. Losses are ``nan`` where the run produced none.

    ``status``: ``finished`` | ``diverged`` | ``stopped`` (from the fit),
    ``failed`` (the fit process crashed or rejected its input), ``interrupted``
    (has a checkpoint, will resume), ``pending`` (not started).
    """

    system: str
    model: str
    seed: int
    n_params: int | None
    final_train_loss: float
    best_train_loss: float
    final_val_loss: float
    final_extrap_loss: float
    steps: int
    time_per_step_s: float
    wall_time_s: float
    status: str
    run_dir: str
    reason: str = ""


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))


def read_log(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """Latest logged outcome per run key from ``sweep_log.jsonl`` (``{}`` if none).

    Lines that are not a JSON record with a ``key`` and a ``status`` (a line torn by a
    kill during its append) are skipped: the run directories hold the results.
    """
    path = Path(sweep_dir) / LOG_NAME
    latest: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue  # blank, or torn by a kill while it was appended
            if (isinstance(record, dict) and isinstance(record.get("key"), str)
                    and isinstance(record.get("status"), str)):
                latest[record["key"]] = record
    return latest


def collect_results(specs: Sequence[RunSpec], sweep_dir: str | Path) -> list[ResultRow]:
    """One :class:`ResultRow` per spec, in spec order, read from ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    log = read_log(sweep_dir)
    return [_row(spec, sweep_dir, log.get(spec.key)) for spec in specs]


def _row(spec: RunSpec, sweep_dir: Path, logged: dict[str, Any] | None) -> ResultRow:
    run_dir = sweep_dir / spec.key
    damaged, unreadable = "", ""  # summary.json is written atomically: damage there is real
    try:
        summary = read_summary(run_dir / "summary.json")
    except ConfigError as exc:
        summary, damaged = None, str(exc)
    partial: dict[str, float] = {"steps": 0}
    if summary is None or "steps" not in summary:  # a finished run's summary has it all
        try:
            partial = _metrics_digest(run_dir / "metrics.csv")
        except ConfigError as exc:  # e.g. a row cut short by a kill, or being written right now
            unreadable = str(exc)
    nan = math.nan
    if summary is not None:
        values = {name: _float(summary.get(name)) for name in _NUMERIC}
        status = str(summary.get("status", "finished"))
        reason = str(summary.get("reason", "") or "")
        steps = int(summary.get("steps", partial["steps"]))
        n_params = summary.get("n_params")
    else:
        values = {name: partial.get(name, nan) for name in _NUMERIC}
        steps = int(partial["steps"])
        n_params = None
        if damaged:
            status, reason = "failed", damaged
        elif logged is not None and logged["status"] != "finished":
            status, reason = logged["status"], logged.get("reason", "")
        elif (run_dir / "checkpoints" / "last.pt").exists():
            status, reason = "interrupted", "no summary.json yet; the next sweep run resumes it"
        else:
            status, reason = "pending", ""
        reason = reason or unreadable
    if n_params is None:
        n_params = estimate_params(spec.config, _dim(spec))
    return ResultRow(system=spec.system, model=spec.label, seed=spec.seed,
                     n_params=None if n_params is None else int(n_params), steps=steps,
                     status=status, run_dir=spec.key, reason=reason, **values)


def _dim(spec: RunSpec) -> int:
    if spec.config.widths:
        return spec.config.widths[0]
    import systems

    return systems.get(spec.system).dim


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _metrics_digest(path: Path) -> dict[str, float]:
    """Final/best losses, steps and wall time from a (possibly partial) ``metrics.csv``.

    Raises ConfigError (from :func:`kanode.runs.read_metrics`) if the file is damaged.
    """
    out: dict[str, float] = {"steps": 0}
    if not path.exists():
        return out
    rows = read_metrics(path)
    if not rows:
        return out
    train = [_float(r.get("train_loss")) for r in rows]
    finite = [v for v in train if math.isfinite(v)]
    out["steps"] = len(rows)
    out["final_train_loss"] = train[-1]
    out["best_train_loss"] = min(finite) if finite else math.nan
    for column in ("val_loss", "extrap_loss"):
        filled = [_float(r.get(column)) for r in rows if r.get(column) is not None]
        out[f"final_{column}"] = filled[-1] if filled else math.nan
    out["wall_time_s"] = _float(rows[-1].get("wall_time"))
    out["time_per_step_s"] = out["wall_time_s"] / len(rows)
    return out


# ------------------------------------------------------------------ writing
def write_results_csv(rows: Iterable[ResultRow], path: str | Path) -> None:
    """Write ``results.csv`` (columns :data:`COLUMNS`; empty cells for missing values)."""
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in asdict(row).items()})
    tmp.replace(path)


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6e}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5) \
            else f"{value:.6g}"
    return value


def write_summary_md(rows: Sequence[ResultRow], path: str | Path, title: str = "Sweep") -> str:
    """Write ``summary.md``: per (system, model) medians [min, max] over finished runs.

    Returns the markdown text. Where a system has exactly two models, a
    head-to-head section states the ratio of median final training losses and
    in how many seeds each model reached the lower loss.
    """
    lines = [f"# {title}", "", _status_line(rows), "",
             "Medians over finished runs, with [min, max] across seeds.", "",
             "| system | model | params | finished | final train loss | best train loss "
             "| final val loss | final extrap loss | s/step |",
             "|---|---|---:|---:|---|---|---|---|---:|"]
    for (system, model), group in _groups(rows).items():
        done = [r for r in group if r.status == "finished"]
        params = sorted({r.n_params for r in group if r.n_params is not None})
        lines.append(
            f"| {system} | {model} | {'/'.join(map(str, params)) or '?'} "
            f"| {len(done)}/{len(group)} "
            + "".join(f"| {_median_range([getattr(r, c) for r in done])} "
                      for c in ("final_train_loss", "best_train_loss", "final_val_loss",
                                "final_extrap_loss"))
            + f"| {_fmt(_median([r.time_per_step_s for r in done]), '.3g')} |")
    lines += _head_to_head(rows)
    problems = [r for r in rows if r.status not in ("finished",)]
    if problems:
        lines += ["", "## Runs that did not finish", ""]
        lines += [f"- `{r.run_dir}`: {r.status}" + (f" — {r.reason}" if r.reason else "")
                  for r in problems]
    text = "\n".join(lines) + "\n"
    Path(path).write_text(text)
    return text


def _head_to_head(rows: Sequence[ResultRow]) -> list[str]:
    out: list[str] = []
    by_system: dict[str, dict[str, list[ResultRow]]] = {}
    for (system, model), group in _groups(rows).items():
        by_system.setdefault(system, {})[model] = [r for r in group if r.status == "finished"]
    for system, models in by_system.items():
        if len(models) != 2 or not all(models.values()):
            continue
        (name_a, runs_a), (name_b, runs_b) = models.items()
        med_a = _median([r.final_train_loss for r in runs_a])
        med_b = _median([r.final_train_loss for r in runs_b])
        if not (math.isfinite(med_a) and math.isfinite(med_b)) or min(med_a, med_b) <= 0:
            continue
        (win, win_runs, win_med), (lose, lose_runs, lose_med) = sorted(
            [(name_a, runs_a, med_a), (name_b, runs_b, med_b)], key=lambda x: x[2])
        seeds_win = {r.seed: r.final_train_loss for r in win_runs}
        seeds_lose = {r.seed: r.final_train_loss for r in lose_runs}
        paired = sorted(set(seeds_win) & set(seeds_lose))
        wins = sum(seeds_win[s] < seeds_lose[s] for s in paired)
        if not out:
            out = ["", "## Head to head (final training loss)", ""]
        out.append(f"- {system}: **{win}** lower by {lose_med / win_med:.3g}× "
                   f"(median {win_med:.3g} vs {lose_med:.3g}); lower in {wins}/{len(paired)} seeds")
    return out


def _groups(rows: Sequence[ResultRow]) -> dict[tuple[str, str], list[ResultRow]]:
    groups: dict[tuple[str, str], list[ResultRow]] = {}
    for row in rows:
        groups.setdefault((row.system, row.model), []).append(row)
    return groups


def _status_line(rows: Sequence[ResultRow]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _median(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def _median_range(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "–"
    return f"{statistics.median(finite):.3g} [{min(finite):.3g}, {max(finite):.3g}]"


def _fmt(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "–"
