"""Every built-in system: canonical values, Jacobian, vectorisation, invariants, registry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import systems

NAMES = ["lotka_volterra", "fitzhugh_nagumo", "rigid_body", "pleiades", "spiral"]
TEXTBOOK = systems.textbook.names()
ALL = NAMES + TEXTBOOK

CANONICAL = {
    "lotka_volterra": ({"alpha": 1.5, "beta": 1.0, "gamma": 3.0, "delta": 1.0},
                       [1.0, 1.0], np.arange(141) * 0.1),
    "fitzhugh_nagumo": ({"a": 0.7, "b": 0.8, "tau": 12.5, "I": 0.5},
                        [1.0, 1.0], np.linspace(0.0, 80.0, 401)),
    "rigid_body": ({"I1": -2.0, "I2": 1.25, "I3": -0.5}, [1.0, 0.0, 0.9],
                   np.linspace(0.0, 20.0, 201)),
    "pleiades": ({"masses": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)},
                 [3, 3, -1, -3, 2, -2, 2, 3, -3, 2, 0, 0, -4, 4,
                  0, 0, 0, 0, 0, 1.75, -1.5, 0, 0, 0, -1.25, 1, 0, 0],
                 np.linspace(0.0, 3.0, 301)),
    "spiral": ({"A": ((-0.1, 2.0), (-2.0, -0.1))}, [2.0, 0.0], np.linspace(0.0, 25.0, 1000)),
}

INVARIANTS = [("lotka_volterra", "V"), ("rigid_body", "C12"), ("rigid_body", "C13"),
              ("pleiades", "energy"), ("pleiades", "momentum_x"), ("pleiades", "momentum_y"),
              ("pleiades", "angular_momentum"), ("pendulum", "energy")]


def random_states(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """States of shape ``shape + (dim,)`` inside each system's domain."""
    system = systems.get(name)
    if name == "lotka_volterra":
        return rng.uniform(0.1, 5.0, shape + (2,))
    if name == "pleiades":  # bodies near the canonical configuration, well separated
        return system.y0 + 0.3 * rng.standard_normal(shape + (28,))
    if name in TEXTBOOK:  # the box both starts' trajectories span (e.g. v > 0 for the glider)
        y = systems.simulate(system, y0=np.stack([system.y0, system.y0_test])).y.reshape(-1, system.dim)
        return rng.uniform(y.min(axis=0), y.max(axis=0), shape + (system.dim,))
    return rng.uniform(-2.0, 2.0, shape + (system.dim,))


@pytest.fixture(scope="module")
def nominal() -> dict[str, systems.Trajectories]:
    return {name: systems.simulate(systems.get(name)) for name in {n for n, _ in INVARIANTS}}


def test_registry_lists_the_five_systems_and_the_textbook_ones():
    assert systems.names() == sorted(ALL)
    assert not set(NAMES) & set(TEXTBOOK)


@pytest.mark.parametrize("name", NAMES)
def test_canonical_values(name):
    params, y0, t = CANONICAL[name]
    system = systems.get(name)
    assert system.name == name
    assert system.params == params
    assert system.y0.dtype == np.float64 and np.array_equal(system.y0, y0)
    assert system.dim == len(y0) == len(system.state_names)
    assert system.t_span == (t[0], t[-1])
    np.testing.assert_allclose(system.default_t(), t, rtol=0, atol=1e-12)
    assert system.default_t().shape == t.shape


@pytest.mark.parametrize("name", ALL)
def test_jacobian_matches_central_differences(name):
    system = systems.get(name)
    rng = np.random.default_rng(1)
    for y in random_states(name, (5,), rng):
        jac = system.jacobian(0.0, y)
        assert jac.shape == (system.dim, system.dim)
        fd = np.empty_like(jac)
        for k in range(system.dim):
            h = 1e-5 * max(1.0, abs(y[k]))
            e = np.zeros(system.dim)
            e[k] = h
            fd[:, k] = (system.rhs(0.0, y + e) - system.rhs(0.0, y - e)) / (2 * h)
        assert np.max(np.abs(jac - fd)) <= 1e-6 * np.max(np.abs(jac))


