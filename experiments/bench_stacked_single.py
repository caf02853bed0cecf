"""What a single fit pays for running as an ensemble of one (issue 22): in one process, the Adam
step of the default fit (``kanode.fit`` defaults: Lotka–Volterra, KAN [2, 10, 2], grid 5, RK4,
float64, one thread, no evaluation) through the one ``kanode.train.Trainer``, with the field
stacked (``EnsembleVectorField.from_fields([field])``, what ``kanode.fit`` runs) and unstacked
(``Trainer.single``: kanode.nn's single layers, trained in place). Steps alternate between
the two; prints the median step of each and their ratio.

    python experiments/bench_stacked_single.py [--steps 130]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kanode.config import FitConfig  # noqa: E402
from kanode.lifecycle import make_trainer, prepare  # noqa: E402
from kanode.train import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=130)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = FitConfig(optimizer="adam", steps=args.steps + 1, eval_every=10**6, checkpoint_every=10**6,
                       plots=False, threads=1)
    data, field = prepare(config)
    runs = {"stacked (M = 1)": iter(make_trainer([config]).steps()),
            "unstacked": iter(Trainer.single(field, data, config).steps())}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.steps):
        for name, steps in runs.items():
            start = time.perf_counter()
            next(steps)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t[10:]) for name, t in times.items()}
    for name, value in medians.items():
        print(f"{name:<16} {value * 1e3:7.1f} ms per Adam step")
    stacked, unstacked = medians.values()
    print(f"ratio stacked / unstacked: {stacked / unstacked:.2f}")


if __name__ == "__main__":
    main()
