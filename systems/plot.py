"""Figures of trajectories. Functions take data and return a matplotlib Figure.

matplotlib is imported here only, lazily, so ``import systems`` does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .trajectories import Trajectories

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_trajectories"]

_MAX_LEGEND = 10


def plot_trajectories(traj: Trajectories,
                      phase_pairs: Sequence[tuple[int, int]] = ((0, 1),),
                      title: str | None = None) -> Figure:
    """States against time (left) and a phase portrait (right).

    Parameters
    ----------
    traj : Trajectories
        ``y`` of shape (n_traj, n_t, dim); every trajectory is drawn.
    phase_pairs : sequence of (i, j)
        State index pairs drawn as curves ``y_j`` against ``y_i`` on the
        phase axes, e.g. ``system.phase_pairs`` (the seven orbits for
        pleiades). Pairs out of range are skipped; no phase panel if none remain.
    title : str, optional
        Figure title; default the system name.
    """
    from matplotlib.figure import Figure

    pairs = [(i, j) for i, j in phase_pairs if max(i, j) < traj.dim]
    fig = Figure(figsize=(11 if pairs else 6, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if pairs else 1, squeeze=False)[0]
    colors = [f"C{k % 10}" for k in range(max(traj.dim, len(pairs)))]
    ax_time = axes[0]
    for k, name in enumerate(traj.state_names):
        for n in range(traj.n_traj):
            ax_time.plot(traj.t, traj.y[n, :, k], color=colors[k], lw=1.0,
                         alpha=1.0 if n == 0 else 0.5, label=name if n == 0 else None)
    ax_time.set_xlabel("t")
    ax_time.set_ylabel("state")
    if traj.dim <= _MAX_LEGEND:
        ax_time.legend(loc="best", fontsize="small")
    if pairs:
        ax_phase = axes[1]
        for p, (i, j) in enumerate(pairs):
            for n in range(traj.n_traj):
                ax_phase.plot(traj.y[n, :, i], traj.y[n, :, j], color=colors[p], lw=1.0,
                              alpha=1.0 if n == 0 else 0.5)
            ax_phase.plot(traj.y[0, 0, i], traj.y[0, 0, j], "o", color=colors[p], ms=4)
        names = traj.state_names
        if len(pairs) == 1:
            ax_phase.set_xlabel(names[pairs[0][0]])
            ax_phase.set_ylabel(names[pairs[0][1]])
        else:
            ax_phase.set_xlabel(f"{names[pairs[0][0]]} … {names[pairs[-1][0]]}")
            ax_phase.set_ylabel(f"{names[pairs[0][1]]} … {names[pairs[-1][1]]}")
            ax_phase.set_aspect("equal", adjustable="datalim")
        ax_phase.set_title("phase portrait (dot: start)", fontsize="small")
    fig.suptitle(title if title is not None else (traj.system or "trajectories"))
    return fig
