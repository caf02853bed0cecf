"""Resolving a recipe: its settings from the data (:mod:`kanode.recipes`), then the choices
that need fits, made on the training window alone.

The ``short-series`` recipe's penalty ``l2 = σ̂²/n_obs`` is the MAP weight of a unit
Gaussian prior on the network's parameters; the noise σ̂² is measured, the prior's width
is not. :func:`select_l2` chooses it by rolling-origin validation on the training window:

* factors ``c`` in :data:`L2_FACTORS`: the recipe's weight and up to 8× it (narrower priors).
  The noise-derived weight is the floor: with 0.25 and 0.5 added, the validation chose 0.25
  in 5 of the 8 fits of ``experiments/hare_lynx.py --check`` and forecast worse in 4 of them
  (KAN FitzHugh–Nagumo 11.0 against 0.13): windows of 12–14 points favour weak penalties
  that do not carry over to the whole window (README, "Your own measurements");
* origins: hold back the last ``j`` training points, j = 2 … max(2, n_train // 4) (16
  points: 2, 3, 4), so that every validation fit keeps at least 3/4 of the window;
* for each origin, the recipe's own fit of the first n_train − j points (the recipe resolved
  on those points: their model size, noise estimate and curriculum; the config's seed) with
  ``l2 = c ·`` its weight, for every factor in one ensemble; ``e(c, j)``: the MSE of its
  forecast of the j held-back points, solved on from its fitted initial state;
* ``score(c)``: the mean over origins of ``e(c, j) / min_c' e(c', j)`` (each origin's errors
  relative to its best, so that no origin weighs by its scale); the lowest score wins, ties
  to the smaller factor, and the fit uses ``l2 = c ·`` the whole window's weight.

Nothing after the training window is read (the held-out points of ``holdout_last`` /
``train_fraction`` are not part of it). A window of fewer than :data:`MIN_POINTS` points,
a user's own ``l2`` (any value given, 0 included), or a noise estimate of 0 (data without
curvature or noise at the sampling scale: every factor of 0 is 0) selects nothing. The choice and every
score are in :class:`L2Selection` (``describe()`` for the terminal, ``to_dict()`` as the
run's ``selection.json``); the run's ``config.toml`` holds the chosen ``l2``, so a rerun of
it fits the same model without selecting again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import FitConfig
from .data import FitData, load_data
from .lifecycle import make_trainer, train_runs
from .recipes import RECIPES, RecipeResult, apply_recipe

__all__ = ["L2_FACTORS", "MIN_POINTS", "L2Selection", "validation_holdouts", "validation_window",
           "select_l2", "choose", "resolve_recipe", "write_selection"]

L2_FACTORS = (1.0, 2.0, 4.0, 8.0)
MIN_POINTS = 8
SELECTION_FILE = "selection.json"


@dataclass(frozen=True)
class L2Selection:
    """What :func:`select_l2` measured: ``errors[i][k]``, the validation MSE of
    ``factors[i]`` at ``holdouts[k]`` held-back points; ``scores[i]`` its mean relative error;
    ``factor`` the chosen one; ``l2`` = factor × ``base_l2`` (the recipe's weight)."""

    factors: tuple[float, ...]
    holdouts: tuple[int, ...]
    errors: tuple[tuple[float, ...], ...]
    scores: tuple[float, ...]
    factor: float
    base_l2: float

    @property
    def l2(self) -> float:
        return self.factor * self.base_l2

    def describe(self) -> str:
        """One line for the terminal."""
        shown = ", ".join(f"×{c:g} {s:.3g}" for c, s in zip(self.factors, self.scores))
        return (f"kanode: l2 = {self.l2:.3g} (×{self.factor:g} the noise-derived {self.base_l2:.3g}), "
                f"chosen by rolling-origin validation on the training window (last "
                f"{', '.join(map(str, self.holdouts))} points held back; mean relative forecast "
                f"error: {shown}); {SELECTION_FILE}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": "rolling-origin validation on the training window (kanode.selection)",
                "factors": list(self.factors), "holdouts": list(self.holdouts),
                "validation_mse": [list(row) for row in self.errors], "scores": list(self.scores),
                "factor": self.factor, "base_l2": self.base_l2, "l2": self.l2}


def validation_holdouts(n_train: int) -> list[int]:
    """Points held back at each origin: 2 … max(2, n_train // 4); none below MIN_POINTS."""
    return list(range(2, max(2, n_train // 4) + 1)) if n_train >= MIN_POINTS else []


def validation_window(data: FitData, holdout: int) -> FitData:
    """``data``'s training window with its last ``holdout`` points as the extrapolation window
    (held-out trajectories and everything after the training window dropped)."""
    n = data.n_train
    assert 0 < holdout < n - 1, (holdout, n)
    return FitData(t=data.t[:n], y=data.y[:, :n], y_held_out=data.y_held_out[:0, :n],
                   n_train=n - holdout, system=data.system, state_names=data.state_names,
                   units=data.units)


def select_l2(config: FitConfig, data: FitData, given: Collection[str] = ()) -> L2Selection | None:
    """The factor of the recipe's ``l2`` with the lowest rolling-origin validation error
    (module docstring); None for a window too short to hold points back.

    config : the user's config (its recipe unresolved, as :func:`apply_recipe` takes it);
    data : the fit's data in the config's dtype and device; given : as in apply_recipe.
    """
    holdouts = validation_holdouts(data.n_train)
    if not holdouts:
        return None
    errors = []                                                              # (holdouts, factors)
    for holdout in holdouts:
        window = validation_window(data, holdout)
        base = apply_recipe(config, window, given).config
        configs = [base.replace(l2=c * base.l2, plots=False) for c in L2_FACTORS]
        results = train_runs(make_trainer(configs, window), None, quiet=True, stop_at=None)
        errors.append([_finite(r.summary["final_extrap_loss"]) if r.summary["status"] == "finished"
                       else math.inf for r in results])
    by_factor = [list(row) for row in zip(*errors)]                          # (factors, holdouts)
    scores, chosen = choose(by_factor)
    return L2Selection(L2_FACTORS, tuple(holdouts), tuple(tuple(row) for row in by_factor), tuple(scores),
                       L2_FACTORS[chosen], apply_recipe(config, data, given).config.l2)


def choose(errors: list[list[float]]) -> tuple[list[float], int]:
    """(scores, index of the chosen candidate) of ``errors[i][k]``, candidate i's validation
    error at origin k (candidates in increasing order of their penalty): score = mean over
    origins of the error relative to that origin's lowest (an origin where every candidate
    failed counts 1 for all); the lowest score wins, ties to the first (the weakest penalty)."""
    best = [min(column) for column in zip(*errors)]
    scores = [sum(_relative(e, b) for e, b in zip(row, best)) / len(best) for row in errors]
    return scores, min(range(len(scores)), key=lambda i: (scores[i], i))


def resolve_recipe(config: FitConfig, given: Collection[str] = ()) -> RecipeResult:
    """The config's recipe resolved on its own data (loaded here; ConfigError as load_data):
    :func:`apply_recipe`, then for ``short-series`` without a user's ``l2``, :func:`select_l2`."""
    if RECIPES[config.recipe] is None:
        return RecipeResult(config, {}, {})
    data = load_data(config).to(getattr(torch, config.dtype), config.device)
    result = apply_recipe(config, data, given)
    if config.recipe != "short-series" or config.l2 != 0.0 or "l2" in given or result.config.l2 == 0.0:
        return result  # a user's l2, or a zero noise estimate: every factor would give the same fit
    selection = select_l2(config, data, given)
    if selection is None:
        return result
    return RecipeResult(result.config.replace(l2=selection.l2), {**result.applied, "l2": selection.l2},
                        result.kept, selection)


def write_selection(directory: str | Path, selection: L2Selection) -> Path:
    """``directory/selection.json``: the selection's factors, errors, scores and choice."""
    path = Path(directory) / SELECTION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(selection.to_dict(), indent=1) + "\n", encoding="utf-8")
    return path


def _relative(error: float, best: float) -> float:
    """An origin's error relative to its best (1 where every factor failed there: no evidence)."""
    if not math.isfinite(best):
        return 1.0
    return error / best if best > 0 else (1.0 if error == 0 else math.inf)


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.inf
