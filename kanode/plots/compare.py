"""Loss-curve comparison figure: one panel per system, one median curve per group.

The layout follows Figure 2 of Pal & Das (2024): training loss against
iteration on a log scale, KAN and MLP in each system's panel; here each curve
is the median across seeds with a min–max band, and a dotted line marks where
Adam hands over to L-BFGS. The figure takes :class:`Curve` data (computed by
:func:`kanode.compare.group_curve`); it reads no files and imports nothing
from the command-line modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

__all__ = ["Curve", "plot_loss_comparison", "SYSTEM_TITLES", "MODEL_COLORS"]

SYSTEM_TITLES = {"lotka_volterra": "Lotka–Volterra", "pleiades": "Pleiades",
                 "fitzhugh_nagumo": "FitzHugh–Nagumo", "rigid_body": "Rigid body",
                 "spiral": "Spiral"}
MODEL_COLORS = {"kan": "tab:blue", "mlp": "tab:orange", "rswaf": "tab:green"}
_LINESTYLES = ("-", "--", "-.", ":")
_METRIC_NAMES = {"train_loss": "training loss", "val_loss": "validation loss",
                 "extrap_loss": "extrapolation loss"}


@dataclass(frozen=True)
class Curve:
    """One group's line: the median across its runs with a min–max band.

    ``x``, ``median``, ``low``, ``high`` have shape ``(n_x,)`` (empty when the
    group has no values of the metric); ``switch`` is the x where Adam hands
    over to L-BFGS (``nan`` if it does not). ``system``, ``model`` and
    ``label`` place and name the line; ``n_runs`` and ``n_params`` go into
    the legend.
    """

    x: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    switch: float
    system: str = "?"
    model: str = "?"
    label: str = ""
    n_runs: int = 1
    n_params: int | None = None


def plot_loss_comparison(curves: Sequence[Curve], metric: str = "train_loss", x: str = "step",
                         title: str | None = None, max_columns: int = 5) -> Figure:
    """One log-scale panel per system with each curve's median and min–max band.

    Parameters
    ----------
    curves
        One per group, from :func:`kanode.compare.group_curve`; panels appear
        in the order of their systems' first curve.
    metric
        ``train_loss``, ``val_loss`` or ``extrap_loss`` (names the y axis).
    x
        ``step`` (optimiser iteration) or ``time`` (wall-clock seconds).
    title
        Figure title (none by default); mathtext (``$...$``) is rendered.
    max_columns
        Panels per row; five systems fit on one row like the paper's figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    systems = list(dict.fromkeys(c.system for c in curves))
    n_cols = max(1, min(len(systems), max_columns))
    n_rows = max(1, math.ceil(len(systems) / n_cols))
    fig = Figure(figsize=(3.7 * n_cols, 3.1 * n_rows + (0.3 if title else 0)),
                 layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, system in zip(axes, systems):
        _panel(ax, [c for c in curves if c.system == system], x)
        ax.set_title(_plain(SYSTEM_TITLES.get(system, system)))
    for ax in axes[len(systems):]:
        ax.set_visible(False)
    for ax in axes[::n_cols]:
        ax.set_ylabel(_METRIC_NAMES.get(metric, metric))
    if title:
        fig.suptitle(title)
    return fig


def _plain(text: str) -> str:
    """Text from run directories, shown literally (a ``$`` does not start mathtext)."""
    return text.replace("$", r"\$")


def _panel(ax, curves: Sequence[Curve], x: str) -> None:
    seen: dict[str, int] = {}
    for curve in curves:
        if not curve.x.size:
            continue
        color = MODEL_COLORS.get(curve.model, "tab:gray")
        style = _LINESTYLES[seen.get(curve.model, 0) % len(_LINESTYLES)]
        seen[curve.model] = seen.get(curve.model, 0) + 1
        params = f"{curve.n_params} params" if curve.n_params is not None else "? params"
        seeds = f", {curve.n_runs} seeds" if curve.n_runs > 1 else ""
        ax.plot(curve.x, curve.median, color=color, linestyle=style, linewidth=1.4,
                label=_plain(f"{curve.label} ({params}{seeds})"))
        if curve.n_runs > 1:
            ax.fill_between(curve.x, curve.low, curve.high, color=color, alpha=0.22,
                            linewidth=0)
        if math.isfinite(curve.switch):
            ax.axvline(curve.switch, color=color, linestyle=":", linewidth=0.9, alpha=0.8)
    if ax.lines:
        ax.set_yscale("log")
        ax.legend(fontsize="x-small", loc="upper right")
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("iteration" if x == "step" else "wall time [s]")
    ax.grid(True, which="major", alpha=0.3)
