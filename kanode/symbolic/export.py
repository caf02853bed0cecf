"""A symbolic vector field as formulas: sympy, LaTeX, numpy and ``systems.System``.

:func:`to_sympy` writes the whole field ``f(y) = out_scale · net(in_weight · y + in_bias)``
as one sympy expression per state derivative, in the data's own state
variables, units and time, at full precision (it equals the model's forward
pass to rounding). :func:`simplify` expands each expression, drops terms
whose contribution is small and rounds the constants:

* a term ``t_k`` of ``f_o = Σ_k t_k`` is dropped when its root-mean-square
  over the given states is below ``drop_threshold`` times the largest term's
  RMS in that equation (default 1 %);
* the remaining constants are rounded to ``digits`` significant digits
  (default 4).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field as dataclass_field, make_dataclass

import numpy as np
import sympy
import torch

import systems
from kanode.ode import VectorField

from .library import LIBRARY
from .symbolic_layer import FUNCTION_NAMES, PRUNED, SPLINE, SymbolicKANLayer

__all__ = ["Formula", "to_sympy", "simplify", "numpy_function", "to_system", "terms",
           "python_source", "latex", "NotSymbolicError"]


class NotSymbolicError(ValueError):
    """The field still has spline edges; only fully symbolic fields become formulas."""


@dataclass(frozen=True)
class Formula:
    """``rhs[k]`` is the sympy expression of d(state_names[k])/dt."""

    state_names: tuple[str, ...]
    rhs: tuple[sympy.Expr, ...]
    symbols: tuple[sympy.Symbol, ...] = dataclass_field(default=())

    def __post_init__(self) -> None:
        if not self.symbols:
            object.__setattr__(self, "symbols", tuple(sympy.Symbol(n) for n in self.state_names))

    def as_strings(self) -> dict[str, str]:
        """Each expression as the shortest text that parses back (``sympy.sympify``)."""
        return {name: sympy.sstr(expr, full_prec=False) for name, expr in zip(self.state_names, self.rhs)}


def _edge_expr(layer: SymbolicKANLayer, o: int, i: int, x: sympy.Expr) -> sympy.Expr:
    mode = int(layer.mode[o, i])
    if mode == PRUNED:
        return sympy.Integer(0)
    if mode == SPLINE:
        raise NotSymbolicError("the field still has spline edges; symbolify every edge before exporting")
    a, b, c, d = (sympy.Float(float(v), 17) for v in layer.sym_params[o, i])
    f = LIBRARY[FUNCTION_NAMES[int(layer.function[o, i])]].sympy
    return c * f(a * x + b) + d


@torch.no_grad()
def to_sympy(field: VectorField, state_names: Sequence[str]) -> Formula:
    """Full-precision formulas of a fully symbolic KAN field (no time input)."""
    if getattr(field, "time_input", False):
        raise NotSymbolicError("export of time-dependent fields is not supported")
    names = tuple(state_names)
    symbols = tuple(sympy.Symbol(n) for n in names)
    w = field.in_weight.double().tolist()
    bias = field.in_bias.double().tolist()
    scale = field.out_scale.double().tolist()
    nodes: list[sympy.Expr] = [sympy.Float(w[k], 17) * s + sympy.Float(bias[k], 17) for k, s in enumerate(symbols)]
    for layer in field.net.layers:
        if not isinstance(layer, SymbolicKANLayer):
            raise NotSymbolicError("the field's layers are not symbolic; run kanode.symbolic.symbolify first")
        nodes = [sympy.Float(float(layer.bias[o]), 17)
                 + sum((_edge_expr(layer, o, i, nodes[i]) for i in range(layer.in_features)), sympy.Integer(0))
                 for o in range(layer.out_features)]
    return Formula(names, tuple(sympy.Float(scale[k], 17) * nodes[k] for k in range(len(names))), symbols)


def terms(expr: sympy.Expr) -> list[tuple[float, sympy.Expr]]:
    """``(coefficient, factor)`` of each term of the expanded expr (factor 1 for a constant)."""
    out = []
    for term in sympy.Add.make_args(sympy.expand(expr)):
        coef, factor = term.as_coeff_Mul()
        out.append((float(coef), factor))
    return out


def _term_rms(factor: sympy.Expr, symbols, states: np.ndarray) -> float:
    fn = sympy.lambdify(symbols, factor, modules="numpy")
    with np.errstate(all="ignore"):
        values = np.broadcast_to(np.asarray(fn(*states.T), dtype=np.float64), states.shape[:1])
    return float(np.sqrt(np.mean(values**2)))


def simplify(formula: Formula, states: np.ndarray, drop_threshold: float = 0.01,
             digits: int = 4) -> Formula:
    """Expand, drop small terms and round (module docstring). states: (n, dim)."""
    rhs = []
    for expr in formula.rhs:
        parts = terms(expr)
        rms = [abs(c) * _term_rms(f, formula.symbols, states) for c, f in parts]
        top = max(rms) if rms else 0.0
        kept = [(c, f) for (c, f), r in zip(parts, rms) if top > 0 and r >= drop_threshold * top]
        rhs.append(sum((_rounded(c, digits) * f for c, f in kept), sympy.Integer(0)))
    return Formula(formula.state_names, tuple(rhs), formula.symbols)


def _rounded(value: float, digits: int) -> sympy.Expr:
    """``value`` to ``digits`` significant digits; exactly ±1 becomes the integer (prints ``x*y``)."""
    rounded = float(f"{value:.{digits}g}")
    return sympy.Integer(int(rounded)) if rounded in (1.0, -1.0) else sympy.Float(rounded, 15)


def _codes(formula: Formula) -> tuple[list[sympy.Symbol], list[str]]:
    from sympy.printing.numpy import NumPyPrinter

    dummies = [sympy.Symbol(f"s{k}") for k in range(len(formula.symbols))]
    printer = NumPyPrinter({"fully_qualified_modules": True})
    codes = [printer.doprint(expr.subs(dict(zip(formula.symbols, dummies)), simultaneous=True))
             for expr in formula.rhs]
    return dummies, codes


def python_source(formula: Formula) -> str:
    """A self-contained module with ``STATE_NAMES`` and ``rhs(t, y)`` (numpy, vectorised)."""
    dummies, codes = _codes(formula)
    lines = ['"""ODE discovered by kanode.symbolic: dy/dt = rhs(t, y), y of shape (..., dim)."""', "",
             "import numpy", "", f"STATE_NAMES = {tuple(formula.state_names)!r}", "", "",
             "def rhs(t, y):", '    """y: (..., dim) -> (..., dim)."""', "    y = numpy.asarray(y, dtype=float)"]
    for k, s in enumerate(dummies):
        lines.append(f"    {s} = y[..., {k}]")
    lines.append("    out = [")
    for code in codes:
        lines.append(f"        numpy.broadcast_to({code}, y.shape[:-1]),")
    lines += ["    ]", "    return numpy.stack(out, axis=-1)", ""]
    return "\n".join(lines)


def numpy_function(formula: Formula) -> Callable[[float, np.ndarray], np.ndarray]:
    """``rhs(t, y)``: numpy, y (..., dim) → (..., dim)."""
    namespace: dict = {}
    exec(compile(python_source(formula), "<kanode.symbolic formula>", "exec"), namespace)  # noqa: S102
    return namespace["rhs"]


_PLAIN_NAME = re.compile(r"[A-Za-z](_?[0-9]+)?")


def _latex_name(symbol: sympy.Symbol) -> str | None:
    """``\\mathrm{hare}`` for a name sympy would set as a product of letters (``hare``,
    ``lynx_count``); None for a letter, a letter with a numeric index or a Greek letter's name,
    which sympy sets itself (``x``, ``x_1``, ``\\alpha``)."""
    name = symbol.name
    if _PLAIN_NAME.fullmatch(name) or sympy.latex(symbol).startswith("\\"):
        return None
    return "\\mathrm{" + re.sub(r"([_&%$#{}])", r"\\\1", name) + "}"


def latex(formula: Formula) -> str:
    """One ``\\dot{name} = ...`` line per state (an ``align*`` body). Multi-letter names are
    upright words (``\\dot{\\mathrm{hare}}``) and their products get a thin space
    (``\\mathrm{hare}\\,\\mathrm{lynx}``)."""
    names = {s: n for s in formula.symbols if (n := _latex_name(s)) is not None}
    options = {"symbol_names": names, "mul_symbol": "\\,"} if names else {}
    lines = [f"\\dot{{{sympy.latex(s, **options)}}} &= {sympy.latex(e, **options)}"
             for s, e in zip(formula.symbols, formula.rhs)]
    return "\\begin{align*}\n" + " \\\\\n".join(lines) + "\n\\end{align*}\n"


def to_system(formula: Formula, y0: Sequence[float], t_span: tuple[float, float], n_t: int,
              name: str = "discovered") -> systems.System:
    """A ``systems.System`` whose ``rhs`` is the formula, so ``systems.simulate`` integrates it."""
    fn = numpy_function(formula)

    def rhs(self, t, y):
        return fn(t, y)

    cls = make_dataclass("DiscoveredSystem", [], bases=(systems.System,), frozen=True,
                         namespace={"rhs": rhs, "name": name, "state_names": tuple(formula.state_names),
                                    "initial_state": tuple(float(v) for v in y0),
                                    "t_span": (float(t_span[0]), float(t_span[1])), "n_t": int(n_t),
                                    "description": "; ".join(f"{s}' = {e}" for s, e in
                                                             zip(formula.state_names, formula.rhs)),
                                    "__doc__": "An ODE discovered by kanode.symbolic."})
    return cls()
