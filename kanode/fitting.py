"""The library's fits: :func:`fit` (one neural ODE) and :func:`fit_ensemble` (M of them in one
solve per step). Both are one run lifecycle (:mod:`kanode.lifecycle`) over one trainer
(:class:`kanode.train.Trainer`): a single fit is an ensemble of one whose run directory is a
member's. ``python -m kanode.fit`` (:mod:`kanode.fit`) and ``--seeds``
(:mod:`kanode.ensemble.cli`) are the command lines over them.

An ensemble's member writes its own normal run directory, so ``compare``, sweeps,
``--resume`` and the analyses read a member like any single fit. A member's
``wall_time`` is the ensemble's (its steps are shared); ``time_per_step_s`` in its
summary is therefore the cost of one step of the whole ensemble. A new ensemble
starts every member's directory, then writes ``ensemble.json`` (with ``parent``),
then the members' step-0 checkpoints, all before the first step (crash safety:
:mod:`kanode.lifecycle`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from .config import ConfigError, FitConfig
from .lifecycle import (make_trainer, read_member_states, remove_if_bare, restore, resumed_config,
                        train_runs)
from .selection import resolve_recipe, write_selection
from .result import FitResult
from .runs import ENSEMBLE_FILE, RunDir, ensemble_member_dirs

__all__ = ["fit", "fit_ensemble", "resume_dirs", "write_listing", "FitResult"]


def fit(config: FitConfig | None = None, out: str | Path | None = None, quiet: bool = True,
        resume: str | Path | None = None, stop_at: int | None = None,
        given: Collection[str] = (), **overrides: Any) -> FitResult:
    """Fit a neural ODE.

    Parameters
    ----------
    config : the settings (defaults: :class:`FitConfig`'s); ``overrides``
        replace single fields, e.g. ``fit(model="mlp", steps=200)``. A
        ``recipe`` is resolved on the data first (:mod:`kanode.selection`:
        the recipe's settings, and the ``l2`` its validation fits choose).
    out : run directory to write (config, metrics, checkpoints, plots,
        summary, and ``selection.json`` when the recipe chose ``l2``); None keeps
        everything in memory.
    quiet : no progress bar.
    resume : continue the run in this directory from its last checkpoint
        (``overrides`` may only extend ``steps``/``lbfgs_steps`` or set ``threads``).
    stop_at : stop after this global step with status "stopped", leaving a
        checkpoint that ``resume`` continues from (for time-boxed work).
    given : config fields the user set explicitly, which the recipe keeps even at
        their defaults (``overrides`` count as given); e.g. a command line's flags.

    Returns
    -------
    FitResult (``field`` a :class:`kanode.ode.VectorField`); ``summary["status"]`` is
    "finished", "diverged" or "stopped".

    Raises
    ------
    ConfigError : invalid settings or data.
    """
    selection = None
    if resume is not None:
        runs = [RunDir(resume)]
        configs = [resumed_config(runs[0].load_config(), overrides)]
    else:
        recipe = resolve_recipe((config or FitConfig()).replace(**overrides), {*given, *overrides})
        configs, selection = [recipe.config], recipe.selection
        runs = [RunDir(out)] if out is not None else None
    result = _run(configs, runs, resume is not None, quiet, stop_at, None, keep_previous=False)[0]
    if selection is not None and out is not None:
        write_selection(out, selection)
    return result


def fit_ensemble(configs: Sequence[FitConfig] | None = None, outs: Sequence[str | Path] | None = None,
                 quiet: bool = True, resume: Sequence[str | Path] | None = None,
                 stop_at: int | None = None, parent: str | Path | None = None,
                 given: Collection[str] = (), **overrides: Any) -> list[FitResult]:
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
    given : config fields the user set explicitly (every member's), kept by the recipe
        even at their defaults.
    overrides : with ``resume``, extend ``steps`` / ``lbfgs_steps`` or set ``threads``.

    Returns
    -------
    One :class:`kanode.result.FitResult` per member, in order; each member's
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
        if outs is not None and len(outs) != len(configs):
            raise ConfigError(f"{len(configs)} configs but {len(outs)} run directories")
        recipes = [resolve_recipe(config, given) for config in configs]
        configs = [recipe.config for recipe in recipes]
        runs = [RunDir(path) for path in outs] if outs is not None else None
    results = _run(configs, runs, resume is not None, quiet, stop_at, parent, keep_previous=True)
    if resume is None and outs is not None:
        for recipe, path in zip(recipes, outs):
            if recipe.selection is not None:
                write_selection(path, recipe.selection)
    return results


def _run(configs: list[FitConfig], runs: list[RunDir] | None, resume: bool, quiet: bool,
         stop_at: int | None, parent: str | Path | None, keep_previous: bool) -> list[FitResult]:
    """Start (or resume) the members' run directories and train; one result per member."""
    from .ensemble.packing import check_packable

    check_packable(configs)
    if runs is not None and len({run.path.resolve() for run in runs}) != len(runs):
        raise ConfigError("two members would write the same run directory; give each its own")
    if runs is None:
        return train_runs(make_trainer(configs), None, quiet, stop_at)
    created = [not run.path.exists() for run in runs]
    locks = []
    try:
        for run in runs:
            locks.append(run.lock().acquire())  # held until the run's last file is written
            run.clean_temp()
        kept: dict[int, dict[str, Any]] = {}
        if resume:  # a damaged run directory is refused before any data is simulated
            states, kept, rolled_back = read_member_states(runs, configs)
            trainer = make_trainer(configs)
            restore(trainer, runs, states, kept, rolled_back)
        else:
            trainer = make_trainer(configs)
            for m, run in enumerate(runs):
                run.start(configs[m])
            if parent is not None:
                write_listing(parent, [run.path for run in runs])
            for m, run in enumerate(runs):
                run.save_last(trainer.member_state(m))
        return train_runs(trainer, runs, quiet, stop_at, kept, keep_previous)
    except ConfigError:
        for run, lock, new in zip(runs, locks, created):
            if new:
                remove_if_bare(run, lock)
        raise
    finally:
        for lock in locks:
            lock.release()


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
