"""The run lifecycle of every fit, single or ensemble: build the trainer, start or resume
run directories, train with metrics and checkpoints, summarise.

A fit of M members writes M normal run directories (``config.toml``, ``metrics.csv``,
``checkpoints/last.pt`` [+ ``previous.pt``] + ``best.pt``, ``summary.json``, ``plots/``);
a single fit is M = 1. :mod:`kanode.fitting` (``fit``, ``fit_ensemble``) drives it.

Crash safety (ensembles, ``keep_previous``): members checkpoint one after the
other at the same steps, each keeping the checkpoint it replaces as
``previous.pt``; so after a kill at any moment the members' last checkpoints
are at most one checkpoint apart, and a resume rolls the members that are ahead
back to the others' step (their ``previous.pt``) and replays from there,
deterministically. A member without a checkpoint yet starts over. A member
whose ``summary.json`` says ``diverged`` stays frozen: its summary is written
the moment it diverges.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .build import build_field
from .config import ConfigError, FitConfig, check_fixed_steps
from .data import FitData, data_key, load_data
from .ensemble.field import EnsembleVectorField
from .ode import VectorField
from .result import FitResult
from .runs import RunDir, read_metrics
from .summary import summarize
from .train import Evaluation, Trainer, TrainState, TrainStep

__all__ = ["prepare", "make_trainer", "resumed_config", "RESUME_OVERRIDES", "read_checkpoint",
           "final_summary", "remove_if_bare", "read_member_states", "restore", "train_runs",
           "save_best", "draw_plots"]


# ------------------------------------------------------------------ building
def _set_threads(config: FitConfig) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)


def _check_device(config: FitConfig) -> None:
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")


def prepare(config: FitConfig, data: FitData | None = None) -> tuple[FitData, VectorField]:
    """The fit's data (checked against the solver budget) and its seeded field;
    ``data``: the config's data when the caller has loaded it already."""
    _set_threads(config)
    _check_device(config)
    if data is None:
        data = load_data(config).to(getattr(torch, config.dtype), config.device)
    check_fixed_steps(config, float(data.t[-1] - data.t[0]), float(torch.diff(data.t).min()))
    return data, build_field(config, data)


def make_trainer(configs: Sequence[FitConfig], data: FitData | None = None) -> Trainer:
    """The trainer of M members following ``configs`` (M = 1: a single fit): each member's
    data (members that share data simulate it once; ``data``: every member's, given by the
    caller, e.g. a validation window of :mod:`kanode.selection`) and seeded field, stacked; with
    the sparsity penalty when the configs ask for it (:mod:`kanode.symbolic.regularize`)."""
    from .ensemble.packing import check_packable

    check_packable(configs)
    loaded: dict[tuple, FitData] = {} if data is None else {data_key(c): data for c in configs}
    prepared = []
    for config in configs:
        key = data_key(config)
        data, field = prepare(config, loaded.get(key))
        loaded.setdefault(key, data)
        prepared.append((data, field))
    datas, fields = [d for d, _ in prepared], [f for _, f in prepared]
    ensemble = EnsembleVectorField.from_fields(fields)
    config = configs[0]
    regularizer = None
    if config.sparsity or config.coef_l1:  # the KAN paper's sparsity penalty, per member
        from .symbolic.regularize import member_sparsity_regularizer
        regularizer = member_sparsity_regularizer(
            fields, [d.train_states for d in datas], config.sparsity, config.sparsity_l1,
            config.sparsity_entropy, config.coef_l1, seeds=[c.seed for c in configs])
    return Trainer(ensemble, datas, configs, regularizer=regularizer)


RESUME_OVERRIDES = ("steps", "lbfgs_steps", "threads", "compile", "plateau_steps", "plateau_rtol")
"""What a resume may change: how long it trains (the step counts, the plateau rule) and how
(threads, the compiled route); not what it fits."""


