"""What a trained vector field predicts, as numpy arrays (for figures and reports).

Every function takes a field (and :class:`kanode.data.FitData` or initial
states) and returns float64 numpy arrays; nothing here draws.
:mod:`kanode.report` turns the arrays into the figures of
:mod:`kanode.plots.run`, ``python -m kanode.predict`` into a forecast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import FIXED_STEP_METHODS
from ..data import FitData
from ..ode import SolverError, solve

__all__ = ["VectorFieldGrid", "dense_solver", "dense_times", "predict_trajectories", "solve_states",
           "solver_gap", "state_bounds", "vector_field_grid", "DENSE_POINTS", "GAP_REFINE"]

DENSE_POINTS = 400  # points of a dense curve (figures, forecasts) unless asked otherwise


def solve_states(field: nn.Module, y0: Tensor, t: Tensor, solver: dict[str, Any] | None = None) -> np.ndarray:
    """The field's trajectories from states ``y0`` (n, dim) at ``t[0]``, at the times ``t`` (n_t,).

    ``solver``: keywords of :func:`kanode.ode.solve` (None: its defaults). A
    solve that fails (:class:`SolverError`) gives NaN everywhere, so that data
    can still be drawn next to it. Returns (n, n_t, dim) float64.
    """
    with torch.no_grad():
        try:
            pred = solve(field, y0, t, adjoint=False, **(solver or {}))  # (n_t, n, dim)
        except SolverError:
            return np.full((y0.shape[0], t.shape[0], y0.shape[-1]), np.nan)
    return pred.transpose(0, 1).cpu().double().numpy()


def predict_trajectories(field: nn.Module, data: FitData, solver: dict[str, Any] | None = None,
                         t: Tensor | None = None) -> np.ndarray:
    """The field's trajectories from the data's initial states ``data.y[:, 0]``.

    ``t`` : (n,) output times from ``data.t[0]`` (default: the data's time
    grid, :func:`dense_times` for a curve between the observations).
    ``solver``: keywords of :func:`kanode.ode.solve` (``kanode.train.solver_options``
    gives those of a fit, :func:`dense_solver` refines them for a dense ``t``);
    None: ``solve``'s defaults. A failed solve gives NaN (see :func:`solve_states`).

    Returns (n_traj, n, dim); with the default ``t`` the shape of ``data.y``.
    """
    if t is None:
        t = data.t
    elif float(t[0]) != float(data.t[0]):
        raise ValueError(f"the times must start at the data's initial time {float(data.t[0]):g}, "
                         f"got {float(t[0]):g}")
    return solve_states(field, data.y[:, 0], t.to(data.t), solver)


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


def state_bounds(states: np.ndarray, pad: float = 0.15) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) around the first two columns of states (m, >= 2),
    widened by ``pad`` of each range; a range without spread gets ±max(pad |value|, pad)."""
    lo, hi = states[:, :2].min(0), states[:, :2].max(0)
    spread = hi - lo
    margin = np.where(spread > 0, pad * spread, np.maximum(pad * np.abs(lo), pad))
    return (float(lo[0] - margin[0]), float(hi[0] + margin[0]), float(lo[1] - margin[1]), float(hi[1] + margin[1]))


@dataclass(frozen=True)
class VectorFieldGrid:
    """A learned 2-D vector field on a grid, and the true one where it is known.

    xs : (n_x,), ys : (n_y,) the grid lines; learned : (n_y, n_x, 2) the
    derivatives at ``(xs[j], ys[i])`` (``meshgrid`` order); true : the same for
    the data's true system, or None when the data does not know it (measured
    data); states : (m, 2) the observed states the grid spans.
    """

    xs: np.ndarray
    ys: np.ndarray
    learned: np.ndarray
    true: np.ndarray | None
    states: np.ndarray


def vector_field_grid(field: nn.Module, data: FitData, n: int = 25, pad: float = 0.15) -> VectorFieldGrid:
    """The field, and the data's true system when it is known (``data.system``), on an
    n × n grid over the observed states.

    Needs 2-D data; raises ValueError otherwise. The field is evaluated at t = 0
    (a time-dependent field shows its t = 0 slice).
    """
    if data.dim != 2:
        raise ValueError(f"a vector-field grid needs 2-D data; this data has dim {data.dim}")
    states = data.y.cpu().double().numpy().reshape(-1, 2)
    states = states[np.isfinite(states).all(axis=1)]  # a missing value is no state
    x0, x1, y0, y1 = state_bounds(states, pad)
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=-1)  # (n*n, 2)
    param = next(field.parameters())
    with torch.no_grad():
        z = torch.as_tensor(grid, dtype=param.dtype, device=param.device)
        learned = field(torch.zeros((), dtype=param.dtype, device=param.device), z).cpu().double().numpy()
    true = None
    if data.system is not None:
        true = np.asarray(data.system.rhs(0.0, grid), dtype=np.float64).reshape(n, n, 2)
    return VectorFieldGrid(xs, ys, learned.reshape(n, n, 2), true, states)
