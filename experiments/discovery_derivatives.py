"""Does the KAN contribute derivative estimates? Smoothed finite differences against a fitted KAN-ODE field.

For each textbook system and noise level (the discovery suite's data: one trajectory from the
canonical start, ``experiments/discovery_suite.make_problem``), the two derivative sources of
``kanode.symbolic.sparse_recipe``:

* ``smoothed``: local cubics, the window chosen by leave-one-out error;
* ``kan``: a KAN-ODE (the recipe's ``[dim, 4, dim]`` spline KAN, 60 Adam + 100 L-BFGS steps,
  :func:`kanode.symbolic.sparse_recipe.fit_kan_rates`) evaluated at the observed states;

are scored by the relative RMS error of the rates against the true field at the true states,
and by the sparse start they lead to (exact support or not), with the seconds each took.

    python experiments/discovery_derivatives.py --systems van_der_pol pendulum --noise 0 0.05

Writes ``results.csv`` and ``table.md`` into ``--results`` (default
experiments/results/discovery_derivatives).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import discovery_suite as suite  # noqa: E402 - the experiments folder is not a package

import systems  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "discovery_derivatives"
COLUMNS = ("system", "noise", "source", "rate_error", "exact_support", "terms", "seconds")


def run(name: str, noise: float, source: str) -> dict[str, object]:
    import torch

    from kanode.config import FitConfig
    from kanode.data import FitData
    from kanode.symbolic import SymbolicConfig, smoothed_derivatives, sparse_start
    from kanode.symbolic.sparse_recipe import fit_kan_rates

    torch.set_num_threads(1)
    problem = suite.make_problem(systems.get(name), noise, seed=0)
    n_t, dim = problem.y_train.shape
    data = FitData(t=torch.tensor(problem.t), y=torch.tensor(problem.y_train)[None],
                   y_held_out=torch.zeros((0, n_t, dim), dtype=torch.float64), n_train=n_t,
                   system=problem.system, state_names=problem.names)
    config = FitConfig(system=name, n_traj=1, n_test_traj=0, train_fraction=1.0, threads=1)
    start = time.perf_counter()
    if source == "kan":
        derivatives = fit_kan_rates(data, config, SymbolicConfig())
    else:
        derivatives = smoothed_derivatives(problem.t, problem.y_train[None])
    found = sparse_start(data, derivatives)
    seconds = time.perf_counter() - start
    true = problem.system.rhs(0.0, problem.clean_train)                     # (n_t, dim)
    error = float(np.sqrt(np.mean((derivatives.rates[0] - true) ** 2) / np.mean(true**2)))
    formula = found.model.formula(found.factors, problem.names).as_strings()
    exact, _ = suite.scoring.support_and_error(formula, problem.system.equations(), problem.names)
    return {"system": name, "noise": noise, "source": source, "rate_error": f"{error:.3g}",
            "exact_support": exact, "terms": found.model.n_terms, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["van_der_pol", "damped_pendulum", "brusselator",
                                                         "holling_predator_prey", "duffing"],
                        choices=systems.textbook.names(), metavar="NAME")
    parser.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.05])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    rows = []
    for noise in args.noise:
        for name in args.systems:
            for source in ("smoothed", "kan"):
                row = run(name, noise, source)
                print(row, flush=True)
                rows.append(row)
    with (args.results / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Derivative estimates: smoothed differences against a fitted KAN-ODE", "",
             "Written by `experiments/discovery_derivatives.py`. rate error: relative RMS error of the "
             "derivative estimates against the true field at the true states; support: the sparse start's "
             "(before the polish); seconds: derivatives + sparse start, one thread, shared machine.", "",
             "| system | noise | smoothed: rate error / support / s | KAN: rate error / support / s |",
             "|---|---|---|---|"]
    for noise in args.noise:
        for name in args.systems:
            cells = []
            for source in ("smoothed", "kan"):
                r = next(r for r in rows if r["system"] == name and r["noise"] == noise and r["source"] == source)
                cells.append(f"{r['rate_error']} / {'exact' if r['exact_support'] else 'wrong'} / {r['seconds']}")
            lines.append(f"| {name} | {noise:g} | " + " | ".join(cells) + " |")
    (args.results / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
