"""One fit's complete configuration: a flat, typed, TOML-serialisable record.

The same names are used by the command line (``--grid-size`` ↔ ``grid_size``),
by ``config.toml`` files and by sweeps, so a run directory's ``config.toml``
re-runs the same fit::

    python -m kanode.fit --config runs/X/config.toml

:meth:`FitConfig.validate` is the one place where options are checked: the
type and range of every field, the solver ``method`` against torchdiffeq's
own solver table (:mod:`kanode.solvers`: only methods whose cost per step is
known), and options that do not apply to the chosen model. It runs
on construction, so the command line, ``config.toml`` files and every sweep
cell (``python -m kanode.sweep --list`` included) are checked before any work.
Two checks need facts only the data knows: :func:`check_widths_for` (the
state dimension) and :func:`check_fixed_steps` (the time span and the
smallest time gap); ``kanode.fit`` calls them once the data is loaded.

Size limits (each error message names the limit it hit)
    ``spline_order`` ≤ :data:`MAX_SPLINE_ORDER` (7: the fused CPU kernel
    evaluates at most 8 = spline_order + 1 bases), ``grid_size`` and
    ``grid_extend`` sizes ≤ :data:`MAX_GRID_SIZE`, each width ≤
    :data:`MAX_LAYER_WIDTH`, at most :data:`MAX_LAYERS` layers, and the
    vector field's parameter count (at its largest grid) ≤ :data:`MAX_PARAMS`;
    ``n_traj``/``n_test_traj`` ≤ :data:`MAX_TRAJ`, ``batch_size`` ≤
    :data:`MAX_BATCH_SIZE`, ``batch_time`` ≤ :data:`MAX_BATCH_TIME`, step
    counts and ``horizons`` entries ≤ :data:`MAX_STEPS`, ``max_num_steps`` ≤ :data:`MAX_SOLVER_STEPS`,
    seeds ≤ 2**63 − 1 (a TOML integer), ``threads`` ≤ :data:`MAX_THREADS`.
    A fixed-step solve may take at most ``max_num_steps`` steps over the data's
    time span.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from systems import read_regular_file

from .solvers import REFUSED_METHODS, SOLVERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = ["FitConfig", "ConfigError", "load_config", "dump_config", "read_toml",
           "check_fixed_steps", "check_widths_for", "estimate_params", "widths_for",
           "SOLVER_DEFAULTS", "FIXED_STEP_METHODS", "ADAPTIVE_METHODS", "METHODS"]

MODELS = ("kan", "mlp", "rswaf")
OPTIMIZERS = ("adam", "lbfgs", "adam+lbfgs")
SCHEDULES = ("none", "cosine", "step")
DTYPES = ("float32", "float64")
LOSSES = ("mse",)
RECIPE_NAMES = ("none", "short-series")  # kanode.recipes.RECIPES' keys (a test keeps them equal)

# torchdiffeq's own name → solver table, split by kind: the methods whose cost per step
# kanode knows (kanode.solvers; the others are refused with the reason).
FIXED_STEP_METHODS = tuple(name for name, solver in SOLVERS.items() if solver.kind == "fixed")
ADAPTIVE_METHODS = tuple(name for name, solver in SOLVERS.items() if solver.kind == "adaptive")
METHODS = FIXED_STEP_METHODS + ADAPTIVE_METHODS
# Fixed-step methods whose training loss kanode.compiled can compile (torchdiffeq's stateless
# Runge–Kutta steps; the Adams methods keep a history and stay eager).
COMPILED_METHODS = ("euler", "midpoint", "rk4", "heun2", "heun3")
COMPILE_MODES = ("auto", "on", "off")

# Defaults shared by FitConfig and kanode.ode.solve (one source of truth).
# max_num_steps bounds the solver steps of one whole solve (kanode.ode.solve): healthy
# fits take < 100; 5000 ends a stiff or blowing-up solve in ~20 s and ~1 GB (spiral, dopri5).
SOLVER_DEFAULTS: dict[str, Any] = {"method": "rk4", "rtol": 1e-5, "atol": 1e-7,
                                   "max_num_steps": 5_000}
# A step whose training loss exceeds this multiple of the run's first training loss (or is
# not finite) ends the run (a member of an ensemble: freezes it) as diverged: kanode.divergence.
DEFAULT_DIVERGENCE_FACTOR = 1e6
DEFAULT_HIDDEN = {"kan": 10, "rswaf": 10, "mlp": 50}  # one hidden layer of this width
# The split's automatic values (train_fraction = 0, n_test_traj = -1): simulated data follows
# the KAN-ODE paper's protocol (train on the first quarter, one held-out initial condition);
# a data file (measurements) is trained on in full, with nothing held out unless asked.
AUTO_SPLIT = {"simulated": {"train_fraction": 0.25, "n_test_traj": 1},
              "file": {"train_fraction": 1.0, "n_test_traj": 0}}

MAX_SPLINE_ORDER = 7          # kanode.nn._native.MAX_WIDTH - 1 (tested to agree)
MAX_GRID_SIZE = 1000
MAX_LAYER_WIDTH = 10_000
MAX_LAYERS = 32
MAX_PARAMS = 10_000_000
MAX_TRAJ = 10_000
MAX_BATCH_SIZE = 65_536
MAX_BATCH_TIME = 100_000
MAX_STEPS = 10_000_000
MAX_SOLVER_STEPS = 10_000_000
MAX_LBFGS_HISTORY = 1000
MAX_LBFGS_ITER = 1000
MAX_THREADS = 1024
MAX_SEED = 2**63 - 1

LIMIT_REASONS = {
    "spline_order": "MAX_SPLINE_ORDER: the fused kernel evaluates at most 8 = spline_order + 1 bases",
    "seed": "MAX_SEED: a 64-bit signed TOML integer", "data_seed": "MAX_SEED: a 64-bit signed TOML integer",
    "n_traj": "MAX_TRAJ", "n_test_traj": "MAX_TRAJ", "grid_size": "MAX_GRID_SIZE",
    "grid_extend grid size": "MAX_GRID_SIZE", "each of widths": "MAX_LAYER_WIDTH",
    "max_num_steps": "MAX_SOLVER_STEPS", "batch_time": "MAX_BATCH_TIME",
    "batch_size": "MAX_BATCH_SIZE", "lbfgs_history": "MAX_LBFGS_HISTORY",
    "lbfgs_max_iter": "MAX_LBFGS_ITER", "threads": "MAX_THREADS",
}  # the limits' names in kanode.config (step counts: MAX_STEPS)

# Integer fields: name -> (lowest, highest) allowed value.
INT_RANGES: dict[str, tuple[int, int]] = {
    "n_traj": (1, MAX_TRAJ),
    "n_test_traj": (-1, MAX_TRAJ),
    "holdout_last": (0, MAX_STEPS),
    "data_seed": (0, MAX_SEED),
    "grid_size": (1, MAX_GRID_SIZE),
    "spline_order": (1, MAX_SPLINE_ORDER),
    "max_num_steps": (1, MAX_SOLVER_STEPS),
    "batch_time": (0, MAX_BATCH_TIME),
    "batch_size": (1, MAX_BATCH_SIZE),
    "steps": (0, MAX_STEPS),
    "lbfgs_steps": (0, MAX_STEPS),
    "lr_step_every": (1, MAX_STEPS),
    "lbfgs_history": (1, MAX_LBFGS_HISTORY),
    "lbfgs_max_iter": (1, MAX_LBFGS_ITER),
    "eval_every": (1, MAX_STEPS),
    "checkpoint_every": (1, MAX_STEPS),
    "seed": (0, MAX_SEED),
    "threads": (0, MAX_THREADS),
    "plateau_steps": (0, MAX_STEPS),
}
# Float fields: name -> (lowest, highest, whether the lowest is excluded); all finite.
FLOAT_RANGES: dict[str, tuple[float, float, bool]] = {
    "noise": (0.0, math.inf, False),
    "y0_spread": (0.0, math.inf, False),
    "train_fraction": (0.0, 1.0, False),
    "rtol": (0.0, 1.0, True),
    "atol": (0.0, math.inf, True),
    "step_size": (0.0, math.inf, False),
    "lr": (0.0, math.inf, True),
    "lr_step_gamma": (0.0, 1.0, True),
    "lbfgs_lr": (0.0, math.inf, True),
    "grad_clip": (0.0, math.inf, False),
    "divergence_factor": (1.0, math.inf, True),
    "sparsity": (0.0, math.inf, False),
    "sparsity_l1": (0.0, math.inf, False),
    "sparsity_entropy": (0.0, math.inf, False),
    "coef_l1": (0.0, math.inf, False),
    "l2": (0.0, math.inf, False),
    "plateau_rtol": (0.0, 1.0, True),
}


class ConfigError(ValueError):
    """A configuration value a user wrote is invalid; the message says which and why."""


@dataclass
class FitConfig:
    """Everything that defines one neural-ODE fit.

    Data
        ``system`` names a :mod:`systems` system to simulate; with ``data``
        (a ``.npz``/``.csv`` file) it is ``""``: the data's truth is the
        system the file itself records (one saved by
        :meth:`systems.Trajectories.save`); measured data has none. ``n_traj`` training
        trajectories and ``n_test_traj`` held-out initial conditions are
        sampled around the canonical ``y0`` with relative spread
        ``y0_spread``; the first training trajectory starts at ``y0`` itself.
        The first ``train_fraction`` of the time grid is the training window,
        the rest is the extrapolation window; or, with ``holdout_last`` = K > 0,
        all but the last K times (``train_fraction`` must then be left at 0).
        The defaults depend on the data (:data:`AUTO_SPLIT`): ``train_fraction
        = 0`` and ``n_test_traj = -1`` mean 0.25 and 1 for a simulated system,
        1.0 (all of it) and 0 (none held out) for a ``data`` file; see
        :attr:`training_fraction` and :attr:`held_out_trajectories`.
    Model
        ``model`` is ``kan``, ``mlp`` or ``rswaf``; ``widths`` defaults to
        ``[dim, 10, dim]`` for KANs and ``[dim, 50, dim]`` for MLPs (``dim + 1``
        inputs with ``time_input``), see :meth:`resolved_widths`.
        ``activation`` is the MLP's activation; ``base_activation`` is the
        KAN's base path (``silu`` by default). Setting the one that does not
        belong to ``model`` is an error.
    Priors for measured data
        ``positive`` learns the field in log coordinates (``dlog y/dt``), so
        solutions stay > 0 exactly (populations, concentrations; every
        observed value must be > 0). ``fit_initial_state`` makes each
        training trajectory's initial state a trainable parameter (started at
        its first observation, which is noisy); it needs ``batch_time = 0``.
        ``recipe = "short-series"`` derives the model size, these priors, a
        penalty and the schedule from the data (:mod:`kanode.recipes`), the
        penalty's scale by validation on the training window (:mod:`kanode.selection`).
    Compilation
        ``compile`` (``auto``, ``on``, ``off``): whether the training loss of a
        fixed-step solve runs as compiled code (:mod:`kanode.compiled`);
        ``auto`` compiles where it pays (see :func:`kanode.compiled.compiles`).
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
        refit KAN grids at those global steps (KANs only). ``horizons``
        (window lengths in sampling intervals, increasing; needs
        ``batch_time = 0``) splits the Adam steps into a curriculum of every
        window of each length from the observed states, then the whole
        trajectory (:mod:`kanode.horizons`).
    Convergence
        ``plateau_steps = N > 0`` stops a run (an ensemble member) once its
        training loss fell by less than ``plateau_rtol`` (relative) over its
        last N L-BFGS steps; 0 trains every step (:mod:`kanode.plateau`).
    Divergence
        A step whose training loss is not finite, or above
        ``divergence_factor`` (default 1e6) times the run's first training
        loss, ends the run as ``diverged`` (an ensemble member is frozen
        while the others go on); see :mod:`kanode.divergence`.

    The limits of every value are in the module docstring.
    """

    # --- data
    system: str = "lotka_volterra"
    data: str = ""
    n_traj: int = 1
    n_test_traj: int = -1          # -1: automatic (AUTO_SPLIT)
    noise: float = 0.0
    y0_spread: float = 0.1
    train_fraction: float = 0.0    # 0: automatic (AUTO_SPLIT)
    holdout_last: int = 0
    data_seed: int = 0
    # --- model
    model: str = "kan"
    widths: list[int] = field(default_factory=list)
    grid_size: int = 5
    spline_order: int = 3
    grid_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    activation: str = "tanh"
    base_activation: str = "silu"
    time_input: bool = False
    positive: bool = False
    fit_initial_state: bool = False
    # --- solver
    method: str = SOLVER_DEFAULTS["method"]
    rtol: float = SOLVER_DEFAULTS["rtol"]
    atol: float = SOLVER_DEFAULTS["atol"]
    step_size: float = 0.0
    adjoint: bool = False
    compile: str = "auto"
    max_num_steps: int = SOLVER_DEFAULTS["max_num_steps"]
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
    divergence_factor: float = DEFAULT_DIVERGENCE_FACTOR
    plateau_steps: int = 0
    plateau_rtol: float = 0.01
    sparsity: float = 0.0
    sparsity_l1: float = 1.0
    sparsity_entropy: float = 2.0
    coef_l1: float = 0.0
    l2: float = 0.0
    grid_update_steps: list[int] = field(default_factory=list)
    grid_extend: list[list[int]] = field(default_factory=list)
    horizons: list[int] = field(default_factory=list)
    # --- settings derived from the data (kanode.recipes)
    recipe: str = "none"
    # --- bookkeeping
    eval_every: int = 10
    checkpoint_every: int = 25
    seed: int = 0
    dtype: str = "float64"
    device: str = "cpu"
    threads: int = 0
    plots: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _normalise(f.name, getattr(self, f.name), f.type))
        if self.data:
            self.system = ""  # a file's data is not the default system's (see the class docstring)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line message naming the first invalid field."""
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        for name, (lo, hi) in INT_RANGES.items():
            _int_range(name, getattr(self, name), lo, hi)
        for name, (lo, hi, open_lo) in FLOAT_RANGES.items():
            _float_range(name, getattr(self, name), lo, hi, open_lo)
        _choice("model", self.model, MODELS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("loss", self.loss, LOSSES)
        if self.method in REFUSED_METHODS:
            raise ConfigError(f"method {self.method!r} is torchdiffeq's but kanode cannot use it: "
                              f"{REFUSED_METHODS[self.method]}; use one of {', '.join(METHODS)}")
        _choice("recipe", self.recipe, RECIPE_NAMES)
        _choice("compile", self.compile, COMPILE_MODES)
        if self.compile == "on":
            _check_compilable(self)
        _choice("method", self.method, METHODS,
                hint=" (torchdiffeq's solvers; fixed-step ones use step_size)")
        if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", self.device):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {_show(self.device)}")
        if not self.data:
            _check_system(self.system)
        if self.holdout_last and self.train_fraction:
            raise ConfigError(f"give train_fraction or holdout_last, not both (got train_fraction = "
                              f"{self.train_fraction:g} and holdout_last = {self.holdout_last})")
        if self.batch_time == 1:
            raise ConfigError("batch_time must be 0 (whole window) or at least 2 time points")
        if self.fit_initial_state and self.batch_time:
            raise ConfigError("fit_initial_state fits where each whole training trajectory starts; "
                              "it needs batch_time = 0 (random windows start from observations)")
        self._check_horizons()
        lo, hi = self.grid_range if len(self.grid_range) == 2 else (math.nan, math.nan)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"grid_range must be two finite numbers [low, high] with "
                              f"low < high, got {_show(self.grid_range)}")
        for step in self.grid_update_steps:
            _int_range("grid_update_steps entries", step, 0, MAX_STEPS)
        for pair in self.grid_extend:
            if len(pair) != 2:
                raise ConfigError(f"grid_extend entries must be [step, new_grid_size], "
                                  f"got {_show(pair)}")
            _int_range("grid_extend step", pair[0], 0, MAX_STEPS)
            _int_range("grid_extend grid size", pair[1], 2 if self.model == "rswaf" else 1,
                       MAX_GRID_SIZE)
        self._check_model()
        if self.model != "kan" and (self.sparsity or self.coef_l1):
            raise ConfigError("sparsity and coef_l1 penalise B-spline KAN edges; use model = 'kan' "
                              "or set them to 0")
        if self.optimizer == "adam" and self.steps == 0:
            raise ConfigError("optimizer 'adam' needs steps >= 1")
        if self.optimizer == "lbfgs" and self.lbfgs_steps == 0:
            raise ConfigError("optimizer 'lbfgs' needs lbfgs_steps >= 1")
        if self.optimizer == "adam+lbfgs" and self.steps + self.lbfgs_steps == 0:
            raise ConfigError("optimizer 'adam+lbfgs' needs steps + lbfgs_steps >= 1")
        if not self.data and self.method in FIXED_STEP_METHODS:
            t = _system_time_grid(self.system)
            check_fixed_steps(self, t[-1] - t[0], min(b - a for a, b in zip(t[:-1], t[1:])))

    def _check_horizons(self) -> None:
        if not self.horizons:
            return
        for h in self.horizons:
            _int_range("horizons entries", h, 1, MAX_STEPS)
        if any(b <= a for a, b in zip(self.horizons[:-1], self.horizons[1:])):
            raise ConfigError(f"horizons must increase (window lengths in sampling intervals, "
                              f"e.g. 2 4 8), got {_show(self.horizons)}")
        if self.batch_time:
            raise ConfigError("horizons (a curriculum of windows, then the whole trajectory) needs "
                              "batch_time = 0; remove one of them")
        if self.optimizer == "lbfgs" or self.steps < len(self.horizons) + 1:
            raise ConfigError(f"horizons split the Adam steps into {len(self.horizons) + 1} stages; "
                              f"they need optimizer adam or adam+lbfgs with steps >= "
                              f"{len(self.horizons) + 1} (got {self.optimizer}, steps = {self.steps})")

    def _check_model(self) -> None:
        from kanode.nn.activations import ACTIVATIONS as BASE_ACTIVATIONS
        from kanode.nn.mlp import _ACTIVATIONS as MLP_ACTIVATIONS

        defaults = FitConfig.__dataclass_fields__
        _choice("activation", self.activation, tuple(MLP_ACTIVATIONS))
        _choice("base_activation", self.base_activation, tuple(BASE_ACTIVATIONS))
        if self.model == "mlp":
            if self.base_activation != defaults["base_activation"].default:
                raise ConfigError("base_activation applies to KANs only; an MLP's activation "
                                  "is set with activation (--activation)")
            for name in ("grid_update_steps", "grid_extend"):
                if getattr(self, name):
                    raise ConfigError(f"{name} applies to KANs only (model = 'mlp' has no grid); "
                                      f"remove it or use model = 'kan'")
        elif self.activation != defaults["activation"].default:
            raise ConfigError(f"activation applies to MLPs only; set a KAN's base activation "
                              f"with base_activation (--base-activation), got activation = "
                              f"{_show(self.activation)} for model = {self.model!r}")
        if self.model == "rswaf" and self.grid_size < 2:
            raise ConfigError(f"grid_size must be at least 2 for model 'rswaf' (two centres), "
                              f"got {self.grid_size}")
        if self.widths:
            if not 2 <= len(self.widths) <= MAX_LAYERS + 1:
                raise ConfigError(f"widths must list 2 to {MAX_LAYERS + 1} sizes (at most "
                                  f"{MAX_LAYERS} layers), got {len(self.widths)}")
            for width in self.widths:
                _int_range("each of widths", width, 1, MAX_LAYER_WIDTH)
            check_widths_for(self, self.widths[-1])
        elif not self.data:
            check_widths_for(self, _system_dim(self.system))

    # -------------------------------------------------------------- derived
    @property
    def training_fraction(self) -> float:
        """``train_fraction``, or its automatic value when it is 0 (:data:`AUTO_SPLIT`)."""
        kind = "file" if self.data else "simulated"
        return self.train_fraction or AUTO_SPLIT[kind]["train_fraction"]

    @property
    def held_out_trajectories(self) -> int:
        """``n_test_traj``, or its automatic value when it is -1 (:data:`AUTO_SPLIT`)."""
        kind = "file" if self.data else "simulated"
        return self.n_test_traj if self.n_test_traj >= 0 else AUTO_SPLIT[kind]["n_test_traj"]

    @property
    def total_steps(self) -> int:
        """Number of optimiser steps the schedule runs."""
        adam = self.steps if self.optimizer in ("adam", "adam+lbfgs") else 0
        lbfgs = self.lbfgs_steps if self.optimizer in ("lbfgs", "adam+lbfgs") else 0
        return adam + lbfgs

    def resolved_widths(self, dim: int) -> list[int]:
        """``widths``, or the default ``[dim (+1 with time_input), hidden, dim]``."""
        if self.widths:
            return list(self.widths)
        return widths_for(dim, [DEFAULT_HIDDEN[self.model]], self.time_input)

    def replace(self, **changes: Any) -> "FitConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "FitConfig":
        """Build from a mapping, rejecting unknown keys and wrong types.

        Keys that are missing take their defaults, so a ``config.toml`` written
        by an older version (e.g. without ``base_activation``) still loads.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a table of settings, got "
                              f"{type(values).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {_show(', '.join(map(str, unknown)))}; valid keys are "
                f"{', '.join(sorted(known))}")
        coerced = {name: _coerce(name, value, known[name].type, source)
                   for name, value in values.items()}
        try:
            return cls(**coerced)
        except ConfigError as exc:
            if str(exc).startswith(source):
                raise
            raise ConfigError(f"{source}: {exc}") from None


def _check_compilable(config: FitConfig) -> None:
    """compile = 'on' needs what kanode.compiled compiles: a compiled fixed-step method,
    direct backpropagation and a B-spline KAN or an MLP."""
    if config.method not in COMPILED_METHODS:
        raise ConfigError(f"compile = 'on' needs a fixed-step method of {', '.join(COMPILED_METHODS)}, "
                          f"got method = {config.method!r}; use compile = 'auto' or 'off'")
    if config.adjoint:
        raise ConfigError("compile = 'on' compiles direct backpropagation; set adjoint = false, or "
                          "compile = 'auto' or 'off'")
    if config.model == "rswaf":
        raise ConfigError("compile = 'on' compiles B-spline KANs and MLPs, not model = 'rswaf'; "
                          "use compile = 'auto' or 'off'")


def widths_for(dim: int, hidden: Sequence[int], time_input: bool = False) -> list[int]:
    """``[dim (+1 with time_input), *hidden, dim]``: the widths of a vector field."""
    return [dim + int(time_input), *hidden, dim]


def check_widths_for(config: FitConfig, dim: int) -> list[int]:
    """The config's widths for a ``dim``-dimensional state, checked; also checks the
    parameter count (at the largest grid) against :data:`MAX_PARAMS`.

    Raises :class:`ConfigError` when the first width is not ``dim`` (+1 with
    ``time_input``), the last is not ``dim``, or the model is too large.
    """
    widths = config.resolved_widths(dim)
    expected_in = dim + int(config.time_input)
    if widths[0] != expected_in or widths[-1] != dim:
        extra = (f" (the first is {expected_in}: the state plus t, as time_input is set)"
                 if config.time_input else "")
        raise ConfigError(f"widths {_show(widths)} must start and end with the state "
                          f"dimension {dim}{extra}")
    largest = max([config.grid_size, *(size for _, size in config.grid_extend)])
    n_params = estimate_params(_replace_unchecked(config, grid_size=largest), dim)
    if n_params > MAX_PARAMS:
        grid = "" if config.model == "mlp" else f" and grid_size {largest}"
        raise ConfigError(f"the {config.model} with widths {_show(widths)}{grid} has "
                          f"{n_params:,} parameters, more than the limit {MAX_PARAMS:,} "
                          "(kanode.config.MAX_PARAMS); use smaller widths or grid")
    return widths


def estimate_params(config: FitConfig, dim: int) -> int:
    """Parameter count of the vector field a config builds for a ``dim``-dimensional state.

    B-spline KAN layer ``in·out·(G + k + 2)``, RSWAF layer ``in·out·(G + 2)``,
    linear layer ``out·(in + 1)`` (DESIGN); widths as :meth:`FitConfig.resolved_widths`.
    """
    widths = config.resolved_widths(dim)
    pairs = list(zip(widths[:-1], widths[1:]))
    if config.model == "kan":
        return sum(a * b * (config.grid_size + config.spline_order + 2) for a, b in pairs)
    if config.model == "rswaf":
        return sum(a * b * (config.grid_size + 2) for a, b in pairs)
    if config.model == "mlp":
        return sum(b * (a + 1) for a, b in pairs)
    raise AssertionError(f"unhandled model {config.model!r}")  # validate() allows no other


def check_fixed_steps(config: FitConfig, t_span: float, min_dt: float) -> None:
    """Refuse a fixed-step solve that would take more than ``max_num_steps`` steps.

    A fixed-step method steps ``step_size`` (or, with ``step_size = 0``, the
    data's smallest time gap ``min_dt``) across the whole span ``t_span``;
    torchdiffeq allocates that whole time grid up front. Adaptive methods pass.

    Raises :class:`ConfigError` giving the number of steps it would take.
    """
    if config.method not in FIXED_STEP_METHODS:
        return
    step = config.step_size or float(min_dt)
    origin = f"step_size={step:g}" if config.step_size else \
        f"the data's smallest time gap {step:g} (step_size = 0)"
    if not (math.isfinite(step) and step > 0):
        raise ConfigError(f"fixed-step method {config.method!r} cannot step by {origin}; "
                          "set step_size > 0 or use an adaptive method such as dopri5")
    ratio = float(t_span) / step  # torchdiffeq takes ceil(ratio) steps
    if not (math.isfinite(ratio) and math.ceil(ratio) <= config.max_num_steps):
        shown = f"{math.ceil(ratio):,}" if ratio < 1e6 else f"{ratio:.3g}"
        raise ConfigError(f"{origin} would take {shown} {config.method} steps over the "
                          f"time span {float(t_span):g}, more than max_num_steps="
                          f"{config.max_num_steps}; raise step_size, or use an adaptive method "
                          "such as dopri5")


# --------------------------------------------------------------- helpers
def _replace_unchecked(config: FitConfig, **changes: Any) -> FitConfig:
    """A copy with ``changes`` applied, skipping validation (for estimates)."""
    copy = object.__new__(FitConfig)
    copy.__dict__.update(config.__dict__, **changes)
    return copy


def _show(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: repr, newlines escaped, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _choice(name: str, value: str, options: tuple[str, ...], hint: str = "") -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}{hint}; got {_show(value)}")


def _int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {_show(value)}")
    if not lo <= value <= hi:
        limit = (f"at least {lo}" if value < lo
                 else f"at most {hi:,} (kanode.config.{LIMIT_REASONS.get(name, 'MAX_STEPS')})")
        raise ConfigError(f"{name} must be {limit}, got {_show(value)}")


def _float_range(name: str, value: float, lo: float, hi: float, open_lo: bool) -> None:
    low_ok = value > lo if open_lo else value >= lo
    if not (math.isfinite(value) and low_ok and value <= hi):
        if lo == 0 and math.isinf(hi):
            what = "a positive number (finite)" if open_lo else "a non-negative number (finite)"
        else:
            what = f"a number in {'(' if open_lo else '['}{lo:g}, {hi:g}]"
        raise ConfigError(f"{name} must be {what}, got {_show(value)}")


def _normalise(name: str, value: Any, annotation: str) -> Any:
    """Python-side conveniences: numpy scalars and tuples become ints, floats and lists."""
    if annotation == "int" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if (annotation == "float" and isinstance(value, numbers.Real)
            and not isinstance(value, bool)):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range: _check_type reports it
            return value
    if annotation.startswith("list[") and isinstance(value, (list, tuple)):
        inner = annotation[len("list["):-1]
        return [_normalise(name, v, inner) for v in value]
    return value


def _check_type(name: str, value: Any, annotation: str) -> None:
    ok = {"bool": (lambda v: isinstance(v, bool), "true or false"),
          "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
          "float": (lambda v: isinstance(v, float), "a number"),
          "str": (lambda v: isinstance(v, str), "a string")}
    if annotation in ok:
        test, what = ok[annotation]
        if not test(value):
            raise ConfigError(f"{name} must be {what}, got {_show(value)}")
        return
    inner = annotation[len("list["):-1]
    if not isinstance(value, list):
        raise ConfigError(f"{name} must be a list, got {_show(value)}")
    for item in value:
        _check_type(f"{name} entries", item, inner)


def _check_system(name: str) -> None:
    import systems  # numpy-only

    if name not in systems.names():
        raise ConfigError(f"unknown system {_show(name)}; choose one of "
                          f"{', '.join(systems.names())} (or give data = a .npz/.csv file)")


def _system_dim(name: str) -> int:
    import systems

    return systems.get(name).dim


def _system_time_grid(name: str) -> list[float]:
    import systems

    return [float(v) for v in systems.get(name).default_t()]


def _coerce(name: str, value: Any, annotation: str, source: str) -> Any:
    """Check a TOML value against the field's annotation (given as a string)."""
    bad = ConfigError(f"{source}: {name} = {_show(value)} is not a valid {annotation}")
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
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range
            raise bad from None
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
    """A TOML file as a dict.

    Raises ``error`` with a one-line message naming the file when it is missing,
    empty-named, a directory or FIFO (refused without blocking on it),
    unreadable, not UTF-8, not TOML, or nested too deeply to parse.
    """
    if not str(path).strip():
        raise error(f"{what} path is empty; give the path of a .toml file")
    path = Path(path)
    name = ascii(str(path))[1:-1] if not str(path).isprintable() else str(path)
    try:
        raw = read_regular_file(path)
    except FileNotFoundError:
        raise error(f"{what} {name} does not exist") from None
    except ValueError as exc:  # a directory, FIFO or device, or unreadable
        raise error(f"{what} {name} {exc}; give the path of a .toml file") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"cannot read {what} {name}: not UTF-8 text (byte offset {exc.start}); "
                    "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"cannot read {what} {name}: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise error(f"cannot read {what} {name}: arrays or tables nested too deeply") from None


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
