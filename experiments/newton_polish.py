"""Is a run's plateau the model's or the optimiser's? Damped Newton steps from its last checkpoint.

The study (experiments/study.py) stops every run on a plateau of Adam → L-BFGS.
This script takes a finished run and continues from its final parameters with
Levenberg-damped Newton steps on the exact Hessian of the same training
objective (kanode.analysis: the whole-window training MSE, differentiated
through the solver; exact up to a few thousand parameters):

    (H + λ·I) δ = −g,   accept if the loss falls (λ /= 3), else λ *= 10

with λ started at 1e-3·λmax(H). If the loss falls well below the plateau, the
plateau was the optimiser's, not the model's capacity. Prints one line per
iteration and, with ``--out``, writes them as CSV.

    python experiments/newton_polish.py RUN_DIR [RUN_DIR ...] [--iters 15] [--out F.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kanode.analysis.hessian import exact_hessian, hvp_operator  # noqa: E402
from kanode.analysis.objective import load_objective  # noqa: E402


def newton_polish(run_dir: Path, iters: int) -> list[dict[str, float]]:
    """One row per iteration: loss before, λ, whether the step was taken, seconds."""
    f, theta = load_objective(run_dir)
    theta = theta.to(torch.float64)
    loss = float(f(theta))
    rows = [{"run": str(run_dir), "iter": 0, "loss": loss, "damping": float("nan"), "accepted": True,
             "seconds": 0.0}]
    damping = None
    start = time.perf_counter()
    for k in range(1, iters + 1):
        point = theta.clone().requires_grad_()
        (grad,) = torch.autograd.grad(f(point), point)
        hess = exact_hessian(hvp_operator(f, theta), theta.numel())
        if damping is None:
            damping = 1e-3 * float(torch.linalg.eigvalsh(hess)[-1])
        eye = torch.eye(theta.numel(), dtype=torch.float64)
        for _ in range(20):  # raise the damping until a step lowers the loss
            step = torch.linalg.solve(hess + damping * eye, -grad)
            trial = float(f(theta + step))
            if trial == trial and trial < loss:
                theta, loss, damping = theta + step, trial, damping / 3
                accepted = True
                break
            damping *= 10
        else:
            accepted = False
        rows.append({"run": str(run_dir), "iter": k, "loss": loss, "damping": damping, "accepted": accepted,
                     "seconds": time.perf_counter() - start})
        print(f"{run_dir}  iter {k:2d}  loss {loss:.4e}  damping {damping:.2e}  "
              f"{'step' if accepted else 'no step'}  {time.perf_counter() - start:.0f} s", flush=True)
        if not accepted:
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (one fit each)")
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        run_rows = newton_polish(run, args.iters)
        print(f"{run}: {run_rows[0]['loss']:.4e} -> {run_rows[-1]['loss']:.4e} in {len(run_rows) - 1} iterations", flush=True)
        rows += run_rows
    if args.out is not None:
        with args.out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
