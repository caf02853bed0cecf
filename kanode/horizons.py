"""A horizon curriculum: fit short windows from the observed states first, then the whole series.

A neural ODE fitted to the whole of a short, noisy oscillating series from a
random start often settles on the trajectory through the data's mean (the
damped local minimum): the loss of a long solve is flat in the directions
that would make it oscillate. Windows of a few sampling intervals, each
started at an observed state (multiple shooting with the observations as
shooting nodes), are a nearly convex problem: the field learns the local
flow, which already turns around the cycle, and later stages lengthen the
windows until the whole training trajectory is the loss.

``FitConfig.horizons`` lists the window lengths in sampling intervals, e.g.
``[2, 4, 8]``. The Adam steps are split into ``len(horizons) + 1`` equal
stages: stage s fits every window of ``horizons[s] + 1`` consecutive points
(all of them, every start and every training trajectory: deterministic, no
generator), and the last stage (and every L-BFGS step) fits the whole
training trajectory (from the fitted initial states with
``fit_initial_state``). A horizon that spans the whole training window is the
whole trajectory. A curriculum step records its windows' MSE as its
``train_loss`` in ``metrics.csv`` (as random windows do with ``batch_time``);
the "best" checkpoint and ``best_train_loss`` compare whole-trajectory losses
(plus the penalty) only (a window step counts through its evaluation, every
``eval_every`` steps),
and the evaluations (``final_train_loss``) are always the whole trajectory's. Both trainers call :func:`window_points` and
:func:`curriculum_windows` where they pick their windows, so a member of an
ensemble fits the windows of its single fit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import ConfigError, FitConfig

__all__ = ["window_points", "curriculum_windows", "doubling_horizons"]


def window_points(config: FitConfig, n_train: int, step: int) -> int:
    """Points per curriculum window at global step ``step`` (0-based); 0 when the step fits the
    whole training trajectory (no curriculum, its last stage, L-BFGS steps, or a horizon
    reaching the end of the ``n_train``-point window)."""
    if not config.horizons or config.optimizer == "lbfgs" or step >= config.steps:
        return 0
    stage = step * (len(config.horizons) + 1) // config.steps
    if stage >= len(config.horizons):
        return 0
    points = config.horizons[stage] + 1
    return points if points < n_train else 0


def curriculum_windows(y: Tensor, points: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every window of ``points`` consecutive training points that starts at a fully observed
    state (trajectory-major, then by start).

    Parameters
    ----------
    y : (n_traj, n_train, dim) training states (NaN where missing), or (M, n_traj, n_train, dim)
        for an ensemble: each member's windows, as its single fit's (the members must have the
        same missing cells).

    Returns
    -------
    y0 : (batch, dim) window starts ((M, batch, dim) for an ensemble).
    target : (points, batch, dim) observed states along each window ((points, M, batch, dim)).
    start : (batch,) index of each window's first point ((M, batch)), for
        :func:`kanode.data.window_times`.
    """
    if y.ndim == 4:
        parts = [curriculum_windows(member, points) for member in y]
        if len({p[2].numel() for p in parts}) != 1:
            raise ConfigError("a horizon curriculum in an ensemble needs the same missing cells in "
                              "every member's data; fit the members separately")
        return (torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts], dim=1),
                torch.stack([p[2] for p in parts]))
    n_traj, n_train, _ = y.shape
    assert 2 <= points <= n_train, (points, n_train)
    n_start = n_train - points + 1
    startable = ~torch.isnan(y[:, :n_start]).any(dim=2)                    # (n_traj, n_start)
    traj, start = startable.nonzero(as_tuple=True)                         # (batch,) each
    if not traj.numel():
        raise ConfigError(f"no window of {points} points starts at a fully observed state; "
                          "give shorter horizons")
    offsets = torch.arange(points, device=y.device)
    rows = y[traj[None, :], start[None, :] + offsets[:, None]]            # (points, batch, dim)
    return rows[0], rows, start


def doubling_horizons(n_train: int, first: int = 2) -> list[int]:
    """``first``, 2·first, 4·first, … sampling intervals, those shorter than the
    ``n_train``-point training window (n_train − 1 intervals): 16 points → [2, 4, 8],
    21 → [2, 4, 8, 16], 5 → [2], 3 → []."""
    horizons = []
    h = first
    while h < n_train - 1:
        horizons.append(h)
        h *= 2
    return horizons
