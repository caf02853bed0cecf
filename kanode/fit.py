"""One neural-ODE fit: ``python -m kanode.fit`` and :func:`fit` for notebooks.

With no arguments it fits a KAN [2, 10, 2] (grid 5) to Lotka–Volterra with
the KAN-ODE paper's protocol: train on t ∈ [0, 3.5], extrapolate to t = 14.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .build import build_field, build_model
from .cli_args import build_parser, overrides_from_args
from .config import ConfigError, FitConfig, check_fixed_steps, check_widths_for, load_config
from .data import FitData, describe_split, load_data, overfit_warning, split_counts
from .exit_codes import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_FAILED, EXIT_OK
from .ode import VectorField
from .outdirs import check_out_dir
from .recipes import resolve_recipe
from .runs import RunDir, default_run_dir, is_ensemble_dir, read_metrics
from .compiled import compile_report
from .train import Diverged, Evaluation, StepRecord, Trainer, TrainState, count_parameters, l2_penalty

__all__ = ["fit", "FitResult", "build_model", "build_field", "main"]


@dataclass
class FitResult:
    """What a fit returns: the trained field, its per-step history and summary."""

    field: VectorField
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None = None
    data: FitData | None = field(default=None, repr=False)
    config: FitConfig | None = None


def default_widths(config: FitConfig, dim: int) -> list[int]:
    """The widths the fit builds (kept for callers; see :meth:`FitConfig.resolved_widths`)."""
    return config.resolved_widths(dim)


def _set_threads(config: FitConfig) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)


def _check_device(config: FitConfig) -> None:
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")


def fit(config: FitConfig | None = None, out: str | Path | None = None, quiet: bool = True,
        resume: str | Path | None = None, stop_at: int | None = None,
        **overrides: Any) -> FitResult:
    """Fit a neural ODE.

    Parameters
    ----------
    config : the settings (defaults: :class:`FitConfig`'s); ``overrides``
        replace single fields, e.g. ``fit(model="mlp", steps=200)``. A
        ``recipe`` is resolved on the data first (:mod:`kanode.recipes`).
    out : run directory to write (config, metrics, checkpoints, plots,
        summary); None keeps everything in memory.
    quiet : no progress bar.
    resume : continue the run in this directory from its last checkpoint
        (``overrides`` may only extend ``steps``/``lbfgs_steps`` or set ``threads``).
    stop_at : stop after this global step with status "stopped", leaving a
        checkpoint that ``resume`` continues from (for time-boxed work).

    Returns
    -------
    FitResult; ``summary["status"]`` is "finished" or "diverged".

    Raises
    ------
    ConfigError : invalid settings or data.
    """
    run = None
    if resume is not None:
        run = RunDir(resume)
        config = resumed_config(run.load_config(), overrides)
    else:
        config = resolve_recipe((config or FitConfig()).replace(**overrides)).config
        if out is not None:
            run = RunDir(out)
    if run is None:
        return _train(_make_trainer(config), None, quiet, stop_at)
    created = not run.path.exists()
    lock = run.lock().acquire()  # held until the run's last file is written
    try:
        run.clean_temp()
        # a damaged run directory is refused before any data is simulated
        state = None
        if resume is not None and not run.never_checkpointed():
            state = read_checkpoint(run, config)
        trainer = _make_trainer(config)
        if state is not None:
            _restore(trainer, run, state)
            diverged = diverged_summary(run)
            if diverged is not None:  # diverged is final: a resume would only repeat it
                return FitResult(field=trainer.field, history=read_metrics(run.metrics_path),
                                 summary=diverged, run_dir=run.path, data=trainer.data, config=config)
            run.truncate_metrics(trainer.state.step)
            run.update_config(config)  # a resume that extends the schedule says so in config.toml
        else:  # a new run, or one killed during its first save: start (over)
            run.start(config, restart=resume is not None)
            run.save_last(trainer.state_dict())
        return _train(trainer, run, quiet, stop_at)
    except ConfigError:
        if created:
            remove_if_bare(run, lock)
        raise
    finally:
        lock.release()


def prepare(config: FitConfig, data: FitData | None = None) -> tuple[FitData, VectorField]:
    """The fit's data (checked against the solver budget) and its seeded field;
    ``data``: the config's data when the caller has loaded it already."""
    _set_threads(config)
    _check_device(config)
    if data is None:
        data = load_data(config).to(getattr(torch, config.dtype), config.device)
    check_fixed_steps(config, float(data.t[-1] - data.t[0]), float(torch.diff(data.t).min()))
    return data, build_field(config, data)


RESUME_OVERRIDES = ("steps", "lbfgs_steps", "threads")


def resumed_config(base: FitConfig, overrides: dict[str, Any]) -> FitConfig:
    """A resumed run's config with ``overrides``, which may only extend the schedule
    or set threads (ConfigError otherwise)."""
    bad = sorted(k for k, v in overrides.items() if k not in RESUME_OVERRIDES and getattr(base, k) != v)
    if bad:
        raise ConfigError(f"cannot change {', '.join(bad)} when resuming; start a new run instead")
    return base.replace(**overrides)


def _make_trainer(config: FitConfig) -> Trainer:
    data, field_ = prepare(config)
    regularizer = None
    if config.sparsity or config.coef_l1:  # the KAN paper's sparsity penalty (kanode.symbolic)
        from .symbolic.regularize import sparsity_regularizer
        regularizer = sparsity_regularizer(field_, data.train_states, config.sparsity, config.sparsity_l1,
                                           config.sparsity_entropy, config.coef_l1, seed=config.seed)
    if config.l2:
        regularizer = _with_l2(regularizer, config.l2)
    return Trainer(field_, data, config, regularizer=regularizer)


def _with_l2(regularizer: Any, weight: float) -> Any:
    """``regularizer`` (or nothing) plus the L2 penalty on the network's parameters."""
    def penalty(field_: VectorField) -> torch.Tensor:
        l2 = l2_penalty(field_.net, weight)
        return l2 if regularizer is None else regularizer(field_) + l2
    return penalty


def diverged_summary(run: RunDir) -> dict[str, Any] | None:
    """The run's ``summary.json`` if it says the run diverged (a final state), else None."""
    summary = run.read_summary()
    return summary if summary is not None and summary.get("status") == "diverged" else None


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


def _restore(trainer: Trainer, run: RunDir, state: dict[str, Any]) -> None:
    """Load ``state`` into ``trainer``; ConfigError (one line) if its tensors do not fit
    the run's model and optimiser."""
    where, net = run.last_path, trainer.field.net
    current = getattr(net, "grid_size", None)
    try:
        if current is not None and state["grid_size"] != current:
            net.extend_grid(int(state["grid_size"]))
        trainer.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{where} does not fit the run's model and config ({detail}); "
                          "the checkpoint belongs to another run or is damaged") from None


