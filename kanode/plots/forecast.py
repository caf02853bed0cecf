"""The figure of a forecast: data as markers, the forecast as a dense line, a band across
members, the training window shaded. Takes arrays, returns a Figure (nothing solves here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["forecast_figure"]

MAX_TRAJ_DRAWN = 8  # trajectories drawn per panel; more would hide each other


def forecast_figure(t_data: np.ndarray, y_data: np.ndarray, n_train: int, t: np.ndarray,
                    center: np.ndarray, state_names: Sequence[str], low: np.ndarray | None = None,
                    high: np.ndarray | None = None, center_label: str = "forecast",
                    band_label: str = "band", title: str = "", max_states: int = 6) -> "Figure":
    """One panel per state (at most ``max_states``) against time.

    Parameters
    ----------
    t_data : (n_t,) observation times; y_data : (n_traj, n_t, dim) observations
        (NaN where missing), drawn as markers.
    n_train : the first n_train observation times are the training window (shaded).
    t : (n_pts,) the forecast's times; center : (n, n_pts, dim) its line
        (the median of an ensemble); low, high : (n, n_pts, dim) the band, or None.
    Trajectory k of the data and of the forecast share colour ``C{k}``.
    """
    from matplotlib.figure import Figure

    dim = min(center.shape[-1], max_states)
    fig = Figure(figsize=(8, 1.9 * dim + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(dim, 1, sharex=True))
    n_data = min(y_data.shape[0], MAX_TRAJ_DRAWN)
    n_lines = min(center.shape[0], MAX_TRAJ_DRAWN)
    for d, ax in enumerate(axes):
        first = d == 0
        if n_train > 0:
            ax.axvspan(t_data[0], t_data[n_train - 1], color="C2", alpha=0.1,
                       label="training window" if first else None)
        for k in range(n_lines):
            if low is not None and high is not None:
                ax.fill_between(t, low[k, :, d], high[k, :, d], color=f"C{k}", alpha=0.25, lw=0,
                                label=band_label if first and k == 0 else None)
            ax.plot(t, center[k, :, d], f"C{k}-", lw=1.6, label=center_label if first and k == 0 else None)
        for k in range(n_data):
            ax.plot(t_data, y_data[k, :, d], "o", color=f"C{k}", mec="k", mew=0.6, ms=4,
                    label="data" if first and k == 0 else None)
        ax.set_ylabel(state_names[d])
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("t")
    if title:
        axes[0].set_title(title)
    fig.legend(loc="outside upper center", ncols=4, fontsize=8)
    return fig
