"""One fit's complete configuration: a flat, typed, TOML-serialisable record.

The same names are used by the command line (``--grid-size`` ↔ ``grid_size``),
by ``config.toml`` files and by sweeps, so a run directory's ``config.toml``
re-runs the same fit::

    python -m kanode.fit --config runs/X/config.toml
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = ["FitConfig", "ConfigError", "load_config", "dump_config", "read_toml"]

MODELS = ("kan", "mlp", "rswaf")
OPTIMIZERS = ("adam", "lbfgs", "adam+lbfgs")
SCHEDULES = ("none", "cosine", "step")
DTYPES = ("float32", "float64")
LOSSES = ("mse",)


class ConfigError(ValueError):
    """A configuration value a user wrote is invalid; the message says which and why."""


@dataclass
class FitConfig:
    """Everything that defines one neural-ODE fit.

    Data
        ``system`` names a :mod:`systems` system (ignored for the ground truth
        when ``data`` points at a ``.npz``/``.csv`` file, but still used for
        plots of the true vector field when it matches). ``n_traj`` training
        trajectories and ``n_test_traj`` held-out initial conditions are
        sampled around the canonical ``y0`` with relative spread
        ``y0_spread``; the first training trajectory starts at ``y0`` itself.
        The first ``train_fraction`` of the time grid is the training window,
        the rest is the extrapolation window.
    Model
        ``model`` is ``kan``, ``mlp`` or ``rswaf``; ``widths`` defaults to
        ``[dim, 10, dim]`` for KANs and ``[dim, 50, dim]`` for MLPs.
    Default recipe (measured on Lotka–Volterra, see experiments/bench_ode.py)
        100 Adam steps at lr 3e-2 (cosine), then 200 L-BFGS steps; classic
        RK4 with the data's sampling interval as step (on the true
        Lotka–Volterra system its error is MSE 3e-7 over t ≤ 14, like dopri5
        at rtol 1e-5, for about half the evaluations and a smooth loss), with
        direct backpropagation. ``step_size = 0`` means: the smallest interval
        of the time grid (fixed-step methods); rtol/atol apply to adaptive ones.
    Training
        ``optimizer`` ``adam`` runs ``steps`` Adam steps; ``lbfgs`` runs
        ``lbfgs_steps`` L-BFGS steps; ``adam+lbfgs`` runs both in that order.
        ``grid_update_steps`` and ``grid_extend`` (pairs ``[step, new_grid_size]``)
        refit KAN grids at those global steps.
    """

    # --- data
    system: str = "lotka_volterra"
    data: str = ""
    n_traj: int = 1
    n_test_traj: int = 1
    noise: float = 0.0
    y0_spread: float = 0.1
    train_fraction: float = 0.25
    data_seed: int = 0
    # --- model
    model: str = "kan"
    widths: list[int] = field(default_factory=list)
    grid_size: int = 5
    spline_order: int = 3
    grid_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    activation: str = "tanh"
    time_input: bool = False
    # --- solver
    method: str = "rk4"
    rtol: float = 1e-5
    atol: float = 1e-7
    step_size: float = 0.0
    adjoint: bool = False
    max_num_steps: int = 20_000
    # --- loss and batching
    loss: str = "mse"
    batch_time: int = 0
    batch_size: int = 16
    # --- optimisation
    optimizer: str = "adam+lbfgs"
    steps: int = 100
    lbfgs_steps: int = 200
    lr: float = 3e-2
    lr_schedule: str = "cosine"
    lr_step_every: int = 100
    lr_step_gamma: float = 0.5
    lbfgs_lr: float = 1.0
    lbfgs_history: int = 50
    lbfgs_max_iter: int = 1
    grad_clip: float = 0.0
    grid_update_steps: list[int] = field(default_factory=list)
    grid_extend: list[list[int]] = field(default_factory=list)
    # --- bookkeeping
    eval_every: int = 10
    checkpoint_every: int = 25
    seed: int = 0
    dtype: str = "float64"
    device: str = "cpu"
    threads: int = 0
    plots: bool = True

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid value."""
        _choice("model", self.model, MODELS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("loss", self.loss, LOSSES)
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        for name in ("n_traj", "grid_size", "spline_order", "batch_size", "eval_every",
                     "checkpoint_every", "lbfgs_history", "lbfgs_max_iter", "max_num_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_test_traj", "steps", "lbfgs_steps", "batch_time", "threads", "seed",
                     "data_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be non-negative, got {getattr(self, name)}")
        for name in ("lr", "lbfgs_lr", "rtol", "atol"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        for name in ("noise", "y0_spread", "grad_clip", "step_size"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a non-negative number, got {value}")
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.batch_time == 1:
            raise ConfigError("batch_time must be 0 (whole window) or at least 2 time points")
        if self.widths and (len(self.widths) < 2 or min(self.widths) < 1):
            raise ConfigError(f"widths must list at least two positive sizes, got {self.widths}")
        if len(self.grid_range) != 2 or not self.grid_range[0] < self.grid_range[1]:
            raise ConfigError(f"grid_range must be [low, high] with low < high, got {self.grid_range}")
        for pair in self.grid_extend:
            if len(pair) != 2 or pair[0] < 0 or pair[1] < 1:
                raise ConfigError(
                    f"grid_extend entries must be [step, new_grid_size], got {pair}")
        if self.optimizer == "adam" and self.steps == 0:
            raise ConfigError("optimizer 'adam' needs steps >= 1")
        if self.optimizer == "lbfgs" and self.lbfgs_steps == 0:
            raise ConfigError("optimizer 'lbfgs' needs lbfgs_steps >= 1")

    # -------------------------------------------------------------- derived
    @property
    def total_steps(self) -> int:
        """Number of optimiser steps the schedule runs."""
        adam = self.steps if self.optimizer in ("adam", "adam+lbfgs") else 0
        lbfgs = self.lbfgs_steps if self.optimizer in ("lbfgs", "adam+lbfgs") else 0
        return adam + lbfgs

    def replace(self, **changes: Any) -> "FitConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "FitConfig":
        """Build from a mapping, rejecting unknown keys and wrong types."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)}; valid keys are "
                f"{', '.join(sorted(known))}")
        coerced = {name: _coerce(name, value, known[name].type, source)
                   for name, value in values.items()}
        return cls(**coerced)


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}; got {value!r}")


def _coerce(name: str, value: Any, annotation: str, source: str) -> Any:
    """Check a TOML value against the field's annotation (given as a string)."""
    bad = ConfigError(f"{source}: {name} = {value!r} is not a valid {annotation}")
    if annotation == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if annotation == "str":
        if not isinstance(value, str):
            raise bad
        return value
    if annotation.startswith("list["):
        if not isinstance(value, list):
            raise bad
        inner = annotation[len("list["):-1]
        return [_coerce(name, v, inner, source) for v in value]
    raise AssertionError(f"unhandled annotation {annotation}")  # our own invariant


def read_toml(path: str | Path, what: str = "config file",
              error: type[Exception] = ConfigError) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file raises ``error`` naming it."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None


def load_config(path: str | Path) -> FitConfig:
    """Read a TOML file into a :class:`FitConfig` (unknown keys are errors)."""
    return FitConfig.from_dict(read_toml(path), source=str(path))


def dump_config(config: FitConfig) -> str:
    """Serialise to TOML text (every field, so the file is complete)."""
    lines = ["# kanode fit configuration; rerun with: python -m kanode.fit --config <this file>"]
    for name, value in config.to_dict().items():
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return {True: "inf", False: "-inf"}[value > 0] if math.isinf(value) else "nan"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
