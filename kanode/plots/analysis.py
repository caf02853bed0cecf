"""Figures of :mod:`kanode.analysis`: layer cost heatmaps, saved elements vs
grid size, step memory vs width, Hessian spectra. Each takes data (rows as
written to the CSVs, or eigenvalue arrays) and returns a Figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

__all__ = ["cost_heatmaps", "saved_vs_grid", "memory_vs_width", "hessian_spectrum", "spectra_comparison"]

MODEL_COLORS = {"kan": "tab:blue", "mlp": "tab:orange", "kan_dense": "tab:red", "rswaf": "tab:green"}


def _short(value: float) -> str:
    if value == 0:
        return "0"
    exp = int(math.floor(math.log10(abs(value))))
    return f"{value / 10**exp:.1f}e{exp}"


def cost_heatmaps(rows: Sequence[Mapping[str, Any]], grid_size: int) -> Figure:
    """Fig. 1 of Pal & Das (2024), three ways: elements a KAN layer needs beyond
    Linear + SiLU (parameters + saved activations) over I = O (rows) and batch
    (columns) at one grid size — Eq. 1's prediction, the dense (efficient-kan)
    layer measured, kanode's layer measured. ``rows``: ``cost.csv`` rows."""
    picked = [r for r in rows if int(r["grid_size"]) == grid_size]
    sizes = sorted({int(r["in_features"]) for r in picked})
    batches = sorted({int(r["batch"]) for r in picked})
    panels = {
        "Eq. 1 (predicted)": lambda r: r["eq1_extra_elements"],
        "dense layer (measured)": lambda r: r["params_kan"] + r["saved_dense_elements"] - r["params_fc"]
        - r["saved_fc_elements"],
        "kanode KANLayer (measured)": lambda r: r["params_kan"] + r["saved_kanode_elements"] - r["params_fc"]
        - r["saved_fc_elements"],
    }
    grids = {}
    for title, value in panels.items():
        grid = np.zeros((len(sizes), len(batches)))
        for r in picked:
            r = {k: int(v) for k, v in r.items()}
            grid[sizes.index(r["in_features"]), batches.index(r["batch"])] = value(r)
        grids[title] = grid
    vmax = max(np.abs(g).max() for g in grids.values())
    norm = SymLogNorm(linthresh=1e3, vmin=-vmax, vmax=vmax, base=10)
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    for ax, (title, grid) in zip(axes, grids.items()):
        image = ax.imshow(grid, cmap="RdBu_r", norm=norm, origin="lower", aspect="auto")
        for i in range(len(sizes)):
            for j in range(len(batches)):
                ax.text(j, i, _short(grid[i, j]), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_yticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_xlabel("batch B")
        ax.set_title(title)
    axes[0].set_ylabel("I = O")
    fig.colorbar(image, ax=list(axes), label="extra elements over Linear+SiLU (symlog)")
    fig.suptitle(f"KAN layer cost beyond a linear layer, G = {grid_size}, spline order "
                 f"{int(picked[0]['spline_order'])} (float32 elements)")
    return fig


def saved_vs_grid(rows: Sequence[Mapping[str, Any]], batch: int) -> Figure:
    """Saved-for-backward elements against grid size at one batch, per I = O:
    dense layer (solid), kanode (dashed), Linear + SiLU (dotted)."""
    picked = [{k: int(v) for k, v in r.items()} for r in rows if int(r["batch"]) == batch]
    sizes = sorted({r["in_features"] for r in picked})
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for color, size in zip(colors, sizes):
        line = sorted((r for r in picked if r["in_features"] == size), key=lambda r: r["grid_size"])
        g = [r["grid_size"] for r in line]
        ax.plot(g, [r["saved_dense_elements"] for r in line], "-o", color=color, ms=3,
                label=f"I=O={size} dense")
        ax.plot(g, [r["saved_kanode_elements"] for r in line], "--s", color=color, ms=3,
                label=f"I=O={size} kanode")
        ax.plot(g, [r["saved_fc_elements"] for r in line], ":", color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("grid size G")
    ax.set_ylabel("elements saved for backward")
    ax.set_title(f"Saved activations vs grid size, batch {batch} (dotted: Linear+SiLU)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def memory_vs_width(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Peak memory of one training step against hidden width: one column per
    system, direct backpropagation (top) and adjoint (bottom), one line per model."""
    def flag(v: Any) -> bool:
        return v if isinstance(v, bool) else str(v) == "True"

    systems = list(dict.fromkeys(str(r["system"]) for r in rows))
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    fig = Figure(figsize=(5 * len(systems), 7), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, len(systems), squeeze=False))
    for col, system in enumerate(systems):
        for row_i, adjoint in enumerate((False, True)):
            ax = axes[row_i, col]
            for model in models:
                line = sorted((r for r in rows if str(r["system"]) == system and str(r["model"]) == model
                               and flag(r["adjoint"]) == adjoint), key=lambda r: int(r["hidden"]))
                if line:
                    ax.plot([int(r["hidden"]) for r in line], [int(r["peak_bytes"]) / 2**20 for r in line],
                            "-o", ms=3, color=MODEL_COLORS.get(model), label=model)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{system}, {'adjoint' if adjoint else 'direct'}")
            ax.set_xlabel("hidden width")
            ax.set_ylabel("peak MiB of one step")
            ax.legend(fontsize=8)
    return fig


def _symlog_bins(values: np.ndarray, linthresh: float, per_decade: int = 4) -> np.ndarray:
    top = max(float(np.abs(values).max()), linthresh * 10)
    decades = max(1, int(math.ceil(math.log10(top / linthresh))))
    pos = linthresh * np.logspace(0, decades, decades * per_decade + 1)
    return np.concatenate([-pos[::-1], [0.0], pos])


def _symlog_ticks(ax, linthresh: float, top: float) -> None:
    """At most ~4 labelled decades per side of 0 on a symlog x axis."""
    low, high = math.ceil(math.log10(linthresh)), math.ceil(math.log10(max(top, linthresh * 10)))
    step = max(1, math.ceil((high - low) / 4))
    exps = list(range(high, low - 1, -step))[::-1]
    ticks = [-(10.0**e) for e in exps[::-1]] + [0.0] + [10.0**e for e in exps]
    labels = [f"-1e{e}" for e in exps[::-1]] + ["0"] + [f"1e{e}" for e in exps]
    ax.set_xticks(ticks, labels, rotation=45, fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())


def hessian_spectrum(eigenvalues: np.ndarray, title: str, linthresh: float | None = None,
                     slq: tuple[np.ndarray, np.ndarray] | None = None) -> Figure:
    """Histogram of eigenvalues on a symmetric log axis (the seed paper's Fig. 3
    style); ``linthresh`` defaults to 1e-8 · λ_max. ``slq``: (nodes, weights)
    of a density, drawn as a second histogram scaled to n eigenvalues."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    linthresh = linthresh or 1e-8 * max(float(np.abs(values).max()), 1e-300)
    bins = _symlog_bins(values, linthresh)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.8, label=f"{values.size} eigenvalues")
    if slq is not None:
        ax.hist(slq[0], bins=bins, weights=slq[1] * values.size, histtype="step", color="k", label="SLQ density")
    ax.set_xscale("symlog", linthresh=linthresh)
    _symlog_ticks(ax, linthresh, float(np.abs(values).max()))
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def spectra_comparison(spectra: Mapping[str, Mapping[str, Sequence[np.ndarray]]], max_columns: int = 3) -> Figure:
    """KAN vs MLP spectra per system: ``spectra[system][model]`` is a list of
    eigenvalue arrays (one per seed), pooled into one step histogram per model
    on a symmetric log axis with ``linthresh`` 1e-8 of the largest λ_max."""
    names = list(spectra)
    cols = min(max_columns, len(names))
    rows_n = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows_n), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows_n, cols, squeeze=False)).ravel()
    for ax, system in zip(axes, names):
        pooled = {m: np.concatenate([np.asarray(v) for v in runs]) for m, runs in spectra[system].items()}
        top = max(float(np.abs(v).max()) for v in pooled.values())
        bins = _symlog_bins(np.concatenate(list(pooled.values())), 1e-8 * top)
        for model, values in pooled.items():
            ax.hist(values, bins=bins, histtype="step", lw=1.5, color=MODEL_COLORS.get(model),
                    label=f"{model} ({len(spectra[system][model])} runs)")
        ax.set_xscale("symlog", linthresh=1e-8 * top)
        _symlog_ticks(ax, 1e-8 * top, top)
        ax.set_yscale("log")
        ax.set_title(system)
        ax.set_xlabel("eigenvalue")
        ax.legend(fontsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return fig
