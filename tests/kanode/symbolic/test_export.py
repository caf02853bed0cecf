"""Export: sympy/numpy equal the symbolic KAN's forward; the systems.System simulates."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch

import systems
from kanode.nn import KAN
from kanode.ode import VectorField
from kanode.symbolic import (Formula, NotSymbolicError, as_mixed, latex, numpy_function, set_edge,
                             simplify, to_sympy, to_system)
from kanode.symbolic.export import terms

EDGES = {  # layer, out, in -> (function, (a, b, c, d))
    (0, 0, 0): ("x", (1.0, 0.0, 0.8, 0.1)),
    (0, 0, 1): ("sin", (1.3, 0.2, 0.5, -0.1)),
    (0, 1, 0): ("x^2", (1.0, 0.3, -0.6, 0.2)),
    (0, 1, 1): ("tanh", (0.9, -0.2, 1.1, 0.0)),
    (0, 2, 0): ("exp", (0.7, 0.0, 0.4, -0.3)),
    (0, 2, 1): ("gaussian", (1.2, 0.1, 0.9, 0.05)),
    (1, 0, 0): ("x^3", (1.0, -0.1, 0.5, 0.0)),
    (1, 0, 1): ("x", (1.0, 0.0, -1.2, 0.3)),
    (1, 0, 2): ("abs", (1.0, 0.4, 0.7, 0.0)),
    (1, 1, 0): ("x^2", (1.0, 0.2, 0.9, -0.1)),
    (1, 1, 1): ("x^4", (1.0, 0.0, 0.3, 0.0)),
    (1, 1, 2): ("x", (1.0, 0.0, 0.6, 0.0)),
}


def symbolic_field() -> VectorField:
    kan = as_mixed(KAN([2, 3, 2], grid_size=3).double())
    for (l, o, i), (name, params) in EDGES.items():
        set_edge(kan.layers[l], o, i, name, params)
    with torch.no_grad():
        kan.layers[1].bias.copy_(torch.tensor([0.05, -0.2], dtype=torch.float64))
    return VectorField(kan, torch.tensor([0.7, 1.9], dtype=torch.float64),
                       torch.tensor([-0.4, 0.3], dtype=torch.float64),
                       torch.tensor([2.5, 0.6], dtype=torch.float64))


def test_numpy_function_equals_the_symbolic_forward() -> None:
    field = symbolic_field()
    formula = to_sympy(field, ("x", "y"))
    rhs = numpy_function(formula)
    states = np.random.default_rng(0).uniform(-1.5, 1.5, size=(200, 2))
    with torch.no_grad():
        expected = field(torch.zeros(()), torch.as_tensor(states)).numpy()
    np.testing.assert_allclose(rhs(0.0, states), expected, rtol=0, atol=1e-10)
    # every expression parses back with the state names as symbols
    x, y = sympy.symbols("x y")
    for text in formula.as_strings().values():
        assert sympy.sympify(text).free_symbols <= {x, y}
    assert latex(formula).count("\\dot") == 2


def test_spline_edges_cannot_be_exported() -> None:
    field = symbolic_field()
    field.net.layers[1].mode[0, 0] = 1   # back to a spline edge
    with pytest.raises(NotSymbolicError, match="spline"):
        to_sympy(field, ("x", "y"))


def test_simplify_drops_small_terms_and_rounds() -> None:
    x, y = sympy.symbols("x y")
    formula = Formula(("x", "y"), (1.5000004 * x - 0.99999 * x * y + 1e-6 * y**2, x * y - 3.0 * y + 1e-5))
    states = np.random.default_rng(1).uniform(0.5, 3.0, size=(100, 2))
    out = simplify(formula, states, drop_threshold=0.01, digits=4)
    assert {str(f): c for c, f in terms(out.rhs[0])} == {"x": 1.5, "x*y": -1.0}   # rounded to 4 digits
    assert {str(f): c for c, f in terms(out.rhs[1])} == {"x*y": 1.0, "y": -3.0}
    assert "1.0*" not in str(out.as_strings())                           # unit coefficients print bare


def test_exported_system_simulates_like_the_true_one() -> None:
    x, y = sympy.symbols("x y")
    formula = Formula(("x", "y"), (1.5 * x - x * y, x * y - 3 * y))
    lv = systems.get("lotka_volterra")
    discovered = to_system(formula, lv.y0, lv.t_span, lv.n_t)
    assert isinstance(discovered, systems.System) and discovered.state_names == ("x", "y")
    ours = systems.simulate(discovered).y
    truth = systems.simulate(lv).y
    np.testing.assert_allclose(ours, truth, atol=1e-8)


def test_latex_sets_multi_letter_names_upright() -> None:
    """``hare`` is one upright word, not the product h·a·r·e; single letters, indexed letters
    and Greek names keep sympy's own form."""
    hare, lynx, x, x1, alpha = sympy.symbols("hare lynx x x_1 alpha")
    text = latex(Formula(("hare", "lynx"), (1.057 * hare - 0.04475 * hare * lynx, 0.028 * hare * lynx - lynx)))
    assert text == ("\\begin{align*}\n"
                    "\\dot{\\mathrm{hare}} &= - 0.04475\\,\\mathrm{hare}\\,\\mathrm{lynx} + 1.057\\,\\mathrm{hare} \\\\\n"
                    "\\dot{\\mathrm{lynx}} &= 0.028\\,\\mathrm{hare}\\,\\mathrm{lynx} - \\mathrm{lynx}\n"
                    "\\end{align*}\n")
    plain = latex(Formula(("x", "x_1", "alpha"), (x * x1, -alpha, x)))
    assert "\\dot{x} &= x x_{1}" in plain and "\\dot{\\alpha} &= x" in plain and "mathrm" not in plain
    assert "\\dot{\\mathrm{lynx\\_count}}" in latex(Formula(("lynx_count",), (-sympy.Symbol("lynx_count"),)))
