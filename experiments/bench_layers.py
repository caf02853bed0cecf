"""Benchmark: kanode's KANLayer against the dense Cox–de Boor layer and Linear + SiLU.

Run ``python experiments/bench_layers.py`` (CPU, float32, torch's default
thread count; ``--threads 1`` on a shared machine, where two OpenMP threads
stall whenever another process takes a core). Prints a table and the issue's
target checks and writes ``experiments/results/bench_layers.csv``.

* kanode_auto is what a user gets (the fused C++ kernel on this CPU, column
  ``path``); kanode_dense and kanode_sparse are the PyTorch contractions used
  on CUDA, non-uniform grids and in double backward;
* time: forward + backward (``y.sum().backward()``, gradients for the input
  and every parameter), median over repeats in this one process;
* saved: bytes of the unique storages saved for backward that are *not*
  module state (parameters, buffers such as knots), counted with
  ``torch.autograd.graph.saved_tensors_hooks``, i.e. activation memory.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kanode.analysis.saved import saved_storages  # noqa: E402
from kanode.nn import KAN, MLP, KANLayer  # noqa: E402
from kanode.nn.dense import DenseKAN, DenseKANLayer  # noqa: E402

SIZES = [(2, 10, 1024), (28, 64, 1024), (64, 64, 4096)]
GRIDS = [5, 20, 100]


class LinearSiLU(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x):
        return nn.functional.silu(self.linear(x))


def interleaved_medians(cases: dict, min_rounds: int = 5, budget_s: float = 3.0, max_rounds: int = 100) -> dict:
    """Median seconds per case; cases run in turn, round after round.

    Interleaving makes the ratios between cases robust to slow drifts in the
    machine's load (other processes share the cores).
    """
    for fn in cases.values():  # warm-up
        fn()
    times = {name: [] for name in cases}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start < budget_s and rounds < max_rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(ts) for name, ts in times.items()}


def saved_bytes(model, x) -> int:
    """Bytes of the unique storages model(x) saves for backward, module state excluded."""
    return sum(dict(saved_storages(model, x)).values())


def fwd_bwd(model, x):
    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        model(x).sum().backward()

    return step


def layer_rows(quick: bool):
    rows = []
    for n_in, n_out, batch in SIZES:
        x = (torch.rand(batch, n_in) * 2 - 1).requires_grad_()
        for grid in GRIDS:
            models = {"linear_silu": LinearSiLU(n_in, n_out)}
            models.update({f"kanode_{m}": KANLayer(n_in, n_out, grid_size=grid, contraction=m)
                           for m in ("auto", "dense", "sparse")})
            if not (quick and grid == 100 and batch > 1024):
                models["dense_ref"] = DenseKANLayer(n_in, n_out, grid_size=grid)
            cases = {name: fwd_bwd(model, x) for name, model in models.items()}
            medians = interleaved_medians(cases, budget_s=3.0 if batch * n_in * grid < 2e7 else 0.0)
            for name, model in models.items():  # Linear + SiLU is re-measured with every grid
                path = model.contraction_for(batch, x) if isinstance(model, KANLayer) else ""
                rows.append(dict(n_in=n_in, n_out=n_out, batch=batch, grid_size=grid, impl=name, path=path,
                                 ms=1e3 * medians[name], saved_bytes=saved_bytes(model, x)))
            print(f"  done ({n_in}, {n_out}, {batch}) grid {grid}", file=sys.stderr)
    return rows


def latency_rows():
    rows = []
    models = {"kan_2_10_2": KAN([2, 10, 2]), "mlp_2_50_2": MLP([2, 50, 2]),
              "dense_kan_2_10_2": DenseKAN([2, 10, 2])}
    x = torch.randn(1, 2, requires_grad=True)

    def forward(model):
        def run():
            with torch.no_grad():
                model(x)

        return run

    cases = {f"{name}_forward": forward(model) for name, model in models.items()}
    cases.update({f"{name}_fwd_bwd": fwd_bwd(model, x) for name, model in models.items()})
    medians = interleaved_medians(cases, min_rounds=50, budget_s=3.0, max_rounds=2000)
    for name, model in models.items():
        for kind in ("forward", "fwd_bwd"):
            path = model.layers[0].contraction_for(1, x) if isinstance(model, KAN) else ""
            rows.append(dict(n_in=2, n_out=2, batch=1, grid_size=5, impl=f"{name}_{kind}", path=path,
                             ms=1e3 * medians[f"{name}_{kind}"],
                             saved_bytes=saved_bytes(model, x) if kind == "fwd_bwd" else ""))
    return rows


def check_targets(rows):
    """The issue's targets, as (description, value, limit, ok) lines."""
    get = {(r["n_in"], r["n_out"], r["batch"], r["grid_size"], r["impl"]): r for r in rows}
    lines = []
    limits = {5: 0.4, 20: 0.15, 100: 0.03}
    for n_in, n_out, batch in SIZES:
        size = (n_in, n_out, batch)
        for grid in GRIDS:
            lin = get[(*size, grid, "linear_silu")]["ms"]
            ours = get[(*size, grid, "kanode_auto")]
            ref = get.get((*size, grid, "dense_ref"))
            if ref:
                lines.append((f"{size} G={grid}: kanode/dense time", ours["ms"] / ref["ms"], limits[grid]))
            if grid <= 20:
                lines.append((f"{size} G={grid}: kanode/(Linear+SiLU) time", ours["ms"] / lin, 10.0))
        ratio = get[(*size, 100, "kanode_auto")]["ms"] / get[(*size, 5, "kanode_auto")]["ms"]
        lines.append((f"{size}: kanode time G=100 / G=5", ratio, 2.5))
        element = 4
        budget = 3 * batch * n_in * element
        saved = [get[(*size, g, "kanode_auto")]["saved_bytes"] for g in GRIDS]
        index = batch * n_in * 8  # the issue allows index tensors (int64 cells) on top of the budget
        lines.append((f"{size}: saved bytes (max over G) / (3·batch·in·4 + int64 cells)",
                      max(saved) / (budget + index), 1.0))
        lines.append((f"{size}: saved bytes spread over G (max/min)", max(saved) / min(saved), 1.0))
    kan = get[(2, 2, 1, 5, "kan_2_10_2_fwd_bwd")]["ms"]
    mlp = get[(2, 2, 1, 5, "mlp_2_50_2_fwd_bwd")]["ms"]
    lines.append(("batch 1: KAN[2,10,2] / MLP[2,50,2] fwd+bwd", kan / mlp, 4.0))
    return [(d, v, lim, v <= lim + 1e-12) for d, v, lim in lines]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "bench_layers.csv")
    parser.add_argument("--quick", action="store_true", help="skip the slowest dense-reference case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; "
          f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rows = layer_rows(args.quick) + latency_rows()
    dense = {(r["n_in"], r["n_out"], r["batch"], r["grid_size"]): r["ms"] for r in rows if r["impl"] == "dense_ref"}
    linear = {(r["n_in"], r["n_out"], r["batch"], r["grid_size"]): r["ms"] for r in rows if r["impl"] == "linear_silu"}
    for r in rows:
        d = dense.get((r["n_in"], r["n_out"], r["batch"], r["grid_size"]))
        r["vs_dense"] = f"{r['ms'] / d:.4f}" if d and r["impl"].startswith("kanode") else ""
        lin = linear.get((r["n_in"], r["n_out"], r["batch"], r["grid_size"]))
        r["vs_linear"] = f"{r['ms'] / lin:.2f}" if lin and r["batch"] > 1 else ""
    header = ["n_in", "n_out", "batch", "grid_size", "impl", "path", "ms", "saved_bytes", "vs_dense", "vs_linear"]
    print("saved_bytes: unique storages saved for backward, excluding parameters and buffers")
    print(" | ".join(f"{h:>12}" for h in header))
    for r in rows:
        cells = [f"{r[h]:.3f}" if h == "ms" else str(r[h]) for h in header]
        print(" | ".join(f"{c:>12}" for c in cells))
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    print("\ntargets:")
    for desc, value, limit, ok in check_targets(rows):
        print(f"  [{'ok' if ok else 'MISS'}] {desc}: {value:.3f} (limit {limit})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        for r in rows:
            writer.writerow({h: (f"{r[h]:.4f}" if h == "ms" else r[h]) for h in header})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
