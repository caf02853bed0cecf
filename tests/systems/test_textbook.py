"""The textbook systems: right-hand sides against formulas written differently here, closed-form
solutions, the stated equations (through sympy) against rhs, and the metadata of the benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from sympy.parsing.sympy_parser import parse_expr

import systems
from systems.textbook import TextbookSystem

TEXTBOOK = systems.textbook.names()


def _sin(angle: np.ndarray) -> np.ndarray:
    return np.imag(np.exp(1j * angle))


def _cos(angle: np.ndarray) -> np.ndarray:
    return np.real(np.exp(1j * angle))


# Each right-hand side once more, rearranged (expanded, factored, via identities such as
# x/(1+x) = 1 − 1/(1+x) or sin θ = Im e^{iθ}); p is the system's parameter dict.
INDEPENDENT = {
    "damped_harmonic": lambda p, x, v: [v, -(p["omega"] ** 2 * x + 2 * p["zeta"] * p["omega"] * v)],
    "van_der_pol": lambda p, x, v: [v, -x + p["mu"] * v - p["mu"] * x * x * v],
    "duffing": lambda p, x, v: [v, -(p["alpha"] + p["beta"] * x * x) * x - p["delta"] * v],
    "double_well": lambda p, x, v: [v, -(-p["a"] * x + p["b"] * x**3) - p["delta"] * v],  # −V'(x)
    "pendulum": lambda p, th, om: [om, -p["g_over_l"] * _sin(th)],
    "damped_pendulum": lambda p, th, om: [om, -p["g_over_l"] * _sin(th) - p["b"] * om],
    "torque_pendulum": lambda p, th, om: [om, -_sin(th) + p["torque"] - p["alpha"] * om],
    "nonuniform_oscillator": lambda p, th: [p["omega"] - p["a"] * _sin(th)],
    "overdamped_hoop": lambda p, ph: [0.5 * p["gamma"] * _sin(2 * ph) - _sin(ph)],
    "glider": lambda p, v, th: [-(_sin(th) + p["drag"] * v * v), (v * v - _cos(th)) / v],
    "logistic": lambda p, x: [p["r"] * x - p["r"] * x * x / p["K"]],
    "bistable": lambda p, x: [x * (p["r"] - p["c"] * x * x)],
    "spruce_budworm": lambda p, x: [p["r"] * x - p["r"] * x * x / p["k"] - 1 + 1 / (1 + x * x)],
    "gompertz": lambda p, x: [-p["a"] * x * np.log(x / p["K"])],
    "competition": lambda p, x, y: [p["a"] * x - x * x - p["b"] * x * y, p["c"] * y - p["d"] * x * y - y * y],
    "holling_predator_prey": lambda p, x, y: [
        p["r"] * x - p["r"] * x * x / p["K"] - p["a"] * y * (1 - 1 / (1 + x)),
        p["e"] * p["a"] * y * (1 - 1 / (1 + x)) - p["m"] * y],
    "toggle_switch": lambda p, u, v: [p["a"] * (1 + v * v) ** -1 - u, p["a"] * (1 + u * u) ** -1 - v],
    "sir": lambda p, s, i, r: [p["mu"] * (1 - s) - p["beta"] * s * i, (p["beta"] * s - p["gamma"] - p["mu"]) * i,
                               p["gamma"] * i - p["mu"] * r],
    "brusselator": lambda p, x, y: [p["a"] - p["b"] * x - x + x * x * y, x * (p["b"] - x * y)],
    "selkov": lambda p, x, y: [-x + y * (p["a"] + x * x), p["b"] - y * (p["a"] + x * x)],
    "lengyel_epstein": lambda p, x, y: [p["a"] - x - 4 * x * y / (1 + x * x),
                                        p["b"] * x * (1 + x * x - y) / (1 + x * x)],
    "thermal_runaway": lambda p, th: [p["delta"] * np.exp(th) - th],
    "lorenz": lambda p, x, y, z: [p["sigma"] * y - p["sigma"] * x, p["rho"] * x - x * z - y,
                                  x * y - p["beta"] * z],
    "rossler": lambda p, x, y, z: [-(y + z), x + p["a"] * y, p["b"] + x * z - p["c"] * z],
}


def visited_states(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n states (n, dim) drawn uniformly from the box both starts' trajectories span."""
    system = systems.get(name)
    y = systems.simulate(system, y0=np.stack([system.y0, system.y0_test])).y.reshape(-1, system.dim)
    return rng.uniform(y.min(axis=0), y.max(axis=0), (n, system.dim))


def test_every_textbook_system_has_an_independent_formula():
    assert sorted(INDEPENDENT) == TEXTBOOK
    assert len(TEXTBOOK) >= 20
    assert {systems.get(n).dim for n in TEXTBOOK} == {1, 2, 3}


