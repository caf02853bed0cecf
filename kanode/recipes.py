"""Recipes: settings derived from the data, chosen by one switch (``FitConfig.recipe``).

``short-series`` is for measured data with few numbers, e.g. 16 yearly
counts of two species (32 numbers): a network sized to the data, priors
that measured populations and concentrations need, and the whole
trajectory as the loss. Its settings, each derived from the training data
(``n_obs``: observed numbers in the training window, ``dim`` states,
``dt`` the smallest sampling interval):

=====================  =====================================================
setting                value
=====================  =====================================================
widths (KAN, RSWAF)    ``[dim, dim]``: no hidden layer, dz_i/dt = Σ_j φ_ij(z_j)
                       (in log coordinates a generalised Lotka–Volterra /
                       Kolmogorov family: LV is φ_ii constant, φ_ij ∝ e^{z_j})
grid_size (KAN)        the largest G ≤ 5 with dim²·(G + k + 2) ≤ n_obs (≥ 1)
widths (MLP)           ``[dim, h, dim]``, the largest h ≥ 2 with
                       h·(2·dim + 1) + dim ≤ n_obs
positive               on when every observed value is > 0
fit_initial_state      on (each trajectory's first observation is noisy)
batch_time             0: the loss is the whole training trajectory
method, step_size      rk4 at dt / 4 (the fit is an ODE, not a map at dt)
l2                     L2_PER_OBS_VARIANCE (1 %) · mean variance of the
                       observed states / n_params: with parameters of size 1
                       the penalty is 1 % of the data's variance (the MSE's
                       scale), fixed a priori, not tuned on one data set
optimizer              adam+lbfgs: STEPS Adam steps (lr LR[model], cosine),
                       then LBFGS_STEPS L-BFGS steps
=====================  =====================================================

A setting the user changed from :class:`~kanode.config.FitConfig`'s default
is kept (and :func:`apply_recipe` says so); the resolved values are written to
the run's ``config.toml``, so a resume or a rerun of that file fits the same
model (resolving again gives the same values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any

import torch
from torch import Tensor

from .config import FitConfig
from .data import FitData

__all__ = ["RECIPES", "RecipeResult", "apply_recipe", "resolve_recipe", "short_series_settings"]

STEPS = 200
LBFGS_STEPS = 100
LR = {"kan": 3e-2, "rswaf": 3e-2, "mlp": 1e-2}
MAX_GRID = 5
L2_PER_OBS_VARIANCE = 1e-2


def short_series_settings(config: FitConfig, data: FitData) -> dict[str, Any]:
    """The ``short-series`` settings for ``data``'s training window (table in the module docstring)."""
    dim = data.dim
    y = data.y_train                                                       # (n_traj, n_train, dim)
    observed = ~torch.isnan(y)                                             # missing values are NaN
    n_obs = int(observed.sum())
    k = config.spline_order
    if config.model == "mlp":
        hidden = max(2, (n_obs - dim) // (2 * dim + 1))
        widths = [dim, hidden, dim]
        n_params = hidden * (2 * dim + 1) + dim
        model = {"widths": widths}
    else:
        extra = k + 2 if config.model == "kan" else 2                     # per-edge parameters beyond G
        grid = max(1, min(MAX_GRID, n_obs // (dim * dim) - extra))
        widths = [dim, dim]
        n_params = dim * dim * (grid + extra)
        model = {"widths": widths, "grid_size": grid}
    positive = bool((y[observed] > 0).all())
    # the training MSE is in the data's units: the penalty is measured against its variance
    variance = _observed_variance(y) if y.shape[1] > 1 else 1.0
    dt = float(torch.diff(data.t).min())
    return {**model, "positive": positive, "fit_initial_state": True, "batch_time": 0,
            "method": "rk4", "step_size": dt / 4, "l2": L2_PER_OBS_VARIANCE * variance / n_params,
            "optimizer": "adam+lbfgs", "steps": STEPS, "lbfgs_steps": LBFGS_STEPS,
            "lr": LR[config.model], "lr_schedule": "cosine"}


def _observed_variance(y: Tensor) -> float:
    """Mean over states of the variance of the observed values of y (n_traj, n_t, dim)."""
    states = y.reshape(-1, y.shape[-1])
    variances = [float(col[~torch.isnan(col)].var()) for col in states.T if int((~torch.isnan(col)).sum()) > 1]
    return sum(variances) / len(variances) if variances else 1.0


# recipe name -> settings from (config, data); "none" changes nothing. The names are
# kanode.config.RECIPE_NAMES (the config validates them; a test keeps the two equal).
RECIPES: dict[str, Callable[[FitConfig, FitData], dict[str, Any]] | None] = {
    "none": None,
    "short-series": short_series_settings,
}


@dataclass(frozen=True)
class RecipeResult:
    """A config with its recipe applied; ``applied``/``kept``: the settings the recipe set,
    and those it left as the user gave them (name → value)."""

    config: FitConfig
    applied: dict[str, Any]
    kept: dict[str, Any]

    def describe(self) -> str:
        """One line for the terminal: the recipe's settings (and the user's that it kept)."""
        shown = ", ".join(f"{k} = {_short(v)}" for k, v in self.applied.items())
        text = f"kanode: recipe {self.config.recipe}: {shown}"
        if self.kept:
            text += "; kept yours: " + ", ".join(f"{k} = {_short(v)}" for k, v in self.kept.items())
        return text


def resolve_recipe(config: FitConfig) -> RecipeResult:
    """:func:`apply_recipe` on the config's own data (loaded here; ConfigError as load_data)."""
    if RECIPES[config.recipe] is None:
        return RecipeResult(config, {}, {})
    from .data import load_data

    return apply_recipe(config, load_data(config).to(getattr(torch, config.dtype), "cpu"))


def apply_recipe(config: FitConfig, data: FitData) -> RecipeResult:
    """``config`` with its recipe's settings for ``data``; a field the user changed from the
    default keeps the user's value. Idempotent (resolving a resolved config changes nothing)."""
    settings_of = RECIPES[config.recipe]
    if settings_of is None:
        return RecipeResult(config, {}, {})
    defaults = {f.name: f.default if f.default_factory is MISSING else f.default_factory()
                for f in fields(FitConfig)}
    settings = settings_of(config, data)
    applied, kept = {}, {}
    for name, value in settings.items():
        mine = getattr(config, name)
        if mine == defaults[name] or mine == value:
            applied[name] = value
        else:
            kept[name] = mine
    return RecipeResult(config.replace(**applied), applied, kept)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)

