"""Polish a finished fit with Levenberg–Marquardt steps until its loss plateaus.

Adam and L-BFGS stop on a plateau that is often the optimiser's, not the
model's: L-BFGS advances in rare bursts near a minimum. ``polish_run`` takes a
run directory, continues from its last checkpoint with Levenberg–Marquardt
(:func:`kanode.optim.levenberg.levenberg_marquardt`) on the same objective —
the whole-window training MSE plus the run's ``l2`` penalty, through the same
solver, in float64 — and stops on the plateau rule (by default: less than 1 %
drop over 10 accepted steps), a cap, or when no step lowers the loss. It writes
``checkpoints/polished.pt`` (``kanode.load_run(run, "polished")`` loads it) and
``polish.json`` (the losses, how it stopped, seconds); the run's own files are
left as they were.

    python -m kanode.polish RUN_DIR [RUN_DIR ...] [--max-steps 200] [--plateau-steps 10]

Each step costs one residual Jacobian (R × P; :mod:`kanode.residuals`) and a
P × P solve: a [2, 10, 2] KAN on the study's Lotka–Volterra window (R = 140,
P = 400) takes ~0.1 s per step on one core. Models beyond
:data:`MAX_PARAMS` parameters are refused (the dense P × P system).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from kanode.checkpoints import atomic_write
from kanode.config import ConfigError
from kanode.optim.levenberg import levenberg_marquardt
from kanode.residuals import residual_jacobian, training_residuals
from kanode.runs import RunDir

__all__ = ["PolishResult", "polish_run", "read_polish", "MAX_PARAMS", "POLISH_FILE"]

MAX_PARAMS = 6000
POLISH_FILE = "polish.json"


@dataclass(frozen=True)
class PolishResult:
    """One polished run: its training objective (the MSE, plus the l2 penalty when the run has one)
    before and after, the training MSE after, accepted steps, how it stopped
    (:data:`kanode.optim.levenberg.STOPS`), wall seconds, the objective after each step, and the
    run's ``l2``."""

    run: str
    start_loss: float
    loss: float
    train_mse: float
    steps: int
    stopped_on: str
    seconds: float
    losses: tuple[float, ...]
    l2: float = 0.0


def read_polish(run_dir: str | Path) -> PolishResult | None:
    """The run's ``polish.json`` as a :class:`PolishResult` (None when it was never polished)."""
    path = Path(run_dir) / POLISH_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return PolishResult(**{**raw, "losses": tuple(raw["losses"])})


def polish_run(run_dir: str | Path, *, max_steps: int = 200, plateau_steps: int = 10,
               plateau_rtol: float = 0.01, checkpoint: str = "last") -> PolishResult:
    """Polish the run in ``run_dir`` from ``checkpoints/<checkpoint>.pt`` and save the result.

    The objective is ``mean(r²) + l2 · Σ p²`` over the network's parameters (the
    run's training objective; ``l2`` from its config). Raises ConfigError when the
    directory is not a single run, has no checkpoint, or the model has more than
    :data:`MAX_PARAMS` parameters.
    """
    from kanode.predict import LoadedEnsemble, load_run

    run = load_run(run_dir, checkpoint)
    if isinstance(run, LoadedEnsemble):
        raise ConfigError(f"{run_dir} is an ensemble directory; polish its members' run directories")
    field, data, config = run.field, run.data, run.config.replace(dtype="float64", device="cpu")
    params = list(field.parameters())
    theta0 = parameters_to_vector(params).detach()
    if theta0.numel() > MAX_PARAMS:
        raise ConfigError(f"{run_dir}: {theta0.numel()} parameters; polish solves a dense system and "
                          f"takes at most {MAX_PARAMS}")
    net_mask = _net_mask(field)                                         # (P,) penalised by l2
    root_l2 = math.sqrt(config.l2)

    def load(theta: Tensor) -> None:
        vector_to_parameters(theta, params)

    def residuals(theta: Tensor) -> Tensor:                              # (R [+ P_net],)
        load(theta)
        r = training_residuals(field, data, config)
        return _with_penalty(r / math.sqrt(r.numel()), theta, net_mask, root_l2)

    def jacobian(theta: Tensor) -> tuple[Tensor, Tensor]:
        load(theta)
        r, jac = residual_jacobian(field, data, config)
        scale = 1.0 / math.sqrt(r.numel())
        if not root_l2:
            return r * scale, jac * scale
        penalty_rows = torch.eye(theta.numel(), dtype=jac.dtype)[net_mask] * root_l2
        return (_with_penalty(r * scale, theta, net_mask, root_l2), torch.cat([jac * scale, penalty_rows]))

    start = time.perf_counter()
    result = levenberg_marquardt(residuals, jacobian, theta0, max_steps=max_steps,
                                 plateau_steps=plateau_steps, plateau_rtol=plateau_rtol)
    load(result.theta)
    train_mse = float(training_residuals(field, data, config).pow(2).mean())
    polished = PolishResult(str(run_dir), result.losses[0], result.losses[-1], train_mse, result.steps,
                            result.stopped_on, time.perf_counter() - start, tuple(result.losses), config.l2)
    grid = getattr(field.net, "grid_size", None)
    RunDir(Path(run_dir)).save_best(field.state_dict(), result.steps, train_mse, grid, name="polished")
    text = json.dumps(asdict(polished), indent=1) + "\n"
    atomic_write(Path(run_dir) / POLISH_FILE, lambda fh: fh.write(text), binary=False)
    return polished


def _net_mask(field: torch.nn.Module) -> Tensor:
    """(P,) True for the entries of the network's parameters (not fitted initial states)."""
    return torch.cat([torch.full((p.numel(),), name.startswith("net."), dtype=torch.bool)
                      for name, p in field.named_parameters()])


def _with_penalty(r: Tensor, theta: Tensor, net_mask: Tensor, root_l2: float) -> Tensor:
    """r (R,) with the l2 penalty's residuals √l2 · θ_net appended (nothing when l2 is 0)."""
    return torch.cat([r, root_l2 * theta[net_mask]]) if root_l2 else r


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kanode.polish", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (one fit each)")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--plateau-steps", type=int, default=10)
    parser.add_argument("--plateau-rtol", type=float, default=0.01)
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last")
    args = parser.parse_args(argv)
    failed = 0
    for run in args.runs:
        try:
            p = polish_run(run, max_steps=args.max_steps, plateau_steps=args.plateau_steps,
                           plateau_rtol=args.plateau_rtol, checkpoint=args.checkpoint)
        except (ConfigError, ValueError) as exc:
            print(f"{run}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        change = (f"training MSE {p.start_loss:.4g} -> {p.train_mse:.4g}" if not p.l2 else
                  f"objective with l2 {p.start_loss:.4g} -> {p.loss:.4g}, training MSE {p.train_mse:.4g}")
        print(f"{run}: {change} in {p.steps} steps ({p.stopped_on}, {p.seconds:.1f} s); checkpoints/polished.pt",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
