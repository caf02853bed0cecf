"""Forecasts of a loaded run past its data: dense trajectories, and for an ensemble the
median and a band across its members.

:func:`forecast` solves every member's field from the same initial states on
one dense time grid, with the run's own solver (:func:`~kanode.predict.dense.dense_solver`);
:class:`Forecast` holds the members' trajectories and summarises them. The
band is the range of the members (``coverage`` 1: min–max) or a central
quantile range (``coverage`` 0.9: the 5 %–95 % quantiles, numpy's linear
interpolation between members) — with a handful of members (seeds), min–max
is what they show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..train import solver_options
from .arrays import predict_trajectories, solve_states
from .dense import DENSE_POINTS, dense_solver, dense_times
from .load import LoadedEnsemble, LoadedRun

__all__ = ["Forecast", "forecast", "band_names"]


@dataclass(frozen=True)
class Forecast:
    """Trajectories of M members from n initial states on one time grid.

    Attributes
    ----------
    t : (n_t,) times, from the initial time t[0].
    members : (M, n, n_t, dim) each member's trajectories from n initial
        states (``members[:, :, 0]``); NaN for a member whose solve failed
        (blew up or ran out of solver steps).
    state_names : the ``dim`` state names.
    member_paths : the M members' run directories.
    """

    t: np.ndarray
    members: np.ndarray
    state_names: tuple[str, ...]
    member_paths: tuple[str, ...]

    @property
    def failed(self) -> tuple[int, ...]:
        """Indices of the members whose solve failed (left out of :meth:`median` and :meth:`band`)."""
        return tuple(int(m) for m in np.flatnonzero(np.isnan(self.members).all(axis=(1, 2, 3))))

    def _solved(self) -> np.ndarray:
        failed = set(self.failed)
        ok = [m for m in range(self.members.shape[0]) if m not in failed]
        if not ok:
            raise ValueError("every member's solve failed; there is no forecast to summarise")
        return self.members[ok]  # (M_ok, n, n_t, dim)

    def median(self) -> np.ndarray:
        """(n, n_t, dim) the median across the members that solved (a single member: its trajectory)."""
        return np.median(self._solved(), axis=0)

    def band(self, coverage: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (n, n_t, dim): the central ``coverage`` quantile range across the
        members that solved; coverage 1 is min–max."""
        if not 0.0 < coverage <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        tail = (1.0 - coverage) / 2.0
        low, high = np.quantile(self._solved(), [tail, 1.0 - tail], axis=0)
        return low, high


def band_names(coverage: float) -> tuple[str, str]:
    """Suffixes of a band's columns: ("min", "max") for coverage 1, else the quantiles in
    percent, e.g. ("q05", "q95") for 0.9 and ("q25", "q75") for 0.5."""
    if coverage >= 1.0:
        return "min", "max"
    tail = 100.0 * (1.0 - coverage) / 2.0
    return f"q{tail:02g}", f"q{100.0 - tail:02g}"


def forecast(run: LoadedRun | LoadedEnsemble, until: float, points: int = DENSE_POINTS,
             y0: Sequence[float] | np.ndarray | None = None, t0: float | None = None) -> Forecast:
    """Solve the run's field(s) from initial states to ``until`` on ``points`` equally spaced times.

    Parameters
    ----------
    run : :func:`kanode.load_run`'s result (one run, or an ensemble's members).
    until : the last time (after ``t0``).
    points : time points from ``t0`` to ``until`` (≥ 2).
    y0 : one initial state (dim,) or several (n, dim); default: the training
        trajectories' initial states, as each member's run figures start from them
        (:func:`~kanode.predict.arrays.predict_trajectories`).
    t0 : the time of ``y0`` (needs ``y0``); default: the data's first time ``data.t[0]``.

    Every member is solved with the run's solver (method and tolerances of its
    config), a fixed-step method with steps no longer than the grid's spacing.

    Raises
    ------
    ValueError : ``until`` not after ``t0``, fewer than 2 points, a ``y0`` of
        the wrong size or not finite, ``t0`` without ``y0``.
    """
    data = run.data
    if t0 is not None and y0 is None:
        raise ValueError("a forecast from another time t0 needs its initial state y0")
    start = float(data.t[0]) if t0 is None else float(t0)
    if not np.isfinite(start) or not np.isfinite(until) or not until > start:
        raise ValueError(f"the forecast must end after it starts: t0 = {start:g}, until = {until:g}")
    t = dense_times(start, float(until), points)
    solvers = [dense_solver(solver_options(m.config, m.data), t) for m in run.members]
    if y0 is None:  # each member from the data's initial states, as its run's figures show it
        solves = [predict_trajectories(m.field, m.data, solver, t) for m, solver in zip(run.members, solvers)]
    else:
        values = np.asarray(y0, dtype=np.float64).reshape(-1)
        if values.size == 0 or values.size % data.dim:
            raise ValueError(f"y0 must give the {data.dim} states ({', '.join(data.state_names)}) of each "
                             f"initial state, got {values.size} numbers")
        if not np.isfinite(values).all():
            raise ValueError("y0 must be finite numbers")
        states = torch.from_numpy(values.reshape(-1, data.dim))
        solves = [solve_states(m.field, states, t, solver) for m, solver in zip(run.members, solvers)]
    return Forecast(t=t.numpy(), members=np.stack(solves), state_names=tuple(data.state_names),
                    member_paths=tuple(str(m.path) for m in run.members))  # members: (M, n, n_t, dim)
