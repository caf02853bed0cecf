"""Held-out checks of ``kanode.symbolic``'s default recipe: textbook laws that are not among
the discovery suite's 24 systems (the suite was used to revise the recipe; these were not).

Each case is simulated here with scipy (DOP853, rtol 1e-10), one noise-free trajectory,
written as a CSV and given to ``python -m kanode.symbolic --data FILE`` with no other
option but ``--threads 1``; the table records the returned formula, whether its support is
the law's, and the wall and CPU seconds of the command.

    python experiments/discovery_heldout.py [--cases lv_other hopf ...] [--jobs 2]

Writes ``experiments/results/discovery_heldout/table.md`` (and each run's directory under
``runs/discovery_heldout``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "discovery_heldout"
RUNS = ROOT / "runs" / "discovery_heldout"

# name → (rhs, initial state, t_end, points, state names, the law's terms per equation)
CASES = {
    # the issue's own failures: Lotka-Volterra with other constants and range; a damped oscillator
    "lv_other": (lambda t, s: [1.84 * s[0] - 1.45 * s[0] * s[1], 1.62 * s[0] * s[1] - 3.0 * s[1]],
                 [8.3, 3.4], 10.0, 150, ("x", "y"), [{"x", "x*y"}, {"x*y", "y"}]),
    "damped_oscillator": (lambda t, s: [s[1], -4.5 * s[0] - 0.43 * s[1]], [2.0, 0.0], 10.0, 150, ("x", "y"),
                          [{"y"}, {"x", "y"}]),
    # the Hopf normal form: cubic cross terms
    "hopf": (lambda t, s: [0.5 * s[0] - 2.0 * s[1] - s[0] * (s[0] ** 2 + s[1] ** 2),
                           2.0 * s[0] + 0.5 * s[1] - s[1] * (s[0] ** 2 + s[1] ** 2)],
             [0.1, 0.0], 15.0, 200, ("x", "y"),
             [{"x", "y", "x**3", "x*y**2"}, {"x", "y", "y**3", "x**2*y"}]),
    # Michaelis-Menten uptake with a constant feed: a rational term
    "michaelis_menten": (lambda t, s: [0.8 - 2.0 * s[0] / (1.0 + s[0])], [3.0], 10.0, 120, ("x",),
                         [{"1", "x/(x + 1)"}]),
    # FitzHugh-Nagumo with other constants and a longer window than kanode's system
    "fitzhugh_nagumo_other": (lambda t, s: [s[0] - s[0] ** 3 / 3 - s[1] + 0.4, 0.1 * (s[0] + 0.7 - 0.8 * s[1])],
                              [-1.0, 1.0], 40.0, 300, ("v", "w"), [{"v", "v**3", "w", "1"}, {"v", "w", "1"}]),
}


def write_case(name: str, path: Path) -> None:
    rhs, y0, t_end, n, names, _ = CASES[name]
    t = np.linspace(0.0, t_end, n)
    sol = solve_ivp(rhs, (0.0, t_end), y0, t_eval=t, rtol=1e-10, atol=1e-12, method="DOP853")
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["traj", "t", *names])
        for i, ti in enumerate(t):
            out.writerow([0, f"{ti:.10g}", *(f"{v:.10g}" for v in sol.y[:, i])])


def support(formula: dict) -> list[set[str]]:
    """The terms of each equation of a formula.json (sympy's spelling, coefficients dropped)."""
    import sympy

    terms = []
    for expr in formula["rhs"].values():
        e = sympy.expand(sympy.sympify(expr))
        terms.append({str(term.as_coeff_Mul()[1]) for term in sympy.Add.make_args(e) if term != 0})
    return terms


def run(name: str) -> dict:
    RUNS.mkdir(parents=True, exist_ok=True)
    data, out = RUNS / f"{name}.csv", RUNS / name
    write_case(name, data)
    cmd = [sys.executable, "-m", "kanode.symbolic", "--data", str(data), "--out", str(out), "--threads", "1"]
    start = time.perf_counter()
    with (RUNS / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    row = {"case": name, "exit": code, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
           "formula": "", "exact": False}
    path = out / "formula.json"
    if code == 0 and path.exists():
        formula = json.loads(path.read_text())
        row["formula"] = " | ".join(f"{k}' = {v}" for k, v in formula["rhs"].items())
        row["exact"] = support(formula) == CASES[name][5]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, args.cases))
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["# Held-out checks of the default symbolic recipe", "",
             "`python experiments/discovery_heldout.py` (one noise-free trajectory each; `kanode.symbolic "
             "--data FILE --threads 1`; CPU: user + system seconds of that command's process).", "",
             "| case | exact support | formula | wall (s) | CPU (s) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {'yes' if r['exact'] else 'no'} | `{r['formula'] or 'exit ' + str(r['exit'])}` | "
                     f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} |")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
