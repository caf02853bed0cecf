"""Figures of symbolic regression: the surviving edges and the pruned network.

Both take arrays and return a Figure (nothing here trains or fits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["edge_fits", "network"]


def edge_fits(edges: Sequence[dict[str, Any]], max_cols: int = 4) -> "Figure":
    """One panel per edge: learned activation, its symbolic fit and a histogram of visited inputs.

    Each entry has ``title`` (str), ``x`` (N,) sample points, ``learned`` (N,)
    the spline edge there, ``fit`` (N,) the chosen formula there and
    ``visited`` (n,) the edge's inputs over the training states.
    """
    from matplotlib.figure import Figure

    n = max(len(edges), 1)
    cols = min(max_cols, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, edge in zip(axes, edges):
        hist = ax.twinx()
        hist.hist(edge["visited"], bins=20, color="0.85", zorder=0)
        hist.set_yticks([])
        ax.set_zorder(hist.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot(edge["x"], edge["learned"], "C0-", lw=2, label="learned")
        ax.plot(edge["x"], edge["fit"], "C3--", lw=1.3, label="symbolic")
        ax.set_title(edge["title"], fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(edges):]:
        ax.set_axis_off()
    if edges:
        axes[0].legend(fontsize=7, loc="best")
    else:
        axes[0].text(0.5, 0.5, "no surviving spline edges", ha="center", va="center")
    return fig


def network(widths: Sequence[int], scores: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None = None,
            input_names: Sequence[str] = (), output_names: Sequence[str] = ()) -> "Figure":
    """The network drawn as pykan does: one line per edge, opacity by score.

    scores[l] : (widths[l+1], widths[l]) edge scores (0 draws nothing);
    labels[l] : same shape, strings drawn at the middle of each edge (e.g. the function).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.4 * max(widths) + 2, 1.6 * len(widths) + 1), layout="constrained")
    ax = fig.subplots()
    positions = [np.linspace(-(w - 1) / 2, (w - 1) / 2, w) if w > 1 else np.zeros(1) for w in widths]
    top = max((float(np.max(s)) for s in scores if np.size(s)), default=1.0) or 1.0
    for l, s in enumerate(scores):
        for o in range(s.shape[0]):
            for i in range(s.shape[1]):
                alpha = float(np.clip(s[o, i] / top, 0.0, 1.0))
                if alpha <= 0:
                    continue
                x0, x1 = positions[l][i], positions[l + 1][o]
                ax.plot([x0, x1], [l, l + 1], color="k", alpha=max(alpha, 0.05), lw=1.5)
                if labels is not None and labels[l][o][i]:
                    ax.text((x0 + x1) / 2, l + 0.5, labels[l][o][i], fontsize=7, ha="center",
                            va="center", alpha=max(alpha, 0.3),
                            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
    for l, pos in enumerate(positions):
        ax.scatter(pos, np.full(pos.shape, l), s=120, c="C0", zorder=3)
    for names, l in ((input_names, 0), (output_names, len(widths) - 1)):
        for k, name in enumerate(names):
            ax.text(positions[l][k], l + (-0.18 if l == 0 else 0.18), name, ha="center",
                    va="top" if l == 0 else "bottom", fontsize=10)
    ax.set_axis_off()
    ax.set_title("pruned network (opacity: edge score)", fontsize=9)
    return fig
