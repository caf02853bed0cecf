"""Fit a data file and its states times c (one seed, float64): are the losses times c²?

    python experiments/scale_equivariance.py DATA.csv [--holdout-last 5] [--steps 100] [--lbfgs-steps 200]

Prints, per c, the largest relative difference of metrics.csv's training loss / c² from the
unscaled fit's, the first step where it exceeds 1e-6, and the final losses / c².
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import systems
from kanode.config import FitConfig
from kanode.fit import fit

SCALES = (1.0, 4.0, 0.0625, 10.0, 0.1)  # powers of two scale floating point exactly


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--holdout-last", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lbfgs-steps", type=int, default=200)
    args = parser.parse_args()
    traj = systems.load(args.data)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for c in SCALES:
            path = Path(tmp) / f"x{c}.csv"
            systems.Trajectories(traj.t, traj.y * c, state_names=traj.state_names).save(path)
            config = FitConfig(data=str(path), holdout_last=args.holdout_last, steps=args.steps,
                               lbfgs_steps=args.lbfgs_steps, plots=False)
            result = fit(config)
            runs[c] = (np.array([h["train_loss"] for h in result.history]) / c**2, result.summary)
    base, summary = runs[1.0]
    print("c | max rel. diff of train loss / c² | first step > 1e-6 | final train / c² | "
          "final extrap / c²")
    for c in SCALES[1:]:
        losses, s = runs[c]
        rel = np.abs(losses - base) / np.abs(base)
        first = int(np.argmax(rel > 1e-6)) + 1 if (rel > 1e-6).any() else "-"
        print(f"{c:g} | {rel.max():.2e} | {first} | {s['final_train_loss'] / c**2:.6g} "
              f"(c = 1: {summary['final_train_loss']:.6g}) | {s['final_extrap_loss'] / c**2:.6g} "
              f"(c = 1: {summary['final_extrap_loss']:.6g})")


if __name__ == "__main__":
    main()
