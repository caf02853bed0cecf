"""Recipes: settings derived from the data, chosen by one switch (``FitConfig.recipe``).

``short-series`` is for measured data with few numbers, e.g. 16 yearly
counts of two species (32 numbers): a network sized to the data, priors
that measured populations and concentrations need, a penalty from the
data's noise, and a curriculum from short windows to the whole trajectory. Its settings, each derived from the training data
(``n_obs``: observed numbers in the training window, ``dim`` states,
``dt`` the smallest sampling interval):

=====================  =====================================================
setting                value
=====================  =====================================================
widths (KAN, RSWAF)    ``[dim, dim]``: no hidden layer, dz_i/dt = Σ_j φ_ij(z_j)
                       (in log coordinates a generalised Lotka–Volterra /
                       Kolmogorov family: LV is φ_ii constant, φ_ij ∝ e^{z_j})
grid_size (KAN)        the largest G ≤ 5 with dim²·(G + k + 2) + n_traj·dim ≤
                       n_obs (≥ 1): the network and the fitted initial
                       states together have no more parameters than numbers
widths (MLP)           ``[dim, h, dim]``, the largest h ≥ 2 with
                       h·(2·dim + 1) + dim + n_traj·dim ≤ n_obs
positive               on when every observed value is > 0
fit_initial_state      on (each trajectory's first observation is noisy)
batch_time             0: no random windows (the curriculum's, then the whole trajectory)
method, step_size      rk4 at dt / 4 (the fit is an ODE, not a map at dt)
horizons               :func:`kanode.horizons.doubling_horizons` of the number
                       of training points (16 points: 2, 4, 8 intervals): the
                       Adam steps first fit every short window from the
                       observed states, then the whole trajectory, which
                       escapes the damped solution through the data's mean
l2                     σ̂² / n_obs, the Gaussian prior's MAP weight for
                       parameters of size 1 (MSE/n_obs·Σr²/2σ² + Σp²/2 ⇔
                       MSE + σ²/n_obs · Σp²), with σ̂² the observation noise
                       variance estimated from the data by
                       :func:`noise_variance` (pseudo-residuals of consecutive
                       triples, Gasser, Sroka & Jennen-Steinmetz 1986),
                       mean over states; then times the factor in 1, 2, 4, 8
                       that rolling-origin validation on the training
                       window chooses (:mod:`kanode.selection`; not for a
                       user's own l2, nor below 8 training points)
optimizer              adam+lbfgs: STEPS Adam steps (lr LR[model], cosine),
                       then LBFGS_STEPS L-BFGS steps
=====================  =====================================================

A setting the user changed from :class:`~kanode.config.FitConfig`'s default,
or gave explicitly (a flag, a key of ``--config``'s file: ``--horizons`` with no
value switches the curriculum off), is kept (and :func:`apply_recipe` says so); the resolved values are written to
the run's ``config.toml``, so a resume or a rerun of that file fits the same
model (resolving again gives the same values).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .config import FitConfig
from .data import FitData
from .horizons import doubling_horizons

if TYPE_CHECKING:  # kanode.selection builds on this module
    from .selection import L2Selection

__all__ = ["RECIPES", "RecipeResult", "apply_recipe", "short_series_settings", "noise_variance"]

STEPS = 200
LBFGS_STEPS = 100
LR = {"kan": 3e-2, "rswaf": 3e-2, "mlp": 1e-2}
MAX_GRID = 5


def short_series_settings(config: FitConfig, data: FitData) -> dict[str, Any]:
    """The ``short-series`` settings for ``data``'s training window (table in the module docstring)."""
    dim = data.dim
    y = data.y_train                                                       # (n_traj, n_train, dim)
    observed = ~torch.isnan(y)                                             # missing values are NaN
    n_obs = int(observed.sum())
    n_free = n_obs - y.shape[0] * dim                                      # less the fitted initial states
    k = config.spline_order
    if config.model == "mlp":
        hidden = max(2, (n_free - dim) // (2 * dim + 1))
        widths = [dim, hidden, dim]
        model = {"widths": widths}
    else:
        extra = k + 2 if config.model == "kan" else 2                     # per-edge parameters beyond G
        grid = max(1, min(MAX_GRID, n_free // (dim * dim) - extra))
        widths = [dim, dim]
        model = {"widths": widths, "grid_size": grid}
    positive = bool((y[observed] > 0).all())
    # the training MSE is in the data's units, so is the noise variance: the MAP weight of a unit prior
    noise = noise_variance(data.t_train, y)
    dt = float(torch.diff(data.t).min())
    return {**model, "positive": positive, "fit_initial_state": True, "batch_time": 0,
            "method": "rk4", "step_size": dt / 4, "horizons": doubling_horizons(y.shape[1]),
            "l2": noise / n_obs, "optimizer": "adam+lbfgs", "steps": STEPS, "lbfgs_steps": LBFGS_STEPS,
            "lr": LR[config.model], "lr_schedule": "cosine"}


def noise_variance(t: Tensor, y: Tensor) -> float:
    """The observation noise variance estimated from the data, mean over states.

    For three consecutive observed values (t₀, y₀), (t₁, y₁), (t₂, y₂) of a state,
    the pseudo-residual ``e = a·y₀ + b·y₂ − y₁`` (a = (t₂−t₁)/(t₂−t₀), b = (t₁−t₀)/(t₂−t₀):
    y₁'s linear interpolation minus y₁) has variance ``σ²·(a² + b² + 1)`` under
    independent noise; the estimate is the mean of ``e²/(a² + b² + 1)`` (Gasser, Sroka &
    Jennen-Steinmetz 1986). A signal curved on the scale of the sampling adds to it, so it
    errs towards more smoothing. Missing values are skipped (the triples are of observed
    values); a state with fewer than three observed values is left out; 0 if none has three.

    t : (n_t,) times; y : (n_traj, n_t, dim), NaN where missing.
    """
    per_state = []
    for s in range(y.shape[-1]):
        terms = []
        for traj in y[..., s]:
            seen = ~torch.isnan(traj)
            tt, yy = t[seen], traj[seen]
            if tt.numel() < 3:
                continue
            a = (tt[2:] - tt[1:-1]) / (tt[2:] - tt[:-2])
            b = 1.0 - a
            e = a * yy[:-2] + b * yy[2:] - yy[1:-1]
            terms.append(e.pow(2) / (a.pow(2) + b.pow(2) + 1.0))
        if terms:
            per_state.append(float(torch.cat(terms).mean()))
    return sum(per_state) / len(per_state) if per_state else 0.0


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
    selection: L2Selection | None = None  # the l2 chosen by kanode.selection, when it chose

    def describe(self) -> str:
        """For the terminal: the recipe's settings (and the user's that it kept) on one line,
        and the selection's line when it chose ``l2``."""
        shown = ", ".join(f"{k} = {_short(v)}" for k, v in self.applied.items())
        text = f"kanode: recipe {self.config.recipe}: {shown}"
        if self.kept:
            text += "; kept yours: " + ", ".join(f"{k} = {_short(v)}" for k, v in self.kept.items())
        return text + ("\n" + self.selection.describe() if self.selection is not None else "")


def apply_recipe(config: FitConfig, data: FitData, given: Collection[str] = ()) -> RecipeResult:
    """``config`` with its recipe's settings for ``data``; a field the user changed from the
    default, or named in ``given`` (set explicitly, e.g. ``--horizons`` with no value: no
    curriculum), keeps the user's value. Idempotent (resolving a resolved config changes nothing)."""
    settings_of = RECIPES[config.recipe]
    if settings_of is None:
        return RecipeResult(config, {}, {})
    defaults = {f.name: f.default if f.default_factory is MISSING else f.default_factory()
                for f in fields(FitConfig)}
    settings = settings_of(config, data)
    applied, kept = {}, {}
    for name, value in settings.items():
        mine = getattr(config, name)
        if (mine == defaults[name] and name not in given) or mine == value:
            applied[name] = value
        else:
            kept[name] = mine
    return RecipeResult(config.replace(**applied), applied, kept)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)

