"""What a trained vector field predicts, as numpy arrays (for figures and reports).

Every function takes a field and :class:`kanode.data.FitData` and returns
float64 numpy arrays; nothing here draws. :mod:`kanode.report` turns the
arrays into the figures of :mod:`kanode.plots.run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data import FitData
from ..ode import SolverError, solve

__all__ = ["VectorFieldGrid", "predict_trajectories", "solve_states", "state_bounds", "vector_field_grid"]


def predict_trajectories(field: nn.Module, data: FitData, solver: dict[str, Any] | None = None,
                         t: Tensor | None = None) -> np.ndarray:
    """The field's trajectories from the data's initial states (the field's fitted ones when it
    has them), over the whole time grid
    (or the times ``t`` (n,) from ``data.t[0]``: a dense curve between the observations).

    ``solver``: keywords of :func:`kanode.ode.solve` (``kanode.train.solver_options``
    gives those of a fit); None: ``solve``'s defaults. A solve that fails
    (:class:`SolverError`) gives NaN everywhere, so the data can still be drawn.

    Returns (n_traj, n_t, dim), the shape of ``data.y`` (n_t = n with ``t``).
    """
    if t is not None and float(t[0]) != float(data.t[0]):
        raise ValueError(f"the times must start at the data's initial time {float(data.t[0]):g}, "
                         f"got {float(t[0]):g}")
    y0 = field.initial_values(data.y[:, 0]) if hasattr(field, "initial_values") else data.y[:, 0]
    # from the fitted initial states, if the field has them
    return solve_states(field, y0, data.t if t is None else t.to(data.t), solver)


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


def state_bounds(states: np.ndarray, pad: float = 0.15) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) around the first two columns of states (m, >= 2),
    widened by ``pad`` of each range; a range without spread gets ±max(pad |value|, pad)."""
    lo, hi = states[:, :2].min(0), states[:, :2].max(0)
    spread = hi - lo
    margin = np.where(spread > 0, pad * spread, np.maximum(pad * np.abs(lo), pad))
    return (float(lo[0] - margin[0]), float(hi[0] + margin[0]), float(lo[1] - margin[1]), float(hi[1] + margin[1]))


@dataclass(frozen=True)
class VectorFieldGrid:
    """A learned and a true 2-D vector field on one grid.

    xs : (n_x,), ys : (n_y,) the grid lines; learned, true : (n_y, n_x, 2) the
    derivatives at ``(xs[j], ys[i])`` (``meshgrid`` order); states : (m, 2) the
    observed states the grid spans. ``true`` is None when the data does not
    know its system (measured data).
    """

    xs: np.ndarray
    ys: np.ndarray
    learned: np.ndarray
    true: np.ndarray | None
    states: np.ndarray


def vector_field_grid(field: nn.Module, data: FitData, n: int = 25, pad: float = 0.15) -> VectorFieldGrid:
    """The field and the data's true system on an n × n grid over the observed states.

    Needs 2-D data; raises ValueError otherwise. Without a known system
    (``data.system`` None) ``true`` is None.
    The field is evaluated at t = 0 (a time-dependent field shows its t = 0 slice).
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
