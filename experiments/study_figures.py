"""The study's figures (experiments/study.py): loss curves, budget curves, generalisation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from kanode.analysis import load_run_field  # noqa: E402
from kanode.ode import SolverError, solve  # noqa: E402
from kanode.runs import read_metrics  # noqa: E402
from kanode.train import solver_options  # noqa: E402

COLOURS = {"kan": "tab:blue", "mlp": "tab:orange", "mlp1": "tab:orange", "mlp2": "tab:red"}


def _curves(out: Path, runs: list[dict[str, Any]]) -> np.ndarray:
    """(seeds, steps) training losses (NaN after a run stopped)."""
    curves = [[r["train_loss"] for r in read_metrics(out / run["run_dir"] / "metrics.csv")] for run in runs]
    length = max(len(c) for c in curves)
    return np.array([c + [math.nan] * (length - len(c)) for c in curves], dtype=float)


def loss_figure(out: Path, cells: dict[tuple[str, str, str], list[dict[str, Any]]]) -> Figure:
    """One panel per system: training loss against step, median and [min, max] band over seeds,
    KAN and MLP at the larger budget and their chosen learning rates (the seed paper's Fig. 2)."""
    system_names = sorted({s for s, _, _ in cells})
    fig, axes = plt.subplots(1, len(system_names), figsize=(3.6 * len(system_names), 3.2), squeeze=False)
    for ax, system in zip(axes[0], system_names):
        budgets = sorted({b for s, _, b in cells if s == system})
        budget = "large" if "large" in budgets else budgets[-1]
        for family in ("kan", "mlp"):
            runs = cells.get((system, family, budget))
            if not runs:
                continue
            curves = _curves(out, runs)
            steps = np.arange(1, curves.shape[1] + 1)
            with np.errstate(all="ignore"):
                ax.plot(steps, np.nanmedian(curves, axis=0), color=COLOURS[family],
                        label=f"{family.upper()} ({runs[0]['n_params']} p., lr {runs[0]['lr']:g})")
                ax.fill_between(steps, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0),
                                color=COLOURS[family], alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_title(system.replace("_", " "))
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training MSE")
    fig.tight_layout()
    return fig


def budget_figure(points: list[dict[str, Any]], slopes: dict[str, dict[str, dict[str, float]]],
                  reference: dict[str, dict[str, Any]] | None = None, n_fitted: int | None = None) -> Figure:
    """Lotka–Volterra against parameters, log–log. Left: training MSE (median, [min, max]) with
    fitted slopes, at the L-BFGS plateau (filled markers, solid) and after stage polish (open
    markers, dashed, where polished); ``reference`` (lv_references.json's "reference") adds the
    longer-L-BFGS refits as open squares. Right: the same runs' median test MSE (new initial
    conditions), before and after polish. ``n_fitted``: the number of values fitted (a dotted
    line where the parameters equal it). ``slopes``: {"lbfgs": {family: ...}, "polished": {...}}."""
    fig, (ax, ax_test) = plt.subplots(1, 2, figsize=(11.0, 4.6))
    for label, r in (reference or {}).items():
        family = "kan" if label.startswith("kan") else "mlp"
        ax.errorbar([r["n_params"]], [r["median"]], yerr=[[r["median"] - r["min"]], [r["max"] - r["median"]]],
                    marker="s", mfc="none", capsize=3, color=COLOURS.get(family), linestyle="none",
                    label=f"{label}, {r['steps']:.0f} steps (stage reference)")
    names = {"kan": "KAN [2, h, 2]", "mlp": "MLP [2, h, 2]", "mlp2": "MLP [2, h, h, 2]"}
    for key, low, high, test, stage, style in (
            ("median_train_loss", "min", "max", "test_median", "lbfgs", dict(marker="o")),
            ("polished_median", "polished_min", "polished_max", "polished_test_median", "polished",
             dict(marker="o", mfc="none", linestyle="--"))):
        for family in sorted({p["family"] for p in points}):
            pts = sorted((p for p in points if p["family"] == family and math.isfinite(p[key])),
                         key=lambda p: p["n_params"])
            if not pts:
                continue
            n = np.array([p["n_params"] for p in pts], dtype=float)
            med = np.array([p[key] for p in pts])
            err = np.array([[m - p[low] for m, p in zip(med, pts)], [p[high] - m for m, p in zip(med, pts)]])
            label = names.get(family, family) + (", L-BFGS plateau" if stage == "lbfgs" else ", polished (LM)")
            fitted = slopes.get(stage, {})
            if family in fitted:
                label += f": slope {fitted[family]['slope']:.2f} ± {fitted[family]['stderr']:.2f}"
            ax.errorbar(n, med, yerr=err, capsize=3, color=COLOURS.get(family), label=label, **style)
            ax_test.plot(n, [p[test] for p in pts], color=COLOURS.get(family), label=label.split(":")[0], **style)
    for a in (ax, ax_test):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("parameters")
        if n_fitted:
            a.axvline(n_fitted, color="grey", linestyle=":", linewidth=1)
    if n_fitted:
        ax_test.text(n_fitted, 1.0, f" {n_fitted} values fitted", transform=ax_test.get_xaxis_transform(),
                     va="top", fontsize=7, color="grey")
    ax.set_ylabel("final training MSE (median, [min, max])")
    ax.set_title("Lotka–Volterra: training loss against size")
    ax_test.set_ylabel("test MSE, new initial conditions (median)")
    ax_test.set_title("the same runs on new initial conditions")
    if points or reference:
        ax.legend(fontsize=6)
        ax_test.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no finished budget runs yet", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    return fig


def _trajectory(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    field, data, config = load_run_field(run_dir)
    try:
        with torch.no_grad():
            pred = solve(field, data.y[:1, 0], data.t, adjoint=False, **solver_options(config, data))[:, 0]
    except SolverError:
        return None
    return data.t.numpy(), data.y[0].numpy(), pred.numpy(), data.n_train


def generalisation_figure(out: Path, table: list[dict[str, Any]]) -> Figure:
    """Per system: the first state component of the median KAN and MLP (larger budget) against
    the truth over the whole grid; the dashed line ends the training window."""
    rows = {}
    for entry in table:
        if entry["system"] not in rows or entry["budget"] == "large":
            rows[entry["system"]] = entry
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.0), squeeze=False)
    for ax, (system, entry) in zip(axes[0], sorted(rows.items())):
        truth_drawn = False
        for family in ("kan", "mlp"):
            traj = _trajectory(out / entry[f"{family}_median_run"])
            if traj is None:
                continue
            t, y, pred, n_train = traj
            if not truth_drawn:
                ax.plot(t, y[:, 0], color="black", linewidth=1.5, label="truth")
                ax.axvline(t[n_train - 1], color="grey", linestyle="--", linewidth=0.8)
                truth_drawn = True
            ax.plot(t, pred[:, 0], color=COLOURS[family], linewidth=1, label=family.upper())
        ax.set_title(system.replace("_", " "))
        ax.set_xlabel("t")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
