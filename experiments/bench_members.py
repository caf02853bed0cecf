"""Benchmark: the member-axis layers at M = 1 (a single model) and M = 8, 32 against a reference commit.

Run ``python experiments/bench_members.py [--reference 1b8ba9f]``. The reference
commit's ``kanode`` is extracted (``git archive``) into a temporary directory
as the package ``kanode_ref`` and imported next to this tree's ``kanode``, so
both are timed in ONE process (eager, float64, one thread), repeats in
random order, as CPU time of the process (``time.process_time``: on a shared
machine the time spent waiting for a core does not count); compare the
ratios, not the absolute times.

Rows (median seconds per call over the repeats, per member for M > 1; the
ratio of the medians and of the minima, new / reference):

* ``layer`` forward + backward (``y.sum().backward()``, input and parameter
  gradients) of KANLayer(2, 10) and KANLayer(10, 2) at batch 1, 35, 1000
  (model ``single``: a single layer; ``ens M``: ``EnsembleKANLayer`` of M
  stacked single layers, M = 1 the ensemble of one); ``adapted``: at batch 1
  after ``update_grid`` (non-uniform knots);
* ``step``: the default fit's training step, ``kanode.train.training_loss`` +
  ``backward()`` (KAN [2, 10, 2], grid 5, RK4 at the sampling interval, the
  default Lotka-Volterra data), and at M > 1 the same solve of an
  ``EnsembleVectorField`` of M copies by ``solve_ensemble`` + MSE + backward.

Writes ``experiments/results/bench_members.csv``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import random
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def reference_package(commit: str, into: Path) -> None:
    """``kanode`` at ``commit`` → ``into/kanode_ref`` with its imports renamed."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "kanode"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    (into / "kanode").rename(into / "kanode_ref")
    for path in (into / "kanode_ref").rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\bkanode(?=[. ])", "kanode_ref", text))


def timer(fn, inner: int) -> float:
    """CPU seconds of this process per call (one thread: waiting for a core on a
    shared machine does not count)."""
    t0 = time.process_time()
    for _ in range(inner):
        fn()
    return (time.process_time() - t0) / inner


def layer_case(pkg: str, n_in: int, n_out: int, batch: int, members: int, ensemble: bool, adapted: bool = False):
    nn_mod = importlib.import_module(f"{pkg}.nn")
    gen = torch.Generator().manual_seed(0)
    singles = [nn_mod.KANLayer(n_in, n_out, grid_size=5, generator=gen).double() for _ in range(members)]
    for layer in singles if adapted else ():  # non-uniform knots: the eager local-basis paths
        layer.update_grid(torch.randn(200, n_in, dtype=torch.float64, generator=gen) ** 3)
    if not ensemble:
        layer, x = singles[0], torch.randn(batch, n_in, dtype=torch.float64, generator=gen)
    else:
        layer = importlib.import_module(f"{pkg}.ensemble").EnsembleKANLayer(singles)
        x = torch.randn(members, batch, n_in, dtype=torch.float64, generator=gen)
    x.requires_grad_(True)

    def run():
        layer(x).sum().backward()
    return run


def step_case(pkg: str, members: int, ensemble: bool):
    config_mod = importlib.import_module(f"{pkg}.config")
    fit_mod = importlib.import_module(f"{pkg}.fit")
    train_mod = importlib.import_module(f"{pkg}.train")
    config = config_mod.FitConfig()
    torch.manual_seed(0)
    data, field = fit_mod.prepare(config)
    torch.set_num_threads(1)
    if not ensemble:
        def run():
            train_mod.training_loss(field, data, config).backward()
        return run
    ens = importlib.import_module(f"{pkg}.ensemble")
    efield = ens.EnsembleVectorField.from_fields([field] * members)
    options = train_mod.solver_options(config, data)
    y0, t, target, _ = train_mod.training_window(field, data, config)
    y0 = y0.unsqueeze(0).expand(members, *y0.shape).contiguous()

    def run():
        pred = ens.solve_ensemble(efield, y0, t, adjoint=False, **options)  # (n_t, M, batch, dim)
        ((pred - target.unsqueeze(1)) ** 2).mean().backward()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="1b8ba9f",
                        help="commit to compare against (default: the code before the member axis)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--members", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--csv", default=str(ROOT / "experiments" / "results" / "bench_members.csv"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    tmp = Path(tempfile.mkdtemp(prefix="kanode_ref_"))
    reference_package(args.reference, tmp)
    sys.path.insert(0, str(tmp))
    rows = []
    cases = []
    for members in args.members:
        for ensemble in (False, True) if members == 1 else (True,):
            label = "single" if not ensemble else f"ens {members}"
            for n_in, n_out in ((2, 10), (10, 2)):
                for batch in (1, 35, 1000):
                    inner = max(1, int(300 / (batch * members) ** 0.6))
                    cases.append((f"layer {n_in}->{n_out} b{batch}", label, members, inner,
                                  lambda pkg, a=n_in, b=n_out, c=batch, m=members, e=ensemble:
                                  layer_case(pkg, a, b, c, m, e)))
            for n_in, n_out in ((2, 10), (10, 2)):
                cases.append((f"layer {n_in}->{n_out} b1 adapted", label, members, max(1, int(300 / members ** 0.6)),
                              lambda pkg, a=n_in, b=n_out, m=members, e=ensemble: layer_case(pkg, a, b, 1, m, e, True)))
            cases.append(("step [2,10,2] rk4", label, members, 1,
                          lambda pkg, m=members, e=ensemble: step_case(pkg, m, e)))
    print(f"{'case':26s} {'model':>7s} {'ref s/member':>13s} {'new s/member':>13s} {'new/ref':>8s} {'min/min':>8s}")
    rng = random.Random(0)
    for name, label, members, inner, make in cases:
        runs = {pkg: make(pkg) for pkg in ("kanode_ref", "kanode")}
        for run in runs.values():  # warm up (and build a kernel)
            run(), run()
        times = {pkg: [] for pkg in runs}
        for _ in range(args.repeats):
            for pkg in rng.sample(list(runs), len(runs)):  # random order: no position bias
                times[pkg].append(timer(runs[pkg], inner))
        ref, new = (statistics.median(times[p]) / members for p in ("kanode_ref", "kanode"))
        best = min(times["kanode"]) / min(times["kanode_ref"])
        rows.append(dict(case=name, model=label, members=members, ref_s_per_member=ref, new_s_per_member=new,
                         ratio=new / ref, ratio_of_minima=best))
        print(f"{name:26s} {label:>7s} {ref:13.3e} {new:13.3e} {new / ref:8.3f} {best:8.3f}", flush=True)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
