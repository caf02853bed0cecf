"""Neural-ODE training-step cost and time-to-accuracy on the KAN-ODE protocol.

Protocol (Koenig et al. 2024): Lotka–Volterra, KAN [2, 10, 2] with grid 5,
dopri5 at rtol 1e-7 / atol 1e-9, the 35 training points on t ∈ [0, 3.4].

Part 1 times one training step (solve over the training window, MSE, backward)
for kanode's KAN, the same KAN on the dense Cox–de Boor reference layer
(identical parameters, hence identical NFE) and an MLP [2, 50, 2]; each step is
repeated at fixed parameters and the median is reported with its NFE.
Part 2 runs the default recipe of ``python -m kanode.fit`` (RK4 at the sampling
interval, Adam then L-BFGS; see ``FitConfig``) and reports the wall
time at which training MSE ≤ 1e-4 and extrapolation MSE (t ≤ 14) ≤ 1e-3 first
hold (extrapolation is evaluated every ``eval_every`` steps).

Usage: python experiments/bench_ode.py [--repeats 15] [--out experiments/results]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kanode.config import FitConfig  # noqa: E402
from kanode.data import load_data  # noqa: E402
from kanode.fit import fit  # noqa: E402
from kanode.nn import KAN, MLP  # noqa: E402
from kanode.ode import VectorField, solve  # noqa: E402
from kanode.nn.dense import DenseKAN  # noqa: E402

TRAIN_TARGET, EXTRAP_TARGET = 1e-4, 1e-3


def time_step(field: VectorField, t: torch.Tensor, y: torch.Tensor, adjoint: bool,
              repeats: int) -> dict[str, float]:
    """Median wall time and NFE of one training step at fixed parameters.

    t : (n_train,); y : (n_traj, n_train, dim).
    """
    times, nfes = [], []
    for k in range(repeats + 2):
        field.zero_grad()
        field.reset_nfe()
        start = time.perf_counter()
        pred = solve(field, y[:, 0], t, rtol=1e-7, atol=1e-9, adjoint=adjoint)
        loss = torch.mean((pred - y.transpose(0, 1)) ** 2)
        loss.backward()
        elapsed = time.perf_counter() - start
        if k >= 2:  # warm-up
            times.append(elapsed)
            nfes.append(field.reset_nfe())
    step = statistics.median(times)
    nfe = statistics.median(nfes)
    return {"ms_per_step": 1e3 * step, "nfe_per_step": nfe, "us_per_nfe": 1e6 * step / nfe}


def step_costs(repeats: int) -> list[dict[str, object]]:
    data = load_data(FitConfig())
    t, y = data.t_train, data.y_train
    torch.manual_seed(0)
    kan = KAN([2, 10, 2], grid_size=5).double()
    dense = DenseKAN([2, 10, 2], grid_size=5).double()
    dense.load_state_dict(kan.state_dict())
    torch.manual_seed(0)
    mlp = MLP([2, 50, 2]).double()
    rows = []
    for adjoint in (False, True):
        for name, net in (("kanode KAN [2,10,2] G=5", kan), ("dense-reference KAN [2,10,2] G=5", dense),
                          ("MLP [2,50,2]", mlp)):
            field = VectorField.from_data(net, t, y)
            n_params = sum(p.numel() for p in net.parameters())
            cost = time_step(field, t, y, adjoint, repeats if not adjoint else max(3, repeats // 3))
            rows.append({"model": name, "backprop": "adjoint" if adjoint else "direct",
                         "n_params": n_params, **cost})
    return rows


def time_to_accuracy() -> dict[str, object]:
    run_dir = ROOT / "runs" / "bench_ode_default_run"  # runs/ is git-ignored
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    result = fit(FitConfig(), out=run_dir, quiet=True)
    reached = next((r for r in result.history
                    if r["extrap_loss"] is not None and r["train_loss"] <= TRAIN_TARGET
                    and r["extrap_loss"] <= EXTRAP_TARGET), None)
    s = result.summary
    return {"reached_at_step": reached["step"] if reached else None,
            "reached_at_s": reached["wall_time"] if reached else None,
            "total_steps": s["steps"], "total_wall_s": s["wall_time_s"],
            "final_train_loss": s["final_train_loss"], "final_extrap_loss": s["final_extrap_loss"],
            "final_val_loss": s["final_val_loss"], "run_dir": str(run_dir.relative_to(ROOT))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--skip-recipe", action="store_true", help="only time the steps")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float64")
    rows = step_costs(args.repeats)
    header = f"{'model':34s} {'backprop':8s} {'params':>6s} {'ms/step':>9s} {'NFE/step':>9s} {'µs/NFE':>8s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:34s} {r['backprop']:8s} {r['n_params']:6d} {r['ms_per_step']:9.2f} "
              f"{r['nfe_per_step']:9.0f} {r['us_per_nfe']:8.1f}")
    by = {(r["model"].split()[0], r["backprop"]): r for r in rows}
    for mode in ("direct", "adjoint"):
        k, d, m = by[("kanode", mode)], by[("dense-reference", mode)], by[("MLP", mode)]
        print(f"[{mode}] kanode/dense step time {k['ms_per_step'] / d['ms_per_step']:.3f} "
              f"(target <= 0.5, NFE {k['nfe_per_step']:.0f} vs {d['nfe_per_step']:.0f}); "
              f"kanode/MLP time per NFE {k['us_per_nfe'] / m['us_per_nfe']:.2f} (target <= 2)")
    with (args.out / "bench_ode_steps.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if not args.skip_recipe:
        acc = time_to_accuracy()
        print(f"default recipe: train MSE <= {TRAIN_TARGET:g} and extrapolation MSE <= "
              f"{EXTRAP_TARGET:g} reached at step {acc['reached_at_step']} after "
              f"{acc['reached_at_s'] if acc['reached_at_s'] is None else round(acc['reached_at_s'], 1)} s "
              f"(target <= 180 s); whole run {acc['total_steps']} steps in {acc['total_wall_s']:.1f} s, "
              f"final train {acc['final_train_loss']:.2e}, extrapolation {acc['final_extrap_loss']:.2e}")
        (args.out / "bench_ode_recipe.json").write_text(json.dumps(acc, indent=2) + "\n")


if __name__ == "__main__":
    main()