@pytest.mark.parametrize("name", ALL)
def test_rhs_and_jacobian_are_vectorised(name):
    system = systems.get(name)
    y = random_states(name, (3, 4), np.random.default_rng(2))  # (a, b, dim)
    f, jac = system.rhs(0.5, y), system.jacobian(0.5, y)
    assert f.shape == (3, 4, system.dim) and jac.shape == (3, 4, system.dim, system.dim)
    for i in range(3):
        for j in range(4):
            np.testing.assert_allclose(f[i, j], system.rhs(0.5, y[i, j]), rtol=1e-14, atol=0)
            np.testing.assert_allclose(jac[i, j], system.jacobian(0.5, y[i, j]),
                                       rtol=1e-14, atol=0)
    for value in system.invariants(y).values():
        assert value.shape == (3, 4)


def test_finite_difference_jacobian_of_base_class():
    spiral = systems.get("spiral")
    y = np.array([[0.7, -1.3], [1.5, 0.2]])
    np.testing.assert_allclose(systems.System.jacobian(spiral, 0.0, y),
                               spiral.jacobian(0.0, y), rtol=1e-8)


@pytest.mark.parametrize("name, invariant", INVARIANTS)
def test_invariants_are_conserved(nominal, name, invariant):
    values = systems.get(name).invariants(nominal[name].y[0])[invariant]  # (n_t,)
    # Relative drift; invariants that vanish initially (Pleiades momenta) use scale 1.
    drift = np.max(np.abs(values - values[0])) / max(abs(values[0]), 1.0)
    assert drift <= 1e-8


@pytest.mark.parametrize("name", ["fitzhugh_nagumo", "spiral"])
def test_dissipative_systems_have_no_invariants(name):
    assert systems.get(name).invariants(systems.get(name).y0) == {}


def test_lotka_volterra_invariant_value():
    lv = systems.get("lotka_volterra")
    assert lv.invariants(lv.y0)["V"] == pytest.approx(1.0 + 1.0)  # δ + β at (1, 1)


def test_simulate_batch_matches_single_runs():
    rigid = systems.get("rigid_body")
    y0 = np.array([[1.0, 0.0, 0.9], [0.5, 0.5, 0.5]])
    batch = systems.simulate(rigid, y0=y0)
    assert batch.y.shape == (2, 201, 3) and batch.system == "rigid_body"
    for n in range(2):
        assert np.array_equal(batch.y[n], systems.simulate(rigid, y0=y0[n]).y[0])
    np.testing.assert_array_equal(batch.y[:, 0], y0)


def test_simulate_with_implicit_method_uses_jacobian():
    rigid = systems.get("rigid_body")
    t = np.linspace(0.0, 5.0, 51)
    radau = systems.simulate(rigid, t=t, method="Radau", rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(radau.y, systems.simulate(rigid, t=t).y, atol=1e-8)


def test_simulate_reports_blow_up():
    blow_up = systems.get("spiral", A=[[1.0, 0.0], [0.0, 1.0]])  # x' = x³ explodes at t = 1/8
    with pytest.raises(systems.IntegrationError, match="failed"):
        systems.simulate(blow_up, t=np.linspace(0.0, 1.0, 11))


@pytest.mark.parametrize("kwargs, word", [({"y0": np.ones(3)}, "shape"),
                                          ({"t": np.array([0.0, 1.0, 0.5])}, "increasing")])
def test_simulate_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        systems.simulate(systems.get("lotka_volterra"), **kwargs)


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError) as info:
        systems.get("lorenz96")
    assert "lotka_volterra" in str(info.value) and isinstance(info.value, ValueError)


def test_unknown_parameter_lists_valid_fields():
    with pytest.raises(TypeError, match="alpha, beta, gamma, delta"):
        systems.get("lotka_volterra", omega=1.0)


def test_overrides_frozen_and_hashable():
    rigid = systems.get("rigid_body", I1=-1.0)
    assert rigid.I1 == -1.0 and rigid == systems.RigidBody(I1=-1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rigid.I1 = 2.0
    assert hash(systems.get("spiral", A=[[-0.1, 2], [-2, -0.1]])) == hash(systems.get("spiral"))
    with pytest.raises(ValueError, match="7 positive"):
        systems.get("pleiades", masses=(1.0, 2.0))
