"""Run a sweep: decide per cell whether to skip, resume or start it; run; record.

Sweep directory layout::

    <out>/sweep.toml            the sweep config as given (provenance)
    <out>/cells/<key>.toml      the complete FitConfig of every cell
    <out>/<key>/                one kanode.fit run directory per cell
    <out>/logs/<key>.log        the fit's output (appended across attempts)
    <out>/sweep_log.jsonl       one JSON line per finished attempt
    <out>/results.csv           one row per run (rewritten after every run)
    <out>/summary.md            grouped medians [min, max]
    <out>/.sweep.lock           held (flock) by the sweep running in the directory

``<key>`` is ``<system>/<model label>/seed<seed>``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from kanode.config import ConfigError, FitConfig, dump_config, load_config
from kanode.lock import SWEEP_LOCK_NAME, DirectoryLock, lock_holder
from kanode.runs import read_summary

from .backends import Backend, PackTask, RunOutcome, Runner, RunTask, Task, run_task
from .grid import RunSpec, SweepError
from .results import LOG_NAME, ResultRow, collect_results, write_results_csv, write_summary_md

__all__ = ["run_sweep", "plan", "Action", "sweep_lock", "check_not_busy"]

_FINAL = ("finished", "diverged")  # a rerun of the sweep leaves these alone
_IGNORED_FIELDS = ("threads",)     # may differ between a cell and its run's config.toml


@dataclass(frozen=True)
class Action:
    """What the next sweep invocation does with one cell: ``skip``, ``resume`` or ``start``
    (or ``busy``: another process holds the cell's run directory; ``detail`` is its pid)."""

    spec: RunSpec
    kind: str
    detail: str = ""


def plan(specs: Sequence[RunSpec], sweep_dir: str | Path) -> list[Action]:
    """Decide for each cell; raise :class:`SweepError` if a run dir holds another config."""
    sweep_dir = Path(sweep_dir)
    actions = []
    for spec in specs:
        run_dir = sweep_dir / spec.key
        holder = lock_holder(run_dir)
        if holder is not None:
            actions.append(Action(spec, "busy", holder))
            continue
        extends = _check_same_config(spec, run_dir)
        summary = _read_status(run_dir / "summary.json")
        has_checkpoint = (run_dir / "checkpoints" / "last.pt").exists()
        if extends and summary == "finished" and has_checkpoint:
            actions.append(Action(spec, "resume", f"extend lbfgs_steps to {spec.config.lbfgs_steps}"))
        elif summary in _FINAL:
            actions.append(Action(spec, "skip", summary))
        elif has_checkpoint:
            actions.append(Action(spec, "resume", summary or "interrupted"))
        else:
            actions.append(Action(spec, "start"))
    return actions


def sweep_lock(sweep_dir: str | Path) -> DirectoryLock:
    """The sweep directory's exclusive lock (not yet acquired): one sweep per directory."""
    return DirectoryLock(sweep_dir, SWEEP_LOCK_NAME, "sweep directory")


def run_sweep(specs: Sequence[RunSpec], sweep_dir: str | Path, backend: Backend, *,
              threads: int = 1, runner: Runner = run_task,
              title: str = "Sweep", progress: bool = True,
              stream: TextIO | None = None, lock: bool = True, pack: bool = True) -> list[ResultRow]:
    """Run every cell that is not done yet and write ``results.csv`` and ``summary.md``.

    Parameters
    ----------
    specs
        Cells from :func:`kanode.sweep.expand`.
    sweep_dir
        Sweep directory (created if needed).
    backend
        Where the runs execute (:func:`kanode.sweep.make_backend`).
    threads
        Torch threads per run (:func:`kanode.sweep.threads_per_worker`).
    runner
        Executes one :class:`RunTask` or :class:`PackTask`; the default runs
        ``python -m kanode.fit`` or ``python -m kanode.ensemble``.
    title
        Heading of ``summary.md``.
    progress
        Show a tqdm bar and print one line per finished run (to ``stream``).
    lock
        Hold the sweep directory's lock (:func:`sweep_lock`) while running; False
        when the caller already holds it.
    pack
        Run the cells that can share an ensemble solve (same data shape, model
        shape, solver and schedule; :func:`kanode.ensemble.pack_groups`) as one
        ensemble each; every cell still gets its own run directory and row.

    Returns
    -------
    list of ResultRow
        One row per cell, in the order of ``specs``.

    Raises
    ------
    SweepError
        The directory is in use by another sweep, or a cell's run directory by
        another process (nothing runs then), or a run dir holds another config.
    """
    sweep_dir = Path(sweep_dir)
    held = sweep_lock(sweep_dir)
    if lock:
        try:
            held.acquire()
        except ConfigError as exc:
            raise SweepError(str(exc)) from None
    try:
        return _run_locked(specs, sweep_dir, backend, threads, runner, title, progress, stream, pack)
    finally:
        held.release()


def _run_locked(specs: Sequence[RunSpec], sweep_dir: Path, backend: Backend, threads: int,
                runner: Runner, title: str, progress: bool,
                stream: TextIO | None, pack: bool) -> list[ResultRow]:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    actions = plan(specs, sweep_dir)
    check_not_busy(actions)
    todo = [a for a in actions if a.kind != "skip"]
    runs = [_prepare(a, sweep_dir, threads) for a in todo]
    tasks = _packed(todo, runs, threads) if pack else runs
    stream = stream or sys.stderr
    skipped = len(actions) - len(todo)
    bar = _bar(len(actions), skipped, progress, stream)
    if progress and skipped:
        bar.write(f"{skipped} of {len(actions)} runs already done; skipping them", file=stream)
    rows = collect_results(specs, sweep_dir)
    position = {spec.key: i for i, spec in enumerate(specs)}
    try:
        for outcome in backend.run(tasks, runner):
            _record(outcome, sweep_dir)
            i = position[outcome.key]  # only this run changed: re-read its row, not every run's
            rows[i] = collect_results([specs[i]], sweep_dir)[0]
            write_results_csv(rows, sweep_dir / "results.csv")
            if progress:
                bar.write(_line(bar.n + 1, len(actions), outcome, rows[i]), file=stream)
            bar.update(1)
    finally:
        bar.close()
        rows = collect_results(specs, sweep_dir)
        write_results_csv(rows, sweep_dir / "results.csv")
        write_summary_md(rows, sweep_dir / "summary.md", title=title)
    return rows


def _packed(actions: Sequence[Action], runs: Sequence[RunTask], threads: int) -> list[Task]:
    """Group runs into ensembles: those that start together, or resume together, and whose
    configs can share a solve; a group of one stays a plain run."""
    from kanode.ensemble.packing import pack_groups

    tasks: list[Task] = []
    for resume in (False, True):
        chosen = [i for i, run in enumerate(runs) if run.resume == resume]
        for group in pack_groups([actions[i].spec.config for i in chosen]):
            members = tuple(runs[chosen[j]] for j in group)
            tasks.append(members[0] if len(members) == 1 else
                         PackTask(key=f"pack of {len(members)} from {members[0].key}", members=members,
                                  threads=threads))
    return tasks


def check_not_busy(actions: Sequence[Action]) -> None:
    """Raise :class:`SweepError` naming a cell whose run directory another process holds."""
    busy = [a for a in actions if a.kind == "busy"]
    if busy:
        first = busy[0]
        more = f" (and {len(busy) - 1} more cells)" if len(busy) > 1 else ""
        raise SweepError(f"run directory {first.spec.key} is in use by another process "
                         f"(pid {first.detail}){more}; wait for it to end, then rerun the sweep")


def _prepare(action: Action, sweep_dir: Path, threads: int) -> RunTask:
    """Write the cell's config file; clear a run dir that has no checkpoint to resume from."""
    spec = action.spec
    run_dir = sweep_dir / spec.key
    cell = sweep_dir / "cells" / f"{spec.key}.toml"
    cell.parent.mkdir(parents=True, exist_ok=True)
    cell.write_text(dump_config(spec.config))
    if action.kind == "start" and run_dir.exists():
        shutil.rmtree(run_dir)  # a start that died before its first checkpoint
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return RunTask(key=spec.key, run_dir=str(run_dir.resolve()), config_path=str(cell.resolve()),
                   resume=action.kind == "resume", threads=threads,
                   lbfgs_steps=spec.config.lbfgs_steps if action.kind == "resume" else None)


def _record(outcome: RunOutcome, sweep_dir: Path) -> None:
    log = sweep_dir / "logs" / f"{outcome.key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(outcome.log)
    record = {"key": outcome.key, "status": outcome.status, "reason": outcome.reason,
              "returncode": outcome.returncode, "wall_time_s": round(outcome.wall_time_s, 3),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with (sweep_dir / LOG_NAME).open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def _line(index: int, total: int, outcome: RunOutcome, row: ResultRow) -> str:
    width = len(str(total))
    text = f"[{index:>{width}}/{total}] {outcome.status:<8} {outcome.key}"
    if row.final_train_loss == row.final_train_loss:  # not nan
        text += f"  final {row.final_train_loss:.3e}  best {row.best_train_loss:.3e}"
    text += f"  {outcome.wall_time_s:.1f}s"
    reason = row.reason or outcome.reason  # the fit's own reason when it wrote one
    if outcome.status != "finished" and reason:
        text += f"  ({reason})"
    return text


def _bar(total: int, initial: int, enabled: bool, stream: TextIO) -> tqdm:

    return tqdm(total=total, initial=initial, disable=not enabled, file=stream,
                unit="run", desc="sweep", dynamic_ncols=True)


def _read_status(path: Path) -> str | None:
    """The run's summary status; None when there is no readable summary (resume or restart)."""
    try:
        summary = read_summary(path)
    except ConfigError:
        return None
    return None if summary is None else str(summary.get("status", ""))


def _check_same_config(spec: RunSpec, run_dir: Path) -> bool:
    """Raise unless the run dir holds the cell's config; True when it differs only by a
    shorter L-BFGS phase (the cell extends it: the run resumes with more L-BFGS steps)."""
    path = run_dir / "config.toml"
    if not path.exists():
        return False
    try:
        existing = load_config(path)
    except ConfigError:
        return False  # unreadable: treated as a fresh start or resume by the fit itself
    ours, theirs = _comparable(spec.config, spec.config), _comparable(existing, spec.config)
    changed = sorted(k for k, v in ours.items() if theirs.get(k) != v)
    if changed == ["lbfgs_steps"] and existing.lbfgs_steps < spec.config.lbfgs_steps:
        return True
    if changed:
        raise SweepError(f"{run_dir} was run with a different configuration "
                         f"({', '.join(changed)} differ); use another --out or delete it "
                         "(only a longer L-BFGS phase, lbfgs_steps, extends a finished run)")
    return False


def _comparable(config: FitConfig, reference: FitConfig) -> dict:
    """Fields to compare; empty ``widths`` in the cell means "the fit's default"."""
    values = config.to_dict()
    for name in _IGNORED_FIELDS:
        values.pop(name, None)
    if not reference.widths:
        values.pop("widths")
    return values
