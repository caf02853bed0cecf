"""Equations from data on Lotka–Volterra: kanode.symbolic against SINDy.

For each observation-noise level and data seed, both methods see the same
training window (t ≤ 3.4, ``--n-traj`` trajectories around y0 = (1, 1)):

* kanode: ``kanode.symbolic.discover`` with its defaults (the recipe of
  ``python -m kanode.symbolic``);
* SINDy (pysindy, optional: ``pip install -e '.[experiments]'``): STLSQ
  (threshold ``--sindy-threshold``), polynomial library of degree 2,
  finite-difference derivatives.

Scored against ẋ = 1.5x − xy, ẏ = xy − 3y: *support correct* when the
terms are exactly {x, xy} and {y, xy}; *worst error* the largest relative
error of the four coefficients (a missing term counts 100 %).

    python experiments/discovery.py                         # every level and seed
    python experiments/discovery.py --noise 0.05 --seeds 0 1 2 3 4 --methods kanode

Writes ``experiments/results/discovery/results.csv`` (appends, one row per
method, noise, seed) and ``table.md`` (from every row in the CSV).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

TRUE = {"x": {"x": 1.5, "x*y": -1.0}, "y": {"y": -3.0, "x*y": 1.0}}
RESULTS = Path(__file__).parent / "results" / "discovery"
COLUMNS = ("method", "noise", "n_traj", "seed", "support_correct", "worst_error", "terms", "seconds")


def score(found: dict[str, dict[str, float]]) -> tuple[bool, float]:
    """(exact support, worst relative coefficient error) against TRUE."""
    correct = all(set(found.get(k, {})) == set(v) for k, v in TRUE.items())
    errors = [abs(found.get(k, {}).get(term, 0.0) - value) / abs(value)
              for k, terms in TRUE.items() for term, value in terms.items()]
    return correct, max(errors)


def kanode_terms(data, config) -> dict[str, dict[str, float]]:
    from kanode.symbolic import discover
    from kanode.symbolic.export import terms

    discovery = discover(data, config, progress=lambda line: print(f"  kanode {line}", flush=True))
    out = {}
    for name, expr in zip(discovery.formula.state_names, discovery.formula.rhs):
        out[name] = {str(factor): coef for coef, factor in terms(expr) if coef != 0}
    return out


def sindy_terms(data, threshold: float) -> dict[str, dict[str, float]]:
    import pysindy as ps

    t = data.t_train.double().numpy()
    trajectories = [y for y in data.y_train.double().numpy()]
    model = ps.SINDy(optimizer=ps.STLSQ(threshold=threshold),
                     feature_library=ps.PolynomialLibrary(degree=2),
                     differentiation_method=ps.FiniteDifference())
    model.fit(trajectories, t=t, feature_names=["x", "y"])
    names = [n.replace(" ", "*").replace("^2", "**2") for n in model.get_feature_names()]
    names = ["1" if n == "1" else n for n in names]
    coefs = model.coefficients()
    return {state: {n: float(c) for n, c in zip(names, row) if c != 0} for state, row in zip("xy", coefs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.01, 0.05, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--n-traj", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=["sindy", "kanode"], choices=["sindy", "kanode"])
    parser.add_argument("--sindy-threshold", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from kanode.config import FitConfig
    from kanode.data import load_data

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "results.csv"
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(COLUMNS)
        for noise in args.noise:
            for seed in args.seeds:
                config = FitConfig(noise=noise, data_seed=seed, n_traj=args.n_traj)
                data = load_data(config).to(torch.float64, "cpu")
                for method in args.methods:
                    start = time.perf_counter()
                    try:
                        found = (sindy_terms(data, args.sindy_threshold) if method == "sindy"
                                 else kanode_terms(data, config))
                    except Exception as exc:  # noqa: BLE001 - a failed discovery is a result
                        print(f"{method} noise={noise} seed={seed}: failed ({exc})", file=sys.stderr)
                        found = {}
                    correct, worst = score(found)
                    row = (method, noise, args.n_traj, seed, correct, f"{worst:.5f}",
                           "; ".join(f"{k}: {v}" for k, v in found.items()), f"{time.perf_counter() - start:.1f}")
                    writer.writerow(row)
                    fh.flush()
                    print(" | ".join(str(v) for v in row), flush=True)
    write_table(path, RESULTS / "table.md")
    return 0


def write_table(csv_path: Path, out: Path) -> None:
    """Rate of correct support and median worst coefficient error per method and noise."""
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    groups: dict[tuple[str, float], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["method"], float(row["noise"])), []).append(row)
    lines = ["| method | noise | runs | correct support | median worst coefficient error |",
             "|---|---|---|---|---|"]
    for (method, noise), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        correct = sum(r["support_correct"] == "True" for r in group)
        median = float(np.median([float(r["worst_error"]) for r in group]))
        lines.append(f"| {method} | {noise:g} | {len(group)} | {correct}/{len(group)} | {100 * median:.2f} % |")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
