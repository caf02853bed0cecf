"""Many fits in one ensemble: :func:`fit_ensemble`, behind ``kanode.fit --seeds`` and packed sweeps.

Every member writes its own normal run directory (``config.toml``,
``metrics.csv``, ``checkpoints/``, ``summary.json``, ``plots/``), so
``compare``, sweeps, ``--resume`` and the analyses read a member like any
single fit. A member's ``wall_time`` is the ensemble's (its steps are shared);
``time_per_step_s`` in its summary is therefore the cost of one step of the
whole ensemble. An ensemble resumes from its members' run directories.

Crash safety. A new ensemble starts every member's directory, then writes
``ensemble.json`` (with ``parent``), then the members' step-0 checkpoints,
all before the first step. Members checkpoint one after the other at the
same steps, each keeping the checkpoint it replaces as ``previous.pt``; so
after a kill at any moment the members' last checkpoints are at most one
checkpoint apart, and a resume rolls the members that are ahead back to the
others' step (their ``previous.pt``) and replays from there, deterministically.
A member without a checkpoint yet starts over (the others are then at step
0). A member whose ``summary.json`` says ``diverged`` stays frozen: its
summary is written the moment it diverges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kanode.config import ConfigError, FitConfig
from kanode.data import FitData, data_key
from kanode.ensemble.field import EnsembleVectorField
from kanode.ensemble.packing import check_packable
from kanode.ensemble.trainer import EnsembleTrainer
from kanode.fit import (FitResult, diverged_summary, draw_plots, prepare, read_checkpoint, remove_if_bare,
                        resumed_config, save_best, summarize)
from kanode.runs import ENSEMBLE_FILE, RunDir, ensemble_member_dirs, read_metrics
from kanode.recipes import resolve_recipe
from kanode.train import Evaluation

__all__ = ["fit_ensemble", "resume_dirs", "write_listing", "ENSEMBLE_FILE"]



def resume_dirs(path: str | Path) -> list[Path]:
    """The member run directories of an ensemble directory written by ``kanode.fit --seeds``
    (:func:`kanode.runs.ensemble_member_dirs`)."""
    return ensemble_member_dirs(path)


def write_listing(path: str | Path, members: Sequence[Path]) -> None:
    """``ensemble.json`` naming the member run directories (relative to ``path``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    names = [Path(m).relative_to(path).as_posix() for m in members]
    (path / ENSEMBLE_FILE).write_text(json.dumps({"members": names}, indent=1) + "\n", encoding="utf-8")


def fit_ensemble(configs: Sequence[FitConfig] | None = None, outs: Sequence[str | Path] | None = None,
                 quiet: bool = True, resume: Sequence[str | Path] | None = None,
                 stop_at: int | None = None, parent: str | Path | None = None,
                 **overrides: Any) -> list[FitResult]:
    """Fit M neural ODEs as one ensemble; member m follows ``configs[m]``.

    Parameters
    ----------
    configs : M packable configs (same data shape, model shape, solver and
        schedule; see :mod:`kanode.ensemble.packing`), e.g. one per seed.
    outs : M run directories to write; None keeps everything in memory.
    quiet : no progress bar.
    resume : M run directories of an ensemble's members to continue (their
        configs are used; ``configs`` and ``outs`` must then be None).
    stop_at : stop after this global step with status "stopped".
    parent : the ensemble directory of a new ensemble with ``outs``: its
        ``ensemble.json`` is written before the first step (``--resume parent``
        then continues the whole ensemble after a crash).
    overrides : with ``resume``, extend ``steps`` / ``lbfgs_steps`` or set ``threads``.

    Returns
    -------
    One :class:`kanode.fit.FitResult` per member, in order; each member's
    ``summary["status"]`` is "finished", "diverged" (frozen at its last finite
    parameters while the others went on) or "stopped".

    Raises
    ------
    ConfigError : configs that cannot share an ensemble, invalid settings or
        data, damaged run directories.
    """
    if resume is not None:
        if configs is not None or outs is not None:
            raise ConfigError("resume takes the members' run directories only (their configs are kept)")
        runs = [RunDir(path) for path in resume]
        configs = [resumed_config(run.load_config(), overrides) for run in runs]
    else:
        if overrides:
            raise ConfigError("overrides are for resuming; put the settings into the configs")
        if not configs:
            raise ConfigError("fit_ensemble needs at least one config")
        configs = [resolve_recipe(config).config for config in configs]
        runs = [RunDir(path) for path in outs] if outs is not None else None
        if runs is not None and len(runs) != len(configs):
            raise ConfigError(f"{len(configs)} configs but {len(runs)} run directories")
    check_packable(configs)
    if runs is not None and len({run.path.resolve() for run in runs}) != len(runs):
        raise ConfigError("two members would write the same run directory; give each its own")
    if runs is None:
        return _train(_make_trainer(configs), None, quiet, stop_at)
    created = [not run.path.exists() for run in runs]
    locks = []
    try:
        for run in runs:
            locks.append(run.lock().acquire())
            run.clean_temp()
        trainer = _make_trainer(configs)
        kept: dict[int, dict[str, Any]] = {}
        if resume is not None:
            kept = _restore(trainer, runs)
        else:
            for m, run in enumerate(runs):
                run.start(configs[m])
            if parent is not None:
                write_listing(parent, [run.path for run in runs])
            for m, run in enumerate(runs):
                run.save_last(trainer.member_state(m))
        return _train(trainer, runs, quiet, stop_at, kept)
    except ConfigError:
        for run, lock, new in zip(runs, locks, created):
            if new:
                remove_if_bare(run, lock)
        raise
    finally:
        for lock in locks:
            lock.release()


def _make_trainer(configs: Sequence[FitConfig]) -> EnsembleTrainer:
    loaded: dict[tuple, FitData] = {}  # members that share data simulate it once
    prepared = []
    for config in configs:
        key = data_key(config)
        data, field = prepare(config, loaded.get(key))
        loaded.setdefault(key, data)
        prepared.append((data, field))
    field = EnsembleVectorField.from_fields([f for _, f in prepared])
    return EnsembleTrainer(field, [d for d, _ in prepared], configs)


def _member_states(trainer: EnsembleTrainer, runs: Sequence[RunDir]) -> tuple[
        list[dict[str, Any]], dict[int, dict[str, Any]], set[int]]:
    """Every member's checkpoint, the live ones brought to one step; the summaries of the
    members that diverged (kept frozen); the members rolled back. A member that is one
    checkpoint ahead rolls back to its ``previous.pt``; one that has none yet starts over
    (with the fresh trainer's state)."""
    kept, states, rolled_back = {}, [], set()
    for m, (run, config) in enumerate(zip(runs, trainer.configs)):
        summary = diverged_summary(run)
        if summary is not None:
            kept[m] = summary
        fresh = summary is None and run.never_checkpointed()
        states.append(trainer.member_state(m) if fresh else read_checkpoint(run, config))
    live = [m for m in range(len(runs)) if m not in kept]
    target = min((states[m]["step"] for m in live), default=0)
    for m in live:
        if states[m]["step"] == target:
            continue
        earlier = (read_checkpoint(runs[m], trainer.configs[m], previous=True)
                   if runs[m].previous_path.exists() else None)
        if earlier is None or earlier["step"] != target:
            steps = sorted({states[k]["step"] for k in live})
            raise ConfigError(f"the members' checkpoints are at steps {steps} and {runs[m].path} has no "
                              f"checkpoint at step {target}; they cannot resume as one ensemble (resume "
                              "each with --resume MEMBER_DIR)")
        states[m] = earlier
        rolled_back.add(m)
    return states, kept, rolled_back


def _restore(trainer: EnsembleTrainer, runs: Sequence[RunDir]) -> dict[int, dict[str, Any]]:
    """Load every member's checkpoint (one step and grid for the live ones, see
    :func:`_member_states`); return the summaries of the diverged members (kept as they are)."""
    states, kept, rolled_back = _member_states(trainer, runs)
    grids = {s["grid_size"] for m, s in enumerate(states) if m not in kept} or {states[0]["grid_size"]}
    if len(grids) != 1:
        raise ConfigError(f"the members' checkpoints have grid sizes {sorted(grids)}; resume them "
                          "as single fits")
    grid, net = grids.pop(), trainer.field.net
    try:
        for m in kept:  # frozen before a grid extension: refine its (masked) model to the others' grid
            if states[m]["grid_size"] != grid:
                states[m] = _regridded(trainer, m, states[m], grid)
        if grid is not None and grid != getattr(net, "grid_size", None):
            net.extend_grid(int(grid))
        trainer.load_member_states(states, {m: s.get("reason", "") for m, s in kept.items()})
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"the members' checkpoints do not resume as one ensemble ({detail})") from None
    for m, (run, config) in enumerate(zip(runs, trainer.configs)):
        if m in kept:
            continue
        if not run.last_path.exists():
            run.start(config, restart=True)  # never checkpointed: start it over
            run.save_last(trainer.member_state(m))
        elif m in rolled_back:
            run.restore_previous()  # it was one checkpoint ahead of the others
        run.truncate_metrics(trainer.step)
        run.update_config(config)  # a resume that extends the schedule says so in config.toml
    return kept


