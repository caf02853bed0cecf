"""Settings of the symbolic recipe, validated up front (as :meth:`kanode.config.FitConfig.validate`).

Every field has its allowed values here, in one place: :meth:`SymbolicConfig.validate` runs on
construction and raises :class:`kanode.config.ConfigError` with one line naming the field, so
``python -m kanode.symbolic`` refuses a bad option (exit 2) before any work.

Limits
    ``hidden`` ≤ :data:`MAX_HIDDEN` (every hidden edge is fitted against the whole library, and
    the polish's term count grows with it); ``grid_size`` ≤ ``kanode.config.MAX_GRID_SIZE``;
    step counts ≤ ``kanode.config.MAX_STEPS``; ``digits`` in 1–17 (a float64 has 17
    significant digits); ``polish_rounds`` ≤ :data:`MAX_POLISH_ROUNDS`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from kanode.config import MAX_GRID_SIZE, MAX_STEPS, ConfigError

from .library import LIBRARY
from .polish import HOLDOUT_FRACTION, RIDGE

__all__ = ["SymbolicConfig", "MAX_HIDDEN", "MAX_POLISH_ROUNDS"]

MAX_HIDDEN = 256
MAX_POLISH_ROUNDS = 100
FIRST_LAYERS = ("linear", "spline")
STARTS = ("sparse", "kan")
"""Where the formula comes from: the sparse regression on derivative estimates
(:mod:`kanode.symbolic.sparse_recipe`, the default) or the KAN's symbolified edges
(:mod:`kanode.symbolic.pipeline`; also whenever a trained KAN run is given)."""
DERIVATIVES = ("smoothed", "kan")
"""The sparse regression's derivative estimates: local polynomials of the data, or the field of
a KAN-ODE fitted first (:func:`kanode.symbolic.sparse_recipe.fit_kan_rates`)."""

# name -> (lowest, highest, what the limit is)
INT_RANGES: dict[str, tuple[int, int, str]] = {
    "hidden": (1, MAX_HIDDEN, "kanode.symbolic.settings.MAX_HIDDEN"),
    "grid_size": (1, MAX_GRID_SIZE, "kanode.config.MAX_GRID_SIZE"),
    "sparse_steps": (0, MAX_STEPS, "kanode.config.MAX_STEPS"),
    "sparse_lbfgs_steps": (0, MAX_STEPS, "kanode.config.MAX_STEPS"),
    "retrain_steps": (0, MAX_STEPS, "kanode.config.MAX_STEPS"),
    "retrain_lbfgs_steps": (0, MAX_STEPS, "kanode.config.MAX_STEPS"),
    "finetune_steps": (0, MAX_STEPS, "kanode.config.MAX_STEPS"),
    "finetune_lbfgs_steps": (0, MAX_STEPS, "kanode.config.MAX_STEPS"),
    "digits": (1, 17, "a float64 has 17 significant digits"),
    "polish_rounds": (0, MAX_POLISH_ROUNDS, "kanode.symbolic.settings.MAX_POLISH_ROUNDS"),
}
# name -> (lowest, highest, whether the lowest is excluded, whether the highest is excluded)
FLOAT_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "sparsity": (0.0, math.inf, False, False),
    "sparsity_l1": (0.0, math.inf, False, False),
    "sparsity_entropy": (0.0, math.inf, False, False),
    "coef_l1": (0.0, math.inf, False, False),
    "edge_threshold": (0.0, 1.0, False, True),
    "node_threshold": (0.0, 1.0, False, True),
    "drop_threshold": (0.0, 1.0, False, True),
    "complexity_weight": (0.0, math.inf, False, False),
    "polish_ridge": (0.0, math.inf, False, False),
    "holdout_fraction": (0.0, 0.5, True, False),
    "lr": (0.0, math.inf, True, False),
    "finetune_lr": (0.0, math.inf, True, False),
}


@dataclass
class SymbolicConfig:
    """Settings of the recipe (the data and solver come from a :class:`kanode.config.FitConfig`)."""

    start: str = "sparse"
    derivatives: str = "smoothed"
    hidden: int = 4
    first_layer: str = "linear"
    grid_size: int = 5
    sparsity: float = 1e-5
    sparsity_l1: float = 1.0
    sparsity_entropy: float = 1.0
    coef_l1: float = 0.0
    sparse_steps: int = 60
    sparse_lbfgs_steps: int = 100
    edge_threshold: float = 0.03
    node_threshold: float = 0.03
    retrain_steps: int = 20
    retrain_lbfgs_steps: int = 30
    library: str = "x,x^2"
    complexity_weight: float = 0.0
    finetune_steps: int = 20
    finetune_lbfgs_steps: int = 50
    drop_threshold: float = 0.01
    digits: int = 4
    polish_rounds: int = 4
    polish_ridge: float = RIDGE
    holdout_fraction: float = HOLDOUT_FRACTION
    lr: float = 2e-2
    finetune_lr: float = 2e-3

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line message naming the first invalid field."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in INT_RANGES:
                lo, hi, why = INT_RANGES[f.name]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"{f.name} must be an integer, got {value!r}")
                if not lo <= value <= hi:
                    limit = f"at least {lo}" if value < lo else f"at most {hi:,} ({why})"
                    raise ConfigError(f"{f.name} must be {limit}, got {value}")
            elif f.name in FLOAT_RANGES:
                lo, hi, open_lo, open_hi = FLOAT_RANGES[f.name]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{f.name} must be a number, got {value!r}")
                ok = (math.isfinite(value) and (value > lo if open_lo else value >= lo)
                      and (value < hi if open_hi else value <= hi))
                if not ok:
                    what = (("a positive" if open_lo else "a non-negative") + " finite number"
                            if math.isinf(hi) else
                            f"a number in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}")
                    raise ConfigError(f"{f.name} must be {what}, got {value}")
        if self.start not in STARTS:
            raise ConfigError(f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.derivatives not in DERIVATIVES:
            raise ConfigError(f"derivatives must be one of {', '.join(DERIVATIVES)}, got {self.derivatives!r}")
        if self.first_layer not in FIRST_LAYERS:
            raise ConfigError(f"first_layer must be one of {', '.join(FIRST_LAYERS)}, got {self.first_layer!r}")
        self.library_names  # noqa: B018 - validates the names

    @property
    def library_names(self) -> tuple[str, ...]:
        """The candidate functions of the symbolic fit (``library``: comma-separated names or "all")."""
        if not isinstance(self.library, str):
            raise ConfigError(f"library must be a string, got {self.library!r}")
        if self.library.strip() == "all":
            return tuple(LIBRARY)
        names = tuple(n.strip() for n in self.library.split(",") if n.strip())
        unknown = [n for n in names if n not in LIBRARY]
        if unknown or not names:
            raise ConfigError(f"library must be 'all' or comma-separated names from {', '.join(LIBRARY)}; "
                              f"got {self.library!r}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"library names each candidate once; {', '.join(repeated)} repeated in "
                              f"{self.library!r}")
        return names

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
