"""Command-line flags of ``kanode.fit``, one per :class:`FitConfig` field."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from .config import ConfigError, FitConfig, read_toml
from .exit_codes import EXIT_BAD_INPUT

__all__ = ["build_parser", "overrides_from_args", "given_settings", "OneLineParser"]

HELP = {
    "system": "dynamical system to simulate the data from (python -m systems list)",
    "data": "a .npz/.csv trajectory file instead of simulating: CSV header traj,t,NAME [UNIT],...; "
            "an empty or nan cell is a missing value (left out of every loss); trajectories may "
            "have their own times. States are mapped to the KAN grid range by their observed "
            "min/max and the network output is scaled by the std of the observed dy/dt "
            "(README 'Fitting')",
    "n_traj": "training trajectories (initial conditions around the canonical y0)",
    "n_test_traj": "held-out trajectories for the validation loss; -1 (default) = 1 for a simulated "
                   "system, 0 for --data",
    "noise": "observation noise, as a fraction of each state's standard deviation",
    "y0_spread": "relative spread of the sampled initial conditions",
    "train_fraction": "fraction of the time grid used for training, the rest is extrapolation; "
                      "0 (default) = 0.25 for a simulated system, all (1.0) for --data",
    "holdout_last": "hold out the last K time points as the extrapolation window (instead of "
                    "--train-fraction); 0 = none",
    "data_seed": "seed of the sampled initial conditions and noise",
    "model": "vector field network: kan (B-spline KAN), rswaf (RSWAF KAN) or mlp",
    "widths": "layer widths, e.g. 2 10 2 (default: dim 10 dim for KANs, dim 50 dim for MLPs)",
    "grid_size": "KAN grid intervals per input",
    "spline_order": "KAN B-spline order (3 = cubic)",
    "grid_range": "interval the normalised states are mapped to (the KAN grid range)",
    "activation": "MLP activation: tanh, silu, relu, gelu or softplus (MLPs only)",
    "base_activation": "KAN base-path activation: silu, tanh, relu, gelu, softplus or "
                       "identity (KANs only)",
    "time_input": "feed t to the network (non-autonomous vector field)",
    "positive": "states are positive (populations, concentrations): learn dlog(y)/dt, so forecasts "
                "stay > 0; every observed value must be > 0",
    "fit_initial_state": "fit each training trajectory's initial state with the field (the first "
                         "observation is noisy); needs --batch-time 0",
    "method": "torchdiffeq solver: fixed-step rk4, euler, midpoint, heun2, heun3, "
              "explicit_adams, implicit_adams, or adaptive dopri5, dopri8, bosh3, "
              "fehlberg2, adaptive_heun",
    "rtol": "relative tolerance of adaptive solvers (dopri5, ...)",
    "atol": "absolute tolerance of adaptive solvers (dopri5, ...)",
    "step_size": "step of fixed-step methods (rk4, euler, ...); 0 = the data's sampling interval",
    "adjoint": "backpropagate with the adjoint method: memory O(1) in the solver steps, "
               "but ~30x slower than direct backpropagation on small problems",
    "compile": "run the training loss of fixed-step solves (rk4, euler, midpoint, heun2, heun3; "
               "direct backpropagation; KANs and MLPs) as compiled code: on, off, or auto (only runs "
               "long enough to repay the one-off compile, ~15-60 s, cached across processes)",
    "max_num_steps": "solver steps allowed per solve before it counts as a failure "
                     "(a fixed-step solve needing more is refused up front)",
    "loss": "training loss (mse)",
    "batch_time": "points per random training window; 0 trains on the whole window",
    "batch_size": "random windows per Adam step (with --batch-time)",
    "optimizer": "adam, lbfgs, or adam+lbfgs (Adam steps, then L-BFGS steps)",
    "steps": "Adam steps",
    "lbfgs_steps": "L-BFGS steps (each one line search with strong Wolfe conditions)",
    "lr": "Adam learning rate",
    "lr_schedule": "Adam learning-rate schedule: none, cosine or step",
    "lr_step_every": "steps between learning-rate drops (lr_schedule=step)",
    "lr_step_gamma": "factor of each learning-rate drop (lr_schedule=step)",
    "lbfgs_lr": "L-BFGS step length",
    "lbfgs_history": "L-BFGS history size",
    "lbfgs_max_iter": "L-BFGS iterations per step",
    "grad_clip": "clip the gradient norm to this value; 0 disables",
    "divergence_factor": "a training loss above this multiple of the run's first one (or not finite) "
                         "ends the run as diverged (exit 3)",
    "plateau_steps": "stop once the training loss fell by less than --plateau-rtol over the last this "
                     "many L-BFGS steps; 0 trains every step",
    "plateau_rtol": "relative drop below which --plateau-steps stops the run",
    "sparsity": "weight λ of the KAN paper's sparsity penalty on the edge scores (std of each edge "
                "over the training states; see kanode.symbolic); 0 disables",
    "sparsity_l1": "weight of the L1 term inside the sparsity penalty",
    "sparsity_entropy": "weight of the entropy term inside the sparsity penalty",
    "coef_l1": "L1 penalty on the KAN's spline coefficients (mean |coef| per layer); 0 disables",
    "l2": "L2 penalty l2 * sum(p^2) over the network's parameters, added to the training MSE "
          "(KANs and MLPs, single fits and ensembles); 0 disables",
    "grid_update_steps": "steps at which KAN grids are refit to the visited states (KANs only)",
    "grid_extend": "KAN grid extensions as STEP:GRID_SIZE pairs, e.g. 100:10 200:20 (KANs only)",
    "horizons": "a curriculum: window lengths in sampling intervals, e.g. 2 4 8; the Adam steps are "
                "split into equal stages fitting every window of that many intervals from the observed "
                "states, the last stage and L-BFGS the whole trajectory (needs --batch-time 0); "
                "--horizons with no value: none (also over a recipe's); kanode/horizons.py",
    "recipe": "settings derived from the data: none, or short-series (few, noisy measurements: a "
              "model sized to the data, --positive when all values are > 0, fitted initial states, an "
              "L2 penalty from the data's noise, scaled by rolling-origin validation on the training "
              "window (kanode/selection.py), a horizon curriculum ending on the whole trajectory; "
              "table in kanode/recipes.py); flags you give are kept",
    "eval_every": "steps between validation/extrapolation evaluations",
    "checkpoint_every": "steps between checkpoints",
    "seed": "seed of the model initialisation and the window sampling",
    "dtype": "float32 or float64",
    "device": "cpu or cuda",
    "threads": "torch CPU threads; 0 keeps torch's default",
    "plots": "draw the run's figures into RUN_DIR/plots when it ends (--no-plots skips them)",
}


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line ``kanode: error: ...`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"kanode: error: {' '.join(message.split())} (see --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _pair(text: str) -> list[int]:
    try:
        step, size = text.split(":")
        return [int(step), int(size)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STEP:GRID_SIZE, got {text!r}") from None


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m kanode.fit",
        description="Fit a neural ODE with a KAN or MLP vector field. Flags override --config.",
    )
    parser.add_argument("--config", help="TOML file of settings (keys as the flags, with _)")
    parser.add_argument("--out", help="run directory (default: runs/<system>-<model>-<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--seeds", metavar="LIST",
                        help="fit one ensemble of these seeds (e.g. 0-31 or 0,3,7-9), one run "
                             "directory per seed under --out (seed-<s>); --seed is then not used")
    defaults = FitConfig()
    for f in fields(FitConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kwargs: dict[str, Any] = dict(default=None, dest=f.name,
                                      help=f"{HELP[f.name]} (default: {default})")
        if f.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.name == "grid_extend":
            kwargs.update(nargs="*", type=_pair, metavar="STEP:SIZE")
        elif f.type.startswith("list["):
            inner = int if "int" in f.type else float
            kwargs.update(nargs="*" if f.name in EMPTY_LISTS else "+", type=inner)
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
        parser.add_argument(flag, **kwargs)
    return parser


PATH_OPTIONS = ("config", "out", "resume", "data", "seeds")

# list flags whose empty value means something: ``--horizons`` alone is "no curriculum"
# (a recipe's would apply otherwise)
EMPTY_LISTS = ("horizons",)


MAX_ENSEMBLE = 4096


def parse_seeds(text: str) -> list[int]:
    """``"0-3,8"`` → [0, 1, 2, 3, 8]; ConfigError (one line) for anything else."""
    ranges = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if first < 0 or last < first:
                raise ValueError
            ranges.append((first, last))
    except ValueError:
        raise ConfigError(f"--seeds {text[:40]!r} is not a list of seeds like 0-31 or 0,3,7-9 "
                          "(non-negative, ranges low-high)") from None
    count = sum(last - first + 1 for first, last in ranges)
    if count > MAX_ENSEMBLE:
        raise ConfigError(f"--seeds {text[:40]!r} asks for {count} members; at most {MAX_ENSEMBLE}")
    seeds = [s for first, last in ranges for s in range(first, last + 1)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text[:40]!r} names a seed twice")
    return seeds


def given_settings(args: argparse.Namespace, overrides: dict[str, Any]) -> frozenset[str]:
    """The config fields the user set explicitly: the flags in ``overrides`` and the keys of
    ``--config``'s file (a recipe keeps them even where they equal the defaults)."""
    names = set(overrides)
    if getattr(args, "config", None) is not None:
        names |= set(read_toml(args.config))
    return frozenset(names)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line.

    Raises :class:`ConfigError` for an empty path option (``--out ''`` is a
    mistake, not "not given") and for ``--config``/``--resume`` together.
    """
    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and not value.strip():
            raise ConfigError(f"--{name} must not be empty; give a path or leave the option out")
    if getattr(args, "config", None) is not None and getattr(args, "resume", None) is not None:
        raise ConfigError("--config and --resume cannot be combined: a resumed run keeps its "
                          "own config.toml")
    names = {f.name for f in fields(FitConfig)}
    # validated by FitConfig once merged with --config / the resumed run's config
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if overrides.get("data"):  # config.toml names the file wherever the run is reloaded from
        overrides["data"] = str(Path(overrides["data"]).absolute())
    return overrides