def _regridded(trainer: EnsembleTrainer, m: int, state: dict[str, Any], grid: int) -> dict[str, Any]:
    """Member m's ``state`` with its model refined to ``grid`` (``extend_grid``: the same function
    on a finer grid), so that a member frozen before the others' grid extension stacks with them."""
    field = trainer.field.member(m)  # at the ensemble's initial grid
    if state["grid_size"] != field.net.grid_size:
        field.net.extend_grid(int(state["grid_size"]))
    field.load_state_dict(state["model"])
    field.net.extend_grid(int(grid))
    return {**state, "model": field.state_dict(), "grid_size": grid}


def _train(trainer: EnsembleTrainer, runs: Sequence[RunDir] | None, quiet: bool,
           stop_at: int | None, kept: dict[int, dict[str, Any]] | None = None) -> list[FitResult]:
    """Run the remaining steps; ``kept``: summaries of members that diverged before (frozen)."""
    from tqdm.auto import tqdm

    n, c = trainer.n_members, trainer.config
    histories: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    status = ["finished"] * n
    reasons = [""] * n
    best_saved = [s.best_step for s in trainer.states]
    done: dict[int, FitResult] = {m: _kept_result(trainer, m, runs[m] if runs else None, summary)
                                  for m, summary in (kept or {}).items()}
    bar = tqdm(total=trainer.total_steps, initial=trainer.step, disable=quiet, unit="step",
               desc=f"{n} × {c.model} on {c.data or c.system}", dynamic_ncols=True)
    try:
        for step in trainer.steps():
            for m, reason in step.diverged.items():  # recorded at once: a resume keeps it frozen
                status[m], reasons[m] = "diverged", f"step {trainer.states[m].step + 1}: {reason}"
                done[m] = _finish(trainer, m, runs[m] if runs else None, histories[m], status[m],
                                  reasons[m], best_saved[m], None)
            for m, record in step.records.items():
                histories[m].append(record.as_row())
                if runs is not None:
                    runs[m].append_metrics(record.as_row())
                    if record.step % c.checkpoint_every == 0 or record.step == trainer.total_steps:
                        runs[m].save_last(trainer.member_state(m), keep_previous=True)
                        best_saved[m] = save_best(trainer.states[m], _grid(trainer), runs[m], best_saved[m])
            if step.records:
                bar.set_postfix_str(_postfix(step, n), refresh=False)
                bar.update(1)
            if stop_at is not None and stop_at <= trainer.step < trainer.total_steps:
                for m in range(n):
                    if status[m] == "finished" and m not in done:
                        status[m], reasons[m] = "stopped", f"stopped after step {trainer.step} as asked"
                        if runs is not None:
                            runs[m].save_last(trainer.member_state(m), keep_previous=True)
                break
    except KeyboardInterrupt:
        for m in range(n):
            if status[m] == "finished" and m not in done:
                status[m], reasons[m] = "stopped", f"interrupted at step {trainer.step}"
    finally:
        bar.close()
    live = [m for m in range(n) if m not in done]
    finals = (trainer.evaluate() if any(status[m] == "finished" for m in live)  # one solve for all
              else [None] * n)
    for m in live:
        done[m] = _finish(trainer, m, runs[m] if runs else None, histories[m], status[m], reasons[m],
                          best_saved[m], finals[m])
    return [done[m] for m in range(n)]


