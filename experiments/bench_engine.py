"""The training step's cost: kanode eager, fused, torch.compile'd, and a JAX reference, in one run.

Default protocol (``python -m kanode.fit``'s defaults): Lotka–Volterra, the 35 training
points, RK4 at the sampling interval with direct backpropagation, KAN [2, 10, 2] grid 5,
float64, one thread. For M ∈ --members, an Adam step and an L-BFGS step (kanode's default
``lbfgs_max_iter = 1``: one line search) of M members (``kanode.train.Trainer``; M = 1 is the
single fit's ensemble of one) are timed through the trainer's own ``steps()`` (loss, gradient,
optimiser, bookkeeping; no evaluations) on three engines: eager (``compile = "off"``), the
fused window kernel (``"auto"``: kanode.window, one C++ call per window, built once per machine)
and the ``torch.compile``'d solver step (``"on"`` with the fused kernel switched off); the
compile time of the compiled step is reported too. The JAX reference (experiments/jax_reference.py:
dense Cox–de Boor KAN, RK4 in ``lax.scan``, optax Adam / L-BFGS, ``jax.jit``) runs in the
interpreter given by ``--jax-python`` (a venv with jax and optax; skipped when absent).

Wall-clock medians; on a shared machine compare the rows of one run, not runs.

Usage: python experiments/bench_engine.py [--members 1 32 256] [--repeats 20] [--engines ...]
           [--jax-python .venv-jax/bin/python] [--out experiments/results]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kanode.compiled import compile_report  # noqa: E402
from kanode.config import FitConfig  # noqa: E402
from kanode.lifecycle import make_trainer, prepare  # noqa: E402

QUIET = dict(eval_every=10**6, checkpoint_every=10**6, plots=False, threads=1)


# engine → (compile mode, fused kernel on)
ENGINES = {"kanode eager": ("off", False), "kanode fused": ("auto", True), "kanode torch.compile": ("on", False)}


def step_times(n_members: int, engine: str, optimizer: str, repeats: int) -> tuple[float, float]:
    """(median seconds per optimiser step, seconds of the first step) of M members."""
    steps = repeats + 3
    mode, fused = ENGINES[engine]
    settings = dict(QUIET, compile=mode, optimizer=optimizer, steps=steps, lbfgs_steps=steps)
    trainer = make_trainer([FitConfig(seed=m, **settings) for m in range(n_members)])
    if trainer.compiled is not None:
        trainer.compiled.fused = fused
    times = []
    iterator = iter(trainer.steps())
    for _ in range(steps):
        start = time.perf_counter()
        next(iterator)
        times.append(time.perf_counter() - start)
    route = trainer.compiled.last_route if trainer.compiled is not None else None
    assert route == {"kanode eager": None, "kanode fused": "fused", "kanode torch.compile": "compiled"}[engine], \
        f"{engine} ran the {route} route"
    return statistics.median(times[3:]), times[0]


def jax_rows(python: str, members: list[int], repeats: int) -> list[dict[str, float]]:
    data, _ = prepare(FitConfig())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lv.npz"
        np.savez(path, t=data.t_train.numpy(), y=data.y_train.transpose(0, 1).numpy(), repeats=repeats)
        env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
        out = subprocess.run([python, str(ROOT / "experiments" / "jax_reference.py"), str(path),
                              *map(str, members)], capture_output=True, text=True, env=env, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--jax-python", default=str(ROOT / ".venv-jax" / "bin" / "python"))
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for n_members in args.members:
        before = compile_report()["compile_s"]
        for engine in args.engines:
            adam, first = step_times(n_members, engine, "adam", args.repeats)
            lbfgs, _ = step_times(n_members, engine, "lbfgs", args.repeats)
            compile_s = compile_report()["compile_s"] - before if engine == "kanode torch.compile" else 0.0
            rows.append(dict(engine=engine, M=n_members, adam_step_ms=1e3 * adam, lbfgs_step_ms=1e3 * lbfgs,
                             compile_s=compile_s))
            print(rows[-1], flush=True)
    if Path(args.jax_python).exists():
        for result in jax_rows(args.jax_python, args.members, args.repeats):
            rows.append(dict(engine="jax reference", M=result["M"], adam_step_ms=1e3 * result["adam_step_s"],
                             lbfgs_step_ms=1e3 * result["lbfgs_step_s"], compile_s=result["compile_s"]))
            print(rows[-1], flush=True)
    else:
        print(f"(no JAX interpreter at {args.jax_python}: the reference rows are left out)")
    jax_adam = {r["M"]: r["adam_step_ms"] for r in rows if r["engine"] == "jax reference"}
    print(f"\n{'engine':<20} {'M':>4} {'Adam ms':>9} {'/member':>8} {'L-BFGS ms':>10} {'compile s':>10} "
          f"{'Adam vs JAX':>12}")
    for r in rows:
        ratio = f"{r['adam_step_ms'] / jax_adam[r['M']]:.1f}x" if r["M"] in jax_adam else "n/a"
        print(f"{r['engine']:<20} {r['M']:>4} {r['adam_step_ms']:>9.2f} {r['adam_step_ms'] / r['M']:>8.3f} "
              f"{r['lbfgs_step_ms']:>10.2f} {r['compile_s']:>10.1f} {ratio:>12}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench_engine.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {out / 'bench_engine.csv'}")


if __name__ == "__main__":
    main()