def remove_if_bare(run: RunDir, lock: Any) -> None:
    """Undo the directory a refused new run created (it holds only the lock file)."""
    if [p.name for p in run.path.iterdir()] == [lock.path.name]:
        lock.release()
        lock.path.unlink(missing_ok=True)
        run.path.rmdir()


def _train(trainer: Trainer, run: RunDir | None, quiet: bool,
           stop_at: int | None = None) -> FitResult:
    from tqdm.auto import tqdm

    config = trainer.config
    history: list[dict[str, Any]] = []
    status, reason = "finished", ""
    bar = tqdm(total=trainer.total_steps, initial=trainer.state.step, disable=quiet,
               desc=f"{config.model} on {config.data or config.system}", unit="step",
               dynamic_ncols=True)
    best_saved = trainer.state.best_step
    try:
        for record in trainer.steps():
            history.append(record.as_row())
            if run is not None:
                run.append_metrics(record.as_row())
                if record.step % config.checkpoint_every == 0 or record.step == trainer.total_steps:
                    run.save_last(trainer.state_dict())
                    best_saved = save_best(trainer.state, _grid(trainer), run, best_saved)
            bar.set_postfix_str(_postfix(record), refresh=False)
            bar.update(1)
            if stop_at is not None and record.step >= stop_at and record.step < trainer.total_steps:
                status, reason = "stopped", f"stopped after step {record.step} as asked"
                if run is not None:
                    run.save_last(trainer.state_dict())
                break
    except Diverged as exc:
        status, reason = "diverged", f"step {trainer.state.step + 1}: {exc}"
    except KeyboardInterrupt:
        status, reason = "stopped", f"interrupted at step {trainer.state.step}"
    finally:
        bar.close()
    if run is not None:
        save_best(trainer.state, _grid(trainer), run, best_saved)
    full_history = read_metrics(run.metrics_path) if run is not None else history
    summary = summarize(trainer, full_history, status, reason)
    result = FitResult(field=trainer.field, history=full_history, summary=summary,
                       run_dir=run.path if run else None, data=trainer.data, config=config)
    if run is not None:
        run.write_summary(summary)
        if status == "finished" and trainer.config.plots:
            draw_plots(result, run.plots_path)
    return result


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


