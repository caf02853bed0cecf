"""Polish: the formula's coefficients refitted through the ODE loss, small terms dropped."""

from __future__ import annotations

import sympy
import torch

from kanode.config import FitConfig
from kanode.data import load_data
from kanode.symbolic import Formula, polish
from kanode.symbolic.export import terms


def test_polish_recovers_lotka_volterra_from_a_perturbed_formula() -> None:
    config = FitConfig(train_fraction=0.15)
    data = load_data(config).to(torch.float64, "cpu")
    x, y = sympy.symbols("x y")
    start = Formula(("x", "y"), (1.3 * x - 0.9 * x * y + 0.002 * y**2 + 0.001,
                                 1.1 * x * y - 2.7 * y + 0.003 * x))
    states = data.y_train.reshape(-1, 2).numpy()
    found, rounds = polish(start, data, states, drop_threshold=0.01, digits=6)
    coefs = [{str(f): c for c, f in terms(e)} for e in found.rhs]
    assert set(coefs[0]) == {"x", "x*y"} and set(coefs[1]) == {"y", "x*y"}, coefs
    assert abs(coefs[0]["x"] - 1.5) < 1e-3 and abs(coefs[0]["x*y"] + 1.0) < 1e-3
    assert abs(coefs[1]["y"] + 3.0) < 1e-3 and abs(coefs[1]["x*y"] - 1.0) < 1e-3
    assert rounds >= 2