def resumed_config(base: FitConfig, overrides: dict[str, Any]) -> FitConfig:
    """A resumed run's config with ``overrides``, which may only be :data:`RESUME_OVERRIDES`
    (ConfigError otherwise)."""
    bad = sorted(k for k, v in overrides.items() if k not in RESUME_OVERRIDES and getattr(base, k) != v)
    if bad:
        raise ConfigError(f"cannot change {', '.join(bad)} when resuming; start a new run instead")
    return base.replace(**overrides)


# --------------------------------------------------------------- run files
def final_summary(run: RunDir) -> dict[str, Any] | None:
    """The run's ``summary.json`` if it is a final state, else None: the run diverged, or the
    plateau rule stopped it (a resume, even with a longer schedule, does not train it again)."""
    summary = run.read_summary()
    final = summary is not None and (summary.get("status") == "diverged" or summary.get("stopped_on") == "plateau")
    return summary if final else None


def read_checkpoint(run: RunDir, config: FitConfig, previous: bool = False) -> dict[str, Any]:
    """``checkpoints/last.pt`` (``previous.pt`` with ``previous``; checksum and schema checked,
    grid, step and phase those of ``config``'s run) and a ``metrics.csv`` that covers its
    steps; ConfigError (one line) if either is damaged or belongs to another run."""
    state = run.load_last(previous)
    where = run.previous_path if previous else run.last_path
    grids = {config.grid_size, *(int(g) for _, g in config.grid_extend)}
    if config.model == "mlp" and state["grid_size"] is not None:
        raise ConfigError(f"{where} has grid_size {state['grid_size']} but the run's "
                          f"{config.model} has no grid; the checkpoint belongs to another run")
    if config.model != "mlp" and state["grid_size"] not in grids:
        raise ConfigError(f"{where} has grid_size {state['grid_size']}; the run's config "
                          f"allows {sorted(grids)}; the checkpoint belongs to another run")
    if state["step"] > config.total_steps:
        raise ConfigError(f"{where} is at step {state['step']}, beyond the run's "
                          f"{config.total_steps} steps; the checkpoint belongs to another run")
    if config.optimizer in ("adam", "lbfgs") and state["phase"] != config.optimizer:
        raise ConfigError(f"{where} has phase {state['phase']!r} but the run uses "
                          f"{config.optimizer}; the checkpoint belongs to another run")
    rows = read_metrics(run.metrics_path)
    if len(rows) < state["step"]:
        raise ConfigError(f"{run.metrics_path} has {len(rows)} rows but the checkpoint is at "
                          f"step {state['step']}; the run directory is damaged")
    if state.get("first_loss") is None and rows and state["step"] > 0:
        state["first_loss"] = rows[0]["train_loss"]  # a checkpoint of an earlier version
    return state


def remove_if_bare(run: RunDir, lock: Any) -> None:
    """Undo the directory a refused new run created (it holds only the lock file)."""
    if [p.name for p in run.path.iterdir()] == [lock.path.name]:
        lock.release()
        lock.path.unlink(missing_ok=True)
        run.path.rmdir()


# ------------------------------------------------------------------ resume
def read_member_states(runs: Sequence[RunDir], configs: Sequence[FitConfig]) -> tuple[
        list[dict[str, Any] | None], dict[int, dict[str, Any]], set[int]]:
    """Every member's checkpoint (None for one never checkpointed: it starts over), the live
    ones brought to one step; the summaries of the members that are done (diverged, or stopped
    by the plateau rule: kept frozen); the
    members rolled back. A member one checkpoint ahead rolls back to its ``previous.pt``.
    Read before any data is simulated: a damaged run directory is refused at once."""
    kept, states, rolled_back = {}, [], set()
    for m, (run, config) in enumerate(zip(runs, configs)):
        summary = final_summary(run)
        if summary is not None:
            kept[m] = summary
        fresh = summary is None and run.never_checkpointed()
        states.append(None if fresh else read_checkpoint(run, config))
    live = [m for m in range(len(runs)) if m not in kept and states[m] is not None]
    target = min((states[m]["step"] for m in live), default=0)
    if any(s is None for s in states):
        target = 0  # a member starts over: the others roll back to step 0
    for m in live:
        if states[m]["step"] == target:
            continue
        earlier = (read_checkpoint(runs[m], configs[m], previous=True)
                   if runs[m].previous_path.exists() else None)
        if earlier is None or earlier["step"] != target:
            steps = sorted({states[k]["step"] for k in live})
            raise ConfigError(f"the members' checkpoints are at steps {steps} and {runs[m].path} has no "
                              f"checkpoint at step {target}; they cannot resume as one ensemble (resume "
                              "each with --resume MEMBER_DIR)")
        states[m] = earlier
        rolled_back.add(m)
    return states, kept, rolled_back