def save_best(state: TrainState, grid_size: int | None, run: RunDir, saved_step: int) -> int:
    """Write ``best.pt`` when the best step moved since ``saved_step``; return the saved step."""
    if state.best_model is not None and state.best_step != saved_step:
        run.save_best(state.best_model, state.best_step, state.best_loss, grid_size)
        return state.best_step
    return saved_step


def _grid(trainer: Trainer) -> int | None:
    return getattr(trainer.field.net, "grid_size", None)


def _postfix(record: StepRecord) -> str:
    text = f"{record.phase} loss={record.train_loss:.3e}"
    if record.extrap_loss is not None:
        text += f" extrap={record.extrap_loss:.2e}"
    return text


# What summary.json's final_* losses are, next to metrics.csv's rows (issue 20, item 7).
LOSSES_AT = ("final_*: at the parameters after the last step (the saved model); metrics.csv row k "
             "holds the losses at the parameters step k started from, so its last row is one step "
             "earlier (a run that did not finish reports its last evaluated row)")


def summarize(trainer: Trainer, history: list[dict[str, Any]], status: str,
             reason: str, final: Evaluation | None = None) -> dict[str, Any]:
    """A run's ``summary.json``; ``final`` is the finished model's evaluation when the
    caller has it already (an ensemble evaluates all members in one solve)."""
    config = trainer.config
    if status != "finished":
        final = None
    elif final is None:
        final = trainer.evaluate()
    losses = [r["train_loss"] for r in history if r["train_loss"] is not None]
    if final is not None:
        losses.append(final.train_loss)
    last_eval = next((r for r in reversed(history) if r["extrap_loss"] is not None
                      or r["val_loss"] is not None), None)
    steps = trainer.state.step
    nfe = sum((r["nfe_forward"] or 0) + (r["nfe_backward"] or 0) for r in history)
    net = trainer.field.net
    return {
        "status": status,
        "reason": reason,
        "system": config.system if not config.data else Path(config.data).stem,
        "data_file": config.data or None,
        "model": config.model,
        "widths": config.resolved_widths(trainer.data.dim),
        "grid_size": getattr(net, "grid_size", None),
        "seed": config.seed,
        "losses_at": LOSSES_AT,
        "final_train_loss": final.train_loss if final else (losses[-1] if losses else None),
        "best_train_loss": min(losses) if losses else None,
        "final_val_loss": final.val_loss if final else (last_eval or {}).get("val_loss"),
        "final_extrap_loss": final.extrap_loss if final else (last_eval or {}).get("extrap_loss"),
        "n_params": count_parameters(trainer.field),
        "steps": steps,
        "wall_time_s": trainer.state.wall_time,
        "time_per_step_s": trainer.state.wall_time / steps if steps else None,
        "nfe_per_step": nfe / len(history) if history else None,
        **split_counts(trainer.data),
        "fitted_initial_state": fitted_initial_state(trainer.field, trainer.data),
        # seconds this process spent compiling training steps (kanode.compiled), once per shape
        "compile_s": compile_report()["compile_s"],
    }