@pytest.mark.parametrize("name", TEXTBOOK)
def test_rhs_matches_independent_formula(name):
    system = systems.get(name)
    y = visited_states(name, 50, np.random.default_rng(3))                    # (50, dim)
    expected = np.stack(INDEPENDENT[name](system.params, *y.T), axis=-1)      # (50, dim)
    np.testing.assert_allclose(system.rhs(0.0, y), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", TEXTBOOK)
def test_equation_strings_evaluate_to_rhs(name):
    system = systems.get(name)
    symbols = [sympy.Symbol(s) for s in system.state_names]
    local = dict(zip(system.state_names, symbols))
    exprs = [parse_expr(text, local_dict=local) for text in system.equations()]
    assert len(exprs) == system.dim
    assert all(expr.free_symbols <= set(symbols) for expr in exprs)
    y = visited_states(name, 50, np.random.default_rng(4))
    values = np.stack([np.broadcast_to(np.asarray(sympy.lambdify(symbols, e, "numpy")(*y.T), dtype=float), (50,))
                       for e in exprs], axis=-1)
    np.testing.assert_allclose(values, system.rhs(0.0, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", TEXTBOOK)
def test_benchmark_metadata(name):
    system = systems.get(name)
    assert isinstance(system, TextbookSystem)
    assert system.y0_test.shape == system.y0.shape and not np.allclose(system.y0_test, system.y0)
    assert system.t_span[1] - system.t_span[0] > 2.0 and system.n_t >= 81 and system.source
    traj = systems.simulate(system, y0=np.stack([system.y0, system.y0_test]))
    assert np.all(np.isfinite(traj.y))


def test_damped_harmonic_closed_form():
    osc = systems.get("damped_harmonic")
    t = osc.default_t()
    (x0, v0), decay = osc.test_state, osc.zeta * osc.omega
    wd = osc.omega * np.sqrt(1 - osc.zeta**2)
    x = np.exp(-decay * t) * (x0 * np.cos(wd * t) + (v0 + decay * x0) / wd * np.sin(wd * t))
    np.testing.assert_allclose(systems.simulate(osc, y0=osc.y0_test).y[0, :, 0], x, atol=1e-8)


@pytest.mark.parametrize("name, solution", [
    ("logistic", lambda s, x0, t: s.K / (1 + (s.K / x0 - 1) * np.exp(-s.r * t))),
    ("gompertz", lambda s, x0, t: s.K * np.exp(np.log(x0 / s.K) * np.exp(-s.a * t))),
    ("bistable", lambda s, x0, t: np.sign(x0) * np.sqrt(
        (s.r / s.c) / (1 + (s.r / (s.c * x0**2) - 1) * np.exp(-2 * s.r * t)))),
])
def test_one_dimensional_closed_forms(name, solution):
    system = systems.get(name)
    t = system.default_t()
    for x0 in (system.y0[0], system.y0_test[0]):
        simulated = systems.simulate(system, y0=np.array([x0])).y[0, :, 0]
        np.testing.assert_allclose(simulated, solution(system, x0, t), rtol=1e-7, atol=1e-9)


def test_nonuniform_oscillator_period():
    osc = systems.get("nonuniform_oscillator")
    period = 2 * np.pi / np.sqrt(osc.omega**2 - osc.a**2)    # Strogatz (4.3.2)
    theta = systems.simulate(osc, t=np.array([0.0, period])).y[0, :, 0]
    assert theta[1] - theta[0] == pytest.approx(2 * np.pi, abs=1e-7)


def test_sir_population_relaxes_to_one():
    sir = systems.get("sir")
    t = sir.default_t()
    for y0 in (sir.y0, sir.y0_test):
        total = systems.simulate(sir, y0=y0).y[0].sum(axis=-1)      # N' = μ(1 − N)
        np.testing.assert_allclose(total, 1 - (1 - y0.sum()) * np.exp(-sir.mu * t), atol=1e-8)
        assert abs(y0.sum() - 1) > 0.1


def test_overdamped_hoop_settles_off_the_bottom():
    hoop = systems.get("overdamped_hoop")
    end = systems.simulate(hoop, y0=np.stack([hoop.y0, hoop.y0_test])).y[:, -1, 0]
    np.testing.assert_allclose(end, [np.arccos(1 / hoop.gamma), -np.arccos(1 / hoop.gamma)], atol=1e-6)


def test_bistable_starts_end_in_different_states():
    for name in ("spruce_budworm", "toggle_switch", "competition", "bistable"):
        system = systems.get(name)
        ends = systems.simulate(system, y0=np.stack([system.y0, system.y0_test])).y[:, -1]
        assert np.max(np.abs(ends[0] - ends[1])) > 1.0, name


def test_test_state_length_is_checked():
    from dataclasses import dataclass

    with pytest.raises(ValueError, match="test_state has 1 values but state_names has 2"):
        @dataclass(frozen=True)
        class Broken(TextbookSystem):
            name = "broken"
            state_names = ("x", "y")
            initial_state = (1.0, 1.0)
            test_state = (1.0,)
            t_span, n_t = (0.0, 1.0), 11

            def rhs(self, t, y):
                return -y

            def equations(self):
                return "-x", "-y"
