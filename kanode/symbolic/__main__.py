"""``python -m kanode.symbolic``: equations from data.

    python -m kanode.symbolic --system lotka_volterra --out DIR   # the whole recipe from scratch
    python -m kanode.symbolic --data FILE [data flags] --out DIR
    python -m kanode.symbolic RUN_DIR [--out DIR]                 # from an existing KAN run

Writes formula.json, formula.tex, formula.py, summary.json, edges.png and
network.png into DIR and prints one progress line per stage. Every option is checked
before any work (:class:`kanode.symbolic.SymbolicConfig`, :class:`kanode.config.FitConfig`):
a bad one is one line ``kanode: error: ...`` and exit status 2.

With ``--data FILE`` a single trajectory is fine: unless ``--n-test-traj`` or
``--train-fraction`` say otherwise, every trajectory of the file is trained on, whole.

Exit status: 0 when the formula reproduces the data; 4 (``EXIT_REJECTED``) when it does not
(:mod:`kanode.symbolic.verdict`: its trajectory error from its fitted initial states is not
finite or over 10× the KAN's) — the files are written and ``summary.json`` says
``"status": "rejected"`` and why; 1 when a stage could not reach a formula; 2 for bad input.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import torch

from kanode.cli_args import HELP, OneLineParser
from kanode.config import ConfigError, FitConfig, check_fixed_steps
from kanode.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_REJECTED

from .pipeline import DiscoveryError
from .recipe import discover
from .polish import holdout_points
from .settings import SymbolicConfig

DATA_FLAGS = ("system", "data", "n_traj", "n_test_traj", "noise", "y0_spread", "train_fraction",
              "holdout_last", "data_seed", "seed", "threads", "method", "step_size")
RUN_DIR_FLAGS = ("threads",)
"""The data flags that apply with RUN_DIR (the run fixes its data, model and solver)."""
SPARSIFY_FLAGS = ("hidden", "first_layer", "grid_size", "sparsity", "sparsity_l1", "sparsity_entropy",
                  "coef_l1", "sparse_steps", "sparse_lbfgs_steps", "lr")
"""Recipe flags of the first stage, which RUN_DIR replaces by its trained KAN."""
RECIPE_HELP = {
    "start": "where the formula comes from: sparse (regression of derivative estimates on the default "
             "candidate terms, then the polish) or kan (the KAN's symbolified edges, then the polish)",
    "derivatives": "derivative estimates of the sparse start: smoothed (local polynomials of the data) "
                   "or kan (the field of a KAN-ODE fitted first)",
    "hidden": "hidden width of the KAN the recipe starts from",
    "first_layer": "first layer at the start: linear (trainable affine symbolic edges) or spline",
    "grid_size": "B-spline grid intervals of the spline edges",
    "sparsity": "weight λ of the sparsity penalty during the first training",
    "sparsity_l1": "L1 weight inside the sparsity penalty",
    "sparsity_entropy": "entropy weight inside the sparsity penalty",
    "coef_l1": "L1 penalty on the spline coefficients during the first training",
    "sparse_steps": "Adam steps of the sparse training",
    "sparse_lbfgs_steps": "L-BFGS steps of the sparse training",
    "edge_threshold": "prune edges whose attribution is below this",
    "node_threshold": "prune hidden nodes whose attribution is below this",
    "retrain_steps": "Adam steps after pruning",
    "retrain_lbfgs_steps": "L-BFGS steps after pruning",
    "library": "candidate functions of the edge fits: comma-separated names (x, x^2, x^3, x^4, 1/x, sqrt, "
               "exp, log, sin, tanh, abs, gaussian, 0) or all",
    "complexity_weight": "an edge takes the function minimising log10(1 - R²) + this × complexity",
    "finetune_steps": "Adam steps fine-tuning the symbolic constants",
    "finetune_lbfgs_steps": "L-BFGS steps fine-tuning the symbolic constants",
    "drop_threshold": "drop a term whose RMS over the training states is below this fraction "
                      "of its equation's largest term",
    "digits": "significant digits of the exported constants",
    "polish_rounds": "at most this many refit-and-drop rounds of the formula's coefficients (0: no polish)",
    "polish_ridge": "ridge weight of the polish's term selection (0: none; see kanode.symbolic.polish.refit)",
    "holdout_fraction": "share of each training trajectory's last points that the term selection "
                        "forecasts to compare supports (they are fitted again at the end)",
    "lr": "Adam learning rate of the sparse training and the retraining",
    "finetune_lr": "Adam learning rate of the symbolic fine-tuning",
}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m kanode.symbolic",
                           description="Discover the ODE behind trajectories: sparsify, prune and "
                                       "symbolify a KAN vector field, then export the formula.")
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                        help="an existing KAN run (python -m kanode.fit); its config gives the data")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/symbolic or "
                                      "runs/<system>-symbolic-<time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    types = {f.name: f.type for f in fields(FitConfig)}
    for name in DATA_FLAGS:
        kind = {"int": int, "float": float, "str": str}[types[name]]
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                            help=HELP[name])
    defaults = SymbolicConfig()
    for f in fields(SymbolicConfig):
        kind = {"int": int, "float": float, "str": str}[f.type]
        parser.add_argument("--" + f.name.replace("_", "-"), dest="sym_" + f.name, type=kind, default=None,
                            help=f"{RECIPE_HELP[f.name]} (default: {getattr(defaults, f.name)})")
    return parser


def _load_run(run_dir: str):
    """(config, data, trained field) of a KAN run (its best checkpoint, else its last), in
    float64; ConfigError with one line otherwise."""
    from kanode.analysis import load_run_field
    from kanode.runs import RunDir

    run = RunDir(run_dir)
    config = run.load_config()
    if config.model != "kan":
        raise ConfigError("symbolic regression needs a KAN run")
    if not (run.best_path.exists() or run.last_path.exists()):
        raise ConfigError(f"{run.path} has no checkpoints/best.pt or last.pt to read the model from")
    which = "best" if run.best_path.exists() else "last"
    try:
        field, data, config = load_run_field(run_dir, which)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read the model in {run.path}/checkpoints/{which}.pt: "
                          f"{' '.join(str(exc).split())[:160]}") from None
    return config, data, field


def _check_out(out: Path) -> None:
    """Refuse an output path that is, or lies under, something other than a directory."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"--out {out}: {path} exists and is not a directory; give a directory")
            return


