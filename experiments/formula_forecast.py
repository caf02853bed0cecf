"""Score a ``kanode.symbolic`` formula on observations it was not fitted to.

Integrates the formula of ``DIR/formula.json`` from its fitted initial state (``initial_states``,
trajectory 0) over every time of a one-trajectory CSV (the ``systems`` format: ``traj,t,state...``)
and prints the MSE of the points after ``--after`` (the forecast) and up to it (the fit)::

    python -m kanode.symbolic --data hare_lynx_1900_1915.csv --out DIR
    python experiments/formula_forecast.py DIR/formula.json hare_lynx.csv --after 1915
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import sympy
from scipy.integrate import solve_ivp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("formula", help="formula.json written by python -m kanode.symbolic")
    parser.add_argument("csv", help="observations: traj,t,<state>... (one trajectory)")
    parser.add_argument("--after", type=float, required=True, help="points after this time are the forecast")
    args = parser.parse_args(argv)
    formula = json.loads(open(args.formula).read())
    names = formula["state_names"]
    symbols = [sympy.Symbol(n) for n in names]
    rhs = sympy.lambdify(symbols, [sympy.sympify(formula["rhs"][n], locals=dict(zip(names, symbols)))
                                   for n in names], modules="numpy")
    table = np.genfromtxt(args.csv, delimiter=",", names=True)
    t = np.asarray(table["t"], dtype=float)
    y = np.stack([np.asarray(table[n], dtype=float) for n in names], axis=1)     # (n_t, dim)
    start = formula["initial_states"]
    y0 = np.asarray(start["states"][0], dtype=float)
    sol = solve_ivp(lambda _, s: np.asarray(rhs(*s), dtype=float), (start["t0"], t[-1]), y0, t_eval=t,
                    rtol=1e-10, atol=1e-12)
    if not sol.success or sol.y.shape[1] != t.size:
        print(f"the formula's trajectory fails before t = {t[-1]:g}: {sol.message}")
        return 1
    err = (sol.y.T - y) ** 2
    later = t > args.after
    equations = "; ".join(f"{n}' = {formula['rhs'][n]}" for n in names)
    print(f"formula: {equations}")
    print(f"initial state at t = {start['t0']:g}: {np.round(y0, 3).tolist()}")
    print(f"MSE fit (t <= {args.after:g}, {int((~later).sum())} points): {err[~later].mean():.4g}")
    print(f"MSE forecast (t > {args.after:g}, {int(later.sum())} points): {err[later].mean():.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