def restore(trainer: Trainer, runs: Sequence[RunDir], states: list[dict[str, Any] | None],
            kept: dict[int, dict[str, Any]], rolled_back: set[int]) -> None:
    """Load every member's checkpoint (:func:`read_member_states`) into ``trainer`` and bring
    the run directories to the resumed step; ConfigError (one line) when they do not fit."""
    states = [trainer.member_state(m) if s is None else s for m, s in enumerate(states)]
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
        if len(runs) == 1:
            raise ConfigError(f"{runs[0].last_path} does not fit the run's model and config ({detail}); "
                              "the checkpoint belongs to another run or is damaged") from None
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


def _regridded(trainer: Trainer, m: int, state: dict[str, Any], grid: int) -> dict[str, Any]:
    """Member m's ``state`` with its model refined to ``grid`` (``extend_grid``: the same function
    on a finer grid), so that a member frozen before the others' grid extension stacks with them."""
    field = trainer.field.member(m)  # at the ensemble's initial grid
    if state["grid_size"] != field.net.grid_size:
        field.net.extend_grid(int(state["grid_size"]))
    field.load_state_dict(state["model"])
    field.net.extend_grid(int(grid))
    return {**state, "model": field.state_dict(), "grid_size": grid}


# ---------------------------------------------------------------- training
def train_runs(trainer: Trainer, runs: Sequence[RunDir] | None, quiet: bool, stop_at: int | None,
               kept: dict[int, dict[str, Any]] | None = None, keep_previous: bool = True) -> list[FitResult]:
    """Run the remaining steps writing each member's metrics, checkpoints (``keep_previous``:
    the replaced ``last.pt`` becomes ``previous.pt``), best model, summary and plots; one
    :class:`FitResult` per member. ``kept``: summaries of members that diverged before."""
    from tqdm.auto import tqdm

    n, c = trainer.n_members, trainer.config
    histories: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    status = ["finished"] * n
    reasons = [""] * n
    best_saved = [s.best_step for s in trainer.states]
    run_of = lambda m: runs[m] if runs else None  # noqa: E731
    done: dict[int, FitResult] = {m: _kept_result(trainer, m, run_of(m), summary)
                                  for m, summary in (kept or {}).items()}
    what = f"{c.model} on {c.data or c.system}"
    bar = tqdm(total=trainer.total_steps, initial=trainer.step, disable=quiet, unit="step",
               desc=what if n == 1 else f"{n} × {what}", dynamic_ncols=True)
    try:
        for step in trainer.steps():
            for m, reason in step.diverged.items():  # recorded at once: a resume keeps it frozen
                status[m], reasons[m] = "diverged", f"step {trainer.states[m].step + 1}: {reason}"
                done[m] = _finish(trainer, m, run_of(m), histories[m], status[m], reasons[m], best_saved[m], None)
            for m, record in step.records.items():
                histories[m].append(record.as_row())
                if runs is not None:
                    runs[m].append_metrics(record.as_row())
                    if record.step % c.checkpoint_every == 0 or record.step == trainer.total_steps:
                        runs[m].save_last(trainer.member_state(m), keep_previous=keep_previous)
                        best_saved[m] = save_best(trainer.states[m], _grid(trainer), runs[m], best_saved[m])
            for m, evaluation in step.converged.items():  # the plateau rule: done, recorded at once
                window = trainer.configs[m].plateau_steps
                reasons[m] = (f"plateau at step {trainer.states[m].step}: the training loss fell by less than "
                              f"{trainer.configs[m].plateau_rtol:g} over the last {window} L-BFGS steps")
                if runs is not None:
                    runs[m].save_last(trainer.member_state(m), keep_previous=keep_previous)
                done[m] = _finish(trainer, m, run_of(m), histories[m], status[m], reasons[m], best_saved[m],
                                  evaluation)
            if step.records:
                bar.set_postfix_str(_postfix(step, n), refresh=False)
                bar.update(1)
            if stop_at is not None and stop_at <= trainer.step < trainer.total_steps:
                for m in range(n):
                    if status[m] == "finished" and m not in done:
                        status[m], reasons[m] = "stopped", f"stopped after step {trainer.step} as asked"
                        if runs is not None:
                            runs[m].save_last(trainer.member_state(m), keep_previous=keep_previous)
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
        done[m] = _finish(trainer, m, run_of(m), histories[m], status[m], reasons[m], best_saved[m], finals[m])
    return [done[m] for m in range(n)]