def _check_not_in_another_run(out: Path, run_dir: str | None) -> None:
    """Formulas go next to the run they come from (RUN_DIR/symbolic by default) or outside
    every run: an ``--out`` inside some other run directory would mix unrelated outputs into
    it (``kanode.outdirs``: run directories never nest). ConfigError (one line) otherwise."""
    from kanode.outdirs import enclosing_run

    outer = enclosing_run(out)
    if outer is not None and (run_dir is None or outer.resolve() != Path(run_dir).resolve()):
        raise ConfigError(f"--out {out} is inside the run directory {outer}; write the formula "
                          "outside it (or inside the run it comes from, with RUN_DIR)")


def _settings(args) -> tuple[SymbolicConfig, dict]:
    """The recipe's settings and the data flags given, validated (ConfigError otherwise)."""
    chosen = {f.name: getattr(args, "sym_" + f.name) for f in fields(SymbolicConfig)
              if getattr(args, "sym_" + f.name) is not None}
    sym = SymbolicConfig(**chosen)
    given = {name: getattr(args, name) for name in DATA_FLAGS if getattr(args, name) is not None}
    if args.run_dir is not None:
        ignored = [n for n in given if n not in RUN_DIR_FLAGS] + [n for n in chosen if n in SPARSIFY_FLAGS]
        if ignored:
            flags = ", ".join("--" + n.replace("_", "-") for n in ignored)
            raise ConfigError(f"{flags}: RUN_DIR fixes its data and its trained KAN; give these "
                              "with --system/--data instead of RUN_DIR")
    return sym, given


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = (lambda line: None) if args.quiet else (lambda line: print(f"[kanode.symbolic] {line}", flush=True))
    try:
        sym, given = _settings(args)
        if args.out:
            _check_out(Path(args.out))
        if args.run_dir is not None:
            config, data, start = _load_run(args.run_dir)
            if "threads" in given:
                config = config.replace(threads=given["threads"])
            out = Path(args.out) if args.out else Path(args.run_dir) / "symbolic"
        else:
            from kanode.data import load_data

            config = FitConfig(**given)
            data = load_data(config).to(torch.float64, "cpu")
            t = data.t.tolist()
            if len(t) > 1:
                check_fixed_steps(config, t[-1] - t[0], min(b - a for a, b in zip(t[:-1], t[1:])))
            start = None
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            name = Path(config.data).stem if config.data else config.system
            out = Path(args.out) if args.out else Path("runs") / f"{name}-symbolic-{stamp}"
        _check_out(out)
        _check_not_in_another_run(out, args.run_dir)
        if sym.polish_rounds:
            try:   # the term selection holds points out: refuse a window too short before any work
                holdout_points(data.n_train, sym.holdout_fraction)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        print(f"kanode: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if config.threads:
        torch.set_num_threads(config.threads)
    from .outputs import write_discovery, write_summary

    if bool(torch.isnan(data.y).any()) or bool(torch.isnan(data.y_held_out).any()):
        # the polish and the verdict fit whole trajectories value by value; they do not mask yet
        print(f"kanode: error: {config.data or 'the data'} has missing values (empty or NaN cells); "
              "kanode.symbolic needs every value observed: fill the trajectory in, or fit it with "
              "python -m kanode.fit, which leaves missing values out of its losses", file=sys.stderr)
        return EXIT_BAD_INPUT
    say(f"data: {config.data or config.system}, {data.y.shape[0]} training trajectories of "
        f"{data.n_train} points ({data.t.shape[0] - data.n_train} more extrapolated), "
        f"{data.y_held_out.shape[0]} held out; writing to {out}")
    try:
        discovery = discover(data, config, sym, start=start, progress=say)
    except DiscoveryError as exc:
        write_summary({**exc.partial, "status": "failed", "reason": str(exc)}, out)
        print(f"kanode: error: {exc}; the partial results are in {out / 'summary.json'}", file=sys.stderr)
        return EXIT_FAILED
    summary = discovery.summary
    summary["status"] = "finished" if discovery.verdict.accepted else "rejected"
    summary["reason"] = discovery.verdict.reason
    write_discovery(discovery, out)
    for name, expr in discovery.formula.as_strings().items():
        print(f"d{name}/dt = {expr}")
    print(f"{discovery.verdict.reason}; terms from: {summary['terms_from']}; files in {out}")
    if not discovery.verdict.accepted:
        print(f"kanode: error: {discovery.verdict.reason}; status 'rejected' in {out / 'summary.json'}",
              file=sys.stderr)
        return EXIT_REJECTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
