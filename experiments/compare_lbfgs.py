"""kanode's batched L-BFGS (kanode.optim, what every fit now runs) against torch.optim.LBFGS.

Protocol: the default recipe of ``python -m kanode.fit`` (Lotka–Volterra, KAN
[2, 10, 2], 100 Adam steps then 200 L-BFGS steps with a strong-Wolfe line
search, RK4 at the sampling interval), seeds 0..7, each seed fitted twice in this process: once as
kanode fits it, once with the L-BFGS phase handed to ``torch.optim.LBFGS``
with the settings kanode used before (lr 1, max_iter 1, max_eval 25, history
50, tolerances 0). The Adam phase is identical (bitwise) in both. A trial
point that fails (non-finite loss or solver failure) ends a torch run as
diverged, as it did in kanode before; kanode's search steps back instead.

Usage: python experiments/compare_lbfgs.py [--seeds 0-7] [--out experiments/results]
Prints a table and writes lbfgs_compare.csv.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kanode.cli_args import parse_seeds  # noqa: E402
from kanode.config import FitConfig  # noqa: E402
from kanode.lifecycle import prepare  # noqa: E402
from kanode.optim._params import MemberParams  # noqa: E402
from kanode.train import Diverged, Trainer  # noqa: E402


class _TorchLBFGS:
    """torch.optim.LBFGS behind kanode.optim's ``step(closure, lr)``."""

    def __init__(self, params, config: FitConfig) -> None:
        self.optimizer = torch.optim.LBFGS(params, lr=config.lbfgs_lr, max_iter=config.lbfgs_max_iter,
                                           max_eval=config.lbfgs_max_iter * 25,
                                           history_size=config.lbfgs_history, line_search_fn="strong_wolfe",
                                           tolerance_grad=0.0, tolerance_change=0.0)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=False)

    def step(self, closure, lrs, active=None):  # noqa: ANN001, ANN201
        for group in self.optimizer.param_groups:
            group["lr"] = lrs[0]
        return self.optimizer.step(lambda: closure().sum())


class TorchLBFGSTrainer(Trainer):
    """The Trainer with its L-BFGS phase run by torch.optim.LBFGS (and a failing trial
    point raising Diverged, as kanode's L-BFGS closure did before kanode.optim)."""

    def _make_optimizer(self, phase: str):  # noqa: ANN202
        if phase == "lbfgs":
            optimizer = _TorchLBFGS(list(self.field.parameters()), self.config)
            optimizer.params = MemberParams(self.field.named_parameters())  # the trainer's gradient view
            return optimizer
        return super()._make_optimizer(phase)

    def _trial(self, counters):  # noqa: ANN001, ANN202
        losses = self._loss_and_grad(counters, full=True)
        if not torch.isfinite(losses).all():
            raise Diverged("non-finite loss at an L-BFGS trial point")
        return losses


def run(trainer_cls: type[Trainer], config: FitConfig) -> dict:
    data, field = prepare(config)
    trainer = trainer_cls.single(field, data, config)
    start, status, losses = time.perf_counter(), "finished", []
    try:
        for step in trainer.steps():
            losses += [r.train_loss for r in step.records.values()]
            if step.diverged:
                raise Diverged(step.diverged[0])
    except Diverged as exc:
        status = f"diverged at step {trainer.step + 1} ({exc})"
    final = trainer.evaluate()[0] if status == "finished" else None
    return {"status": status, "final_train_loss": final.train_loss if final else float("nan"),
            "final_extrap_loss": final.extrap_loss if final else float("nan"),
            "best_train_loss": min(losses) if losses else float("nan"),
            "wall_time_s": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-7")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = parser.parse_args()
    rows = []
    for seed in parse_seeds(args.seeds):
        config = FitConfig(seed=seed, plots=False)
        for name, cls in (("kanode.optim", Trainer), ("torch.optim.LBFGS", TorchLBFGSTrainer)):
            row = {"seed": seed, "lbfgs": name, **run(cls, config)}
            rows.append(row)
            print(f"seed {seed}  {name:<18} {row['status']:<9.9} final train {row['final_train_loss']:.3e}  "
                  f"extrap {row['final_extrap_loss']:.3e}  ({row['wall_time_s']} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "lbfgs_compare.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\nfinal training MSE over seeds: median [min, max]")
    for name in ("kanode.optim", "torch.optim.LBFGS"):
        values = [r["final_train_loss"] for r in rows if r["lbfgs"] == name and r["status"] == "finished"]
        if values:
            print(f"  {name:<18} {statistics.median(values):.3e} [{min(values):.3e}, {max(values):.3e}] "
                  f"({len(values)} finished)")
    pairs = [(a, b) for a in rows for b in rows if a["seed"] == b["seed"] and a["lbfgs"] == "kanode.optim"
             and b["lbfgs"] == "torch.optim.LBFGS"]
    wins = sum(a["final_train_loss"] < b["final_train_loss"] for a, b in pairs)
    print(f"  kanode.optim lower on {wins} of {len(pairs)} seeds")
    print(f"wrote {out / 'lbfgs_compare.csv'}")


if __name__ == "__main__":
    main()
