"""Dense curves of a trained field: equally spaced times, a fit's solver refined for them,
and how far that solver is from the ODE it trains (:func:`solver_gap`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import FIXED_STEP_METHODS
from ..data import FitData
from .arrays import predict_trajectories

__all__ = ["DENSE_POINTS", "GAP_REFINE", "dense_solver", "dense_times", "solver_gap"]

DENSE_POINTS = 400  # points of a dense curve (figures, forecasts) unless asked otherwise


def dense_times(start: float, end: float, points: int = DENSE_POINTS,
                like: Tensor | None = None) -> Tensor:
    """(points,) equally spaced times from ``start`` to ``end`` (float64, or ``like``'s dtype
    and device): where a dense curve is evaluated."""
    if not end > start or points < 2:
        raise ValueError(f"a dense grid needs end > start and at least 2 points, got [{start:g}, "
                         f"{end:g}] with {points}")
    t = torch.linspace(start, end, points, dtype=torch.float64)
    return t if like is None else t.to(like)


def dense_solver(solver: dict[str, Any], t: Tensor) -> dict[str, Any]:
    """``solver`` (a fit's :func:`kanode.train.solver_options`) for the output times t (n,):
    a fixed-step method steps at most the spacing of t — a curve between the steps is
    the ODE's, never an interpolation — and may take the steps that needs."""
    if solver.get("method") not in FIXED_STEP_METHODS:
        return dict(solver)
    step = min(float(solver["step_size"]), float(torch.diff(t).min()))
    steps = math.ceil(float(t[-1] - t[0]) / step)
    return {**solver, "step_size": step, "max_num_steps": max(int(solver["max_num_steps"]), steps)}


GAP_REFINE = 16  # solver_gap's finer solve: steps this many times shorter


def solver_gap(field: nn.Module, data: FitData, solver: dict[str, Any]) -> tuple[float, float] | None:
    """Training-window MSE of the field's trajectories with a fixed-step ``solver`` (a fit's,
    :func:`kanode.train.solver_options`) and with steps :data:`GAP_REFINE` times shorter
    (the ODE's own solution, to the method's accuracy); None for adaptive methods.

    A field trained with a step as long as the sampling interval can fit the method's
    discretisation error: then the second number (what the ODE, a dense forecast and the
    figures show) is much larger than the first (what the fit reported).
    """
    if solver.get("method") not in FIXED_STEP_METHODS:
        return None
    fine = {**solver, "step_size": float(solver["step_size"]) / GAP_REFINE,
            "max_num_steps": int(solver["max_num_steps"]) * GAP_REFINE}
    observed = data.y_train.cpu().double().numpy()
    n = data.n_train
    return tuple(float(np.nanmean((predict_trajectories(field, data, options)[:, :n] - observed) ** 2))
                 for options in (solver, fine))
