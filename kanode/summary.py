"""A run's ``summary.json``: :func:`summarize` one trained member (a single fit, or an
ensemble member, whose summary is its single fit's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .compiled import compile_report
from .config import FitConfig
from .data import FitData, split_counts
from .plateau import plateau_drop
from .ode import VectorField
from .train import Evaluation, TrainState, count_parameters

__all__ = ["summarize", "fitted_initial_state", "LOSSES_AT"]

# What summary.json's final_* losses are, next to metrics.csv's rows (issue 20, item 7).
LOSSES_AT = ("final_*: at the parameters after the last step (the saved model); metrics.csv row k "
             "holds the losses at the parameters step k started from, so its last row is one step "
             "earlier (a run that did not finish reports its last evaluated row)")


def summarize(field: VectorField, data: FitData, config: FitConfig, state: TrainState,
              history: list[dict[str, Any]], status: str, reason: str,
              final: Evaluation | None = None) -> dict[str, Any]:
    """A run's ``summary.json`` for the trained ``field`` (a member's) with its training
    ``state`` and ``history`` (metrics rows); ``final`` is the finished model's evaluation
    (used only when ``status`` is "finished")."""
    if status != "finished":
        final = None
    losses = [r["train_loss"] for r in history if r["train_loss"] is not None]
    if final is not None:
        losses.append(final.train_loss)
    last_eval = next((r for r in reversed(history) if r["extrap_loss"] is not None
                      or r["val_loss"] is not None), None)
    steps = state.step
    nfe = sum((r["nfe_forward"] or 0) + (r["nfe_backward"] or 0) for r in history)
    return {
        "status": status,
        "reason": reason,
        "system": config.system if not config.data else Path(config.data).stem,
        "data_file": config.data or None,
        "model": config.model,
        "widths": config.resolved_widths(data.dim),
        "grid_size": getattr(field.net, "grid_size", None),
        "seed": config.seed,
        "losses_at": LOSSES_AT,
        "final_train_loss": final.train_loss if final else (losses[-1] if losses else None),
        "best_train_loss": _best_whole_loss(state, final),
        "final_val_loss": final.val_loss if final else (last_eval or {}).get("val_loss"),
        "final_extrap_loss": final.extrap_loss if final else (last_eval or {}).get("extrap_loss"),
        "n_params": count_parameters(field),
        "steps": steps,
        "wall_time_s": state.wall_time,
        "time_per_step_s": state.wall_time / steps if steps else None,
        "nfe_per_step": nfe / len(history) if history else None,
        **split_counts(data),
        "fitted_initial_state": fitted_initial_state(field, data),
        # seconds this process spent compiling training steps (kanode.compiled), once per shape
        "compile_s": compile_report()["compile_s"],
        **plateau_fields(config, history, reason),
    }


def _best_whole_loss(state: TrainState, final: Evaluation | None) -> float | None:
    """The lowest whole-trajectory training MSE of the run (its best model's, or the final
    model's): windows' losses (``batch_time``, a curriculum) are not comparable and not counted."""
    whole = [v for v in (state.best_loss, final.train_loss if final else None) if v is not None]
    best = min(whole)
    return best if best < float("inf") else None


def plateau_fields(config: FitConfig, history: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    """With the plateau rule on (``plateau_steps > 0``): ``stopped_on`` ("plateau" when the
    rule stopped the run, else "cap": it ran its steps) and ``plateau_drop``, the relative
    drop of the training loss over its last ``plateau_steps`` L-BFGS steps (None when it took
    fewer). Empty otherwise."""
    if not config.plateau_steps:
        return {}
    losses = [r["train_loss"] for r in history if r["phase"] == "lbfgs" and r["train_loss"] is not None]
    return {"stopped_on": "plateau" if reason.startswith("plateau") else "cap",
            "plateau_drop": plateau_drop(losses, config.plateau_steps)}


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
