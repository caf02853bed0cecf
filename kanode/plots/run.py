"""Figures of one run. Each function takes arrays and returns a Figure.

Nothing here solves or trains: :mod:`kanode.predict` computes the arrays and
:mod:`kanode.report` draws a run directory's figures from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["loss_curves", "trajectory_fit", "phase_portrait", "learned_vector_field", "vector_field_error"]

_LOSSES = (("train_loss", "train"), ("val_loss", "held-out ICs"), ("extrap_loss", "extrapolation"))


def _figure(*args: Any, **kwargs: Any) -> tuple["Figure", Any]:
    from matplotlib.figure import Figure

    fig = Figure(*args, **kwargs)
    return fig, fig.subplots


def loss_curves(history: Sequence[dict[str, Any]], title: str = "") -> "Figure":
    """Training, held-out and extrapolation MSE against step (log scale).

    ``history`` rows have the ``metrics.csv`` columns.
    """
    fig, subplots = _figure(figsize=(6, 4), layout="constrained")
    ax = subplots()
    for key, label in _LOSSES:
        pts = [(r["step"], r[key]) for r in history if r.get(key) is not None and r[key] > 0]
        if pts:
            steps, values = zip(*pts)
            ax.plot(steps, values, label=label, marker="." if key != "train_loss" else None)
    switch = next((r["step"] for r in history if r.get("phase") == "lbfgs"), None)
    if switch is not None and history[0].get("phase") == "adam":
        ax.axvline(switch, color="grey", ls=":", lw=1, label="Adam → L-BFGS")
    ax.set(yscale="log", xlabel="step", ylabel="MSE", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def trajectory_fit(t: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, n_train: int,
                   state_names: Sequence[str], max_states: int = 6,
                   t_pred: np.ndarray | None = None) -> "Figure":
    """Observed states (markers) and the model's trajectory (a line) over the training and
    extrapolation windows.

    Parameters
    ----------
    t : (n_t,) observation times; y_true : (n_traj, n_t, dim) observations (NaN
        where missing); the first trajectory is drawn.
    y_pred : (n_traj, n_pred, dim) the model's trajectories at ``t_pred`` (n_pred,),
        a dense grid for a curve between the observations (default: at ``t``).
    n_train : points in the training window (shaded).
    """
    t_pred = t if t_pred is None else t_pred
    dim = min(y_true.shape[-1], max_states)
    fig, subplots = _figure(figsize=(7, 1.6 * dim + 0.6), layout="constrained")
    axes = np.atleast_1d(subplots(dim, 1, sharex=True))
    for d, ax in enumerate(axes):
        ax.axvspan(t[0], t[n_train - 1], color="C2", alpha=0.08,
                   label="training window" if d == 0 else None)
        ax.plot(t_pred, y_pred[0, :, d], "C0-", lw=1.5, label="neural ODE" if d == 0 else None)
        ax.plot(t, y_true[0, :, d], "ko", ms=2.5 if t.size > 60 else 4, mfc="none" if t.size <= 60 else "k",
                label="data" if d == 0 else None)
        ax.set_ylabel(state_names[d])
    fig.legend(loc="outside upper center", ncols=3, fontsize=8)
    axes[-1].set_xlabel("t")
    return fig


def phase_portrait(y_true: np.ndarray, y_pred: np.ndarray, state_names: Sequence[str],
                   system: str | None = None) -> "Figure":
    """First two states against each other; for Pleiades the seven planar orbits.

    y_true : (n_traj, n_t, dim) observations (markers); y_pred : (n_traj, n_pred,
    dim) the model's trajectories (lines; a dense grid draws a smooth orbit), dim >= 2.
    """
    if y_true.shape[-1] < 2:
        raise ValueError(f"a phase portrait needs at least 2 state dimensions, got {y_true.shape[-1]}")
    fig, subplots = _figure(figsize=(5, 5), layout="constrained")
    ax = subplots()
    if system == "pleiades":
        for body in range(7):
            ax.plot(y_true[0, :, body], y_true[0, :, 7 + body], "k-", lw=0.8, alpha=0.5)
            ax.plot(y_pred[0, :, body], y_pred[0, :, 7 + body], f"C{body}--", lw=1.2)
        ax.set(xlabel="x", ylabel="y", title="Pleiades orbits (data solid, model dashed)")
    else:
        for k in range(y_true.shape[0]):
            ax.plot(y_true[k, :, 0], y_true[k, :, 1], "k.", ms=2 if y_true.shape[1] > 60 else 6, zorder=3,
                    label="data" if k == 0 else None)
            ax.plot(y_pred[k, :, 0], y_pred[k, :, 1], "C0-", lw=1.2,
                    label="neural ODE" if k == 0 else None)
        ax.set(xlabel=state_names[0], ylabel=state_names[1], title="phase portrait")
        ax.legend()
    ax.set_aspect("auto")
    return fig


def vector_field_error(xs: np.ndarray, ys: np.ndarray, learned: np.ndarray, true: np.ndarray,
                       states: np.ndarray | None = None,
                       state_names: Sequence[str] = ("x", "y")) -> "Figure":
    """Learned and true 2-D vector fields side by side, and the error ‖f̂ − f‖ as a map.

    xs : (n_x,), ys : (n_y,) increasing grid lines; learned, true : (n_y, n_x, 2)
    the derivatives at ``(xs[j], ys[i])``; states : (m, 2) visited states to overlay
    (:func:`kanode.predict.vector_field_grid` returns all of them).
    """
    gx, gy = np.meshgrid(xs, ys)
    err = np.linalg.norm(learned - true, axis=-1)  # (n_y, n_x)
    fig, subplots = _figure(figsize=(13, 4), layout="constrained")
    axes = subplots(1, 3)
    for ax, values, title in ((axes[0], learned, "learned"), (axes[1], true, "true")):
        ax.streamplot(xs, ys, values[..., 0], values[..., 1], density=0.9, linewidth=0.8, color="C0")
        ax.set(title=f"{title} vector field", xlabel=state_names[0], ylabel=state_names[1])
    mesh = axes[2].pcolormesh(gx, gy, np.log10(err + 1e-16), shading="auto", cmap="magma")
    fig.colorbar(mesh, ax=axes[2], label="log10 |f_learned − f_true|")
    axes[2].set(title="error", xlabel=state_names[0], ylabel=state_names[1])
    if states is not None:
        for ax in axes:
            ax.plot(states[:, 0], states[:, 1], "w." if ax is axes[2] else "k.", ms=2)
    return fig


def learned_vector_field(xs: np.ndarray, ys: np.ndarray, learned: np.ndarray,
                         states: np.ndarray | None = None,
                         state_names: Sequence[str] = ("x", "y")) -> "Figure":
    """The learned 2-D vector field alone (the data's true field is not known: measured data).

    xs : (n_x,), ys : (n_y,) increasing grid lines; learned : (n_y, n_x, 2) the
    derivatives at ``(xs[j], ys[i])``, drawn as streamlines coloured by speed;
    states : (m, 2) observed states to overlay.
    """
    fig, subplots = _figure(figsize=(5.5, 4.5), layout="constrained")
    ax = subplots()
    speed = np.linalg.norm(learned, axis=-1)  # (n_y, n_x)
    stream = ax.streamplot(xs, ys, learned[..., 0], learned[..., 1], density=0.9, linewidth=0.8,
                           color=speed, cmap="viridis")
    fig.colorbar(stream.lines, ax=ax, label="speed |f_learned|")
    if states is not None:
        ax.plot(states[:, 0], states[:, 1], "ko", ms=3, label="data")
        ax.legend(loc="upper right", fontsize=8)
    ax.set(title="learned vector field", xlabel=state_names[0], ylabel=state_names[1])
    return fig