def _kept_result(trainer: EnsembleTrainer, m: int, run: RunDir | None, summary: dict[str, Any]) -> FitResult:
    """A member that diverged in an earlier session, as it was recorded (nothing rewritten)."""
    single = trainer.member_trainer(m)
    history = read_metrics(run.metrics_path) if run is not None else []
    return FitResult(field=single.field, history=history, summary=summary,
                     run_dir=run.path if run else None, data=single.data, config=single.config)


def _finish(trainer: EnsembleTrainer, m: int, run: RunDir | None, history: list[dict[str, Any]],
            status: str, reason: str, best_saved: int, final: Evaluation | None) -> FitResult:
    """Member m's summary, best checkpoint and plots, as its single fit writes them."""
    single = trainer.member_trainer(m)
    if run is not None:
        save_best(trainer.states[m], _grid(trainer), run, best_saved)
        history = read_metrics(run.metrics_path)
    summary = summarize(single, history, status, reason, final)
    result = FitResult(field=single.field, history=history, summary=summary,
                       run_dir=run.path if run else None, data=single.data, config=single.config)
    if run is not None:
        run.write_summary(summary)
        if status == "finished" and single.config.plots:
            draw_plots(result, run.plots_path)
    return result


def _grid(trainer: EnsembleTrainer) -> int | None:
    return getattr(trainer.field.net, "grid_size", None)


def _postfix(step: Any, n: int) -> str:
    losses = sorted(r.train_loss for r in step.records.values())
    text = f"{len(losses)}/{n} live, median loss={losses[len(losses) // 2]:.3e}"
    return text