def fitted_initial_state(field: VectorField, data: FitData) -> dict[str, Any] | None:
    """The training trajectories' fitted initial states in the data's units, with the first
    observations they replace (None when the field does not fit them)::

        {"t0": 1900.0, "state_names": ["hare", "lynx"],
         "fitted": [[31.2, 3.9]], "observed": [[30.0, 4.0]]}      # one row per trajectory
    """
    if field.initial_state is None:
        return None
    with torch.no_grad():
        fitted = field.initial_values(data.y[:, 0].to(field.in_weight))
    return {"t0": float(data.t[0]), "state_names": list(data.state_names),
            "fitted": fitted.tolist(), "observed": data.y[:, 0].tolist()}


def print_summary(result: FitResult) -> None:
    s = result.summary
    fmt = lambda v: "n/a" if v is None else f"{v:.3e}"  # noqa: E731
    print(f"{s['status']}: {s['model']} ({s['n_params']} parameters) on {s['system']}, "
          f"{s['steps']} steps in {s['wall_time_s']:.1f} s")
    print(f"  train MSE {fmt(s['final_train_loss'])} (best {fmt(s['best_train_loss'])}), "
          f"held-out MSE {fmt(s['final_val_loss'])}, extrapolation MSE {fmt(s['final_extrap_loss'])}")
    if "n_observed_train" in s:
        print(f"  data: {describe_split(s)}")
        warning = overfit_warning(s["n_params"], s["n_observed_train"])
        if warning and s.get("data_file") and s["status"] != "diverged":  # measured data
            print(f"kanode: warning: {warning}", file=sys.stderr)
    start = s.get("fitted_initial_state")
    if start is not None:
        shown = "; ".join(", ".join(f"{n} {v:.4g}" for n, v in zip(start["state_names"], row))
                          for row in start["fitted"])
        print(f"  fitted initial state at t = {start['t0']:g}: {shown} (summary.json)")
    if s.get("compile_s"):
        print(f"  compiled training step (compile {s['compile_s']:.1f} s in this process, included "
              "in the time; cached across processes)")
    if s["reason"]:
        print(f"  reason: {s['reason']}")
    if result.run_dir is not None:
        print(f"  run directory: {result.run_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = overrides_from_args(args)
        if args.out is not None and args.resume is None:  # before any work (kanode.outdirs)
            check_out_dir(args.out, "ensemble" if args.seeds is not None else "run")
        if args.seeds is not None or (args.resume is not None and is_ensemble_dir(args.resume)):
            from .ensemble.cli import run_ensemble
            return run_ensemble(args, overrides)
        if args.resume is not None:
            result = fit(resume=args.resume, quiet=args.quiet, **overrides)
        else:
            config = load_config(args.config) if args.config is not None else FitConfig()
            recipe = resolve_recipe(config.replace(**overrides))
            config = recipe.config
            if recipe.applied:
                print(recipe.describe())
            out = Path(args.out) if args.out is not None else check_out_dir(default_run_dir(config), "run")
            result = fit(config, out=out, quiet=args.quiet)
    except ConfigError as exc:
        print(f"kanode: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print_summary(result)
    if result.summary["status"] == "diverged":
        print(f"kanode: error: training diverged ({result.summary['reason']}); the last good "
              f"checkpoint is {result.run_dir}/checkpoints/last.pt", file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_OK if result.summary["status"] == "finished" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
