"""Loss-curve comparison figure: one panel per system, one median curve per group.

The layout follows Figure 2 of Pal & Das (2024): training loss against
iteration on a log scale, KAN and MLP in each system's panel; here each curve
is the median across seeds with a min–max band, and a dotted line marks where
Adam hands over to L-BFGS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure

from kanode.compare import Group, group_curve

__all__ = ["plot_loss_comparison", "SYSTEM_TITLES", "MODEL_COLORS"]

SYSTEM_TITLES = {"lotka_volterra": "Lotka–Volterra", "pleiades": "Pleiades",
                 "fitzhugh_nagumo": "FitzHugh–Nagumo", "rigid_body": "Rigid body",
                 "spiral": "Spiral"}
MODEL_COLORS = {"kan": "tab:blue", "mlp": "tab:orange", "rswaf": "tab:green"}
_LINESTYLES = ("-", "--", "-.", ":")
_METRIC_NAMES = {"train_loss": "training loss", "val_loss": "validation loss",
                 "extrap_loss": "extrapolation loss"}


def plot_loss_comparison(groups: Sequence[Group], metric: str = "train_loss", x: str = "step",
                         title: str | None = None, max_columns: int = 5) -> Figure:
    """One log-scale panel per system with each group's median curve and min–max band.

    Parameters
    ----------
    groups
        From :func:`kanode.compare.group_runs` (runs of one configuration).
    metric
        ``train_loss``, ``val_loss`` or ``extrap_loss``.
    x
        ``step`` (optimiser iteration) or ``time`` (wall-clock seconds).
    title
        Figure title (none by default).
    max_columns
        Panels per row; five systems fit on one row like the paper's figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    systems = list(dict.fromkeys(g.system for g in groups))
    n_cols = max(1, min(len(systems), max_columns))
    n_rows = math.ceil(len(systems) / n_cols)
    fig = Figure(figsize=(3.7 * n_cols, 3.1 * n_rows + (0.3 if title else 0)),
                 layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, system in zip(axes, systems):
        _panel(ax, [g for g in groups if g.system == system], metric, x)
        ax.set_title(SYSTEM_TITLES.get(system, system))
    for ax in axes[len(systems):]:
        ax.set_visible(False)
    for ax in axes[::n_cols]:
        ax.set_ylabel(_METRIC_NAMES.get(metric, metric))
    if title:
        fig.suptitle(title)
    return fig


def _panel(ax, groups: Sequence[Group], metric: str, x: str) -> None:
    seen: dict[str, int] = {}
    for group in groups:
        curve = group_curve(group, metric, x)
        if not curve.x.size:
            continue
        color = MODEL_COLORS.get(group.model, "tab:gray")
        style = _LINESTYLES[seen.get(group.model, 0) % len(_LINESTYLES)]
        seen[group.model] = seen.get(group.model, 0) + 1
        params = f"{group.n_params} params" if group.n_params is not None else "? params"
        seeds = f", {len(group.runs)} seeds" if len(group.runs) > 1 else ""
        ax.plot(curve.x, curve.median, color=color, linestyle=style, linewidth=1.4,
                label=f"{group.label} ({params}{seeds})")
        if len(group.runs) > 1:
            ax.fill_between(curve.x, curve.low, curve.high, color=color, alpha=0.22,
                            linewidth=0)
        if math.isfinite(curve.switch):
            ax.axvline(curve.switch, color=color, linestyle=":", linewidth=0.9, alpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("iteration" if x == "step" else "wall time [s]")
    ax.grid(True, which="major", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="x-small", loc="upper right")