def _kept_result(trainer: Trainer, m: int, run: RunDir | None, summary: dict[str, Any]) -> FitResult:
    """A member that diverged in an earlier session, as it was recorded (nothing rewritten)."""
    history = read_metrics(run.metrics_path) if run is not None else []
    return FitResult(field=trainer.field.member(m), history=history, summary=summary,
                     run_dir=run.path if run else None, data=trainer.data.members[m], config=trainer.configs[m])


def _finish(trainer: Trainer, m: int, run: RunDir | None, history: list[dict[str, Any]],
            status: str, reason: str, best_saved: int, final: Evaluation | None) -> FitResult:
    """Member m's summary, best checkpoint and plots."""
    field, data, config = trainer.field.member(m), trainer.data.members[m], trainer.configs[m]
    if run is not None:
        save_best(trainer.states[m], _grid(trainer), run, best_saved)
        history = read_metrics(run.metrics_path)
    summary = summarize(field, data, config, trainer.states[m], history, status, reason, final)
    result = FitResult(field=field, history=history, summary=summary,
                       run_dir=run.path if run else None, data=data, config=config)
    if run is not None:
        run.write_summary(summary)
        if status == "finished" and config.plots:
            draw_plots(result, run.plots_path)
    return result


def save_best(state: TrainState, grid_size: int | None, run: RunDir, saved_step: int) -> int:
    """Write ``best.pt`` when the best step moved since ``saved_step``; return the saved step."""
    if state.best_model is not None and state.best_step != saved_step:
        run.save_best(state.best_model, state.best_step, state.best_loss, grid_size)
        return state.best_step
    return saved_step


def draw_plots(result: FitResult, directory: Path) -> None:
    """The run's figures; one that cannot be drawn is skipped with one warning line
    (the run itself finished, and stays finished)."""
    import warnings

    from .report import PlotsSkipped, save_run_plots

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib's notes would add stderr lines
            save_run_plots(result, directory)
    except PlotsSkipped as exc:  # the other figures were written
        why = "; ".join(f"{name} ({reason})" for name, reason in exc.skipped.items())
        print(f"kanode: warning: skipped {why}; the run finished and its other figures and "
              "results are saved", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a figure must never fail a finished fit
        detail = " ".join(str(exc).split())[:160]
        print(f"kanode: warning: plots skipped ({type(exc).__name__}: {detail}); "
              "the run finished and its results are saved", file=sys.stderr)


def _grid(trainer: Trainer) -> int | None:
    return getattr(trainer.field.net, "grid_size", None)


def _postfix(step: TrainStep, n: int) -> str:
    if n == 1:
        record = next(iter(step.records.values()))
        text = f"{record.phase} loss={record.train_loss:.3e}"
        if record.extrap_loss is not None:
            text += f" extrap={record.extrap_loss:.2e}"
        return text
    losses = sorted(r.train_loss for r in step.records.values())
    return f"{len(losses)}/{n} live, median loss={losses[len(losses) // 2]:.3e}"
