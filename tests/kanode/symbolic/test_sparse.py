"""The sparse-regression start: derivative estimates, the data-scaled candidates, the sparse
fits, the trajectory selection, and the default recipe (kanode.symbolic.sparse_recipe)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sympy
import torch
from scipy.integrate import solve_ivp

from kanode.data import FitData
from kanode.symbolic import (SparseModel, best_subsets, default_candidates, discover_sparse, evaluate_candidates,
                             select_model, smoothed_derivatives, sparse_start, stlsq)
from kanode.symbolic.derivatives import local_polynomial
from kanode.symbolic.export import terms
from kanode.symbolic.settings import SymbolicConfig
from kanode.symbolic.sparse import KAPPA, admissible_limit


def test_local_cubics_give_exact_slopes_on_an_irregular_grid() -> None:
    t = np.sort(np.random.default_rng(0).uniform(0, 3, 40))
    y = np.stack([t**3 - 2 * t, 0.5 * t**2 + 1], axis=1)                 # (40, 2)
    value, slope, hat = local_polynomial(t, y, half_width=3)
    np.testing.assert_allclose(value, y, atol=1e-10)
    np.testing.assert_allclose(slope, np.stack([3 * t**2 - 2, t], axis=1), atol=1e-8)
    assert np.all((0 < hat) & (hat <= 1))


def test_the_window_widens_with_noise_and_the_slopes_follow_the_cosine() -> None:
    t = np.linspace(0, 4 * np.pi, 201)
    clean = np.sin(t)[None, :, None]                                       # (1, 201, 1)
    exact = smoothed_derivatives(t, clean)
    assert exact.half_width == 2                                           # noise-free: the narrowest window
    error = np.abs(exact.rates[0, :, 0] - np.cos(t))
    assert error[2:-2].max() < 1e-6 and error.max() < 3e-5    # O(Δt⁴): measured 5.2e-7 inside, 1.5e-5 at the ends
    noisy = clean + 0.05 * np.random.default_rng(1).standard_normal(clean.shape)
    smoothed = smoothed_derivatives(t, noisy)
    assert smoothed.half_width >= 6
    assert 0.5 * 0.05**2 < smoothed.residual_variance < 2 * 0.05**2     # the leave-one-out error ≈ the noise
    rms = np.sqrt(np.mean((smoothed.rates[0, :, 0] - np.cos(t)) ** 2))
    assert rms < 0.1                                                       # raw differences: ~0.05·√2/0.063 ≈ 1.1


def test_candidates_follow_the_data() -> None:
    rng = np.random.default_rng(0)
    positive = rng.uniform(0.5, 2.0, 50)                                   # a concentration: stays > 0
    signed = rng.uniform(-2.0, 2.0, 50)                                    # crosses 0
    large = rng.uniform(15.0, 25.0, 50)                                    # median ~20
    factors = {str(f) for f in default_candidates(np.stack([positive, signed, large], axis=1), ["c", "s", "z"])}
    assert {"c*log(c)", "c/(c + 1)", "c*s/(c + 1)", "s**3", "sin(s)*cos(s)", "exp(s)"} <= factors
    assert "s*log(s)" not in factors and "s/(s + 1)" not in factors       # s crosses 0
    assert "z**2/(z**2 + 400)" in factors and "z**2/(z**2 + 1)" not in factors   # Hill terms at z's own scale
    assert "exp(0.122*z)" in factors              # 3 e-foldings over max|z| = 24.7: z/8.2 (two digits)
    assert "s/(c**2 + 1)" not in factors                                   # s·1/(1+c²) = s − s·c²/(1+c²): left out


def test_stlsq_and_best_subsets_find_the_generating_terms() -> None:
    rng = np.random.default_rng(0)
    library = rng.standard_normal((200, 12))
    library[:, 5] = library[:, 4] + 1e-3 * rng.standard_normal(200)       # a near copy of column 4
    target = 2.0 * library[:, 1] - 0.3 * library[:, 4] + 0.05 * library[:, 9]
    coef = stlsq(library, target, threshold=0.01)
    assert set(np.flatnonzero(coef)) == {1, 4, 9}
    np.testing.assert_allclose(coef[[1, 4, 9]], [2.0, -0.3, 0.05], rtol=1e-9)
    fits = best_subsets(library, target, max_size=3, keep=1)
    assert [set(np.flatnonzero(c)) for c, _ in fits][2] == {1, 4, 9} and fits[2][1] < 1e-4   # the 1e-10 ridge's


def test_the_admissible_limit() -> None:
    assert admissible_limit([4e-6, 1e-6, float("inf")], noise=2e-7, floor=1e-9) == pytest.approx(
        2e-7 + KAPPA * 8e-7 + 1e-9)
    assert admissible_limit([float("inf")], noise=0.0, floor=1.0) == -float("inf")


def _law_data(rhs, y0: list[float], t: np.ndarray, names: tuple[str, ...]) -> FitData:
    solution = solve_ivp(lambda _t, y: rhs(y), (t[0], t[-1]), y0, t_eval=t, rtol=1e-12, atol=1e-12, method="DOP853")
    y = torch.tensor(solution.y.T)[None]                                  # (1, n_t, dim)
    return FitData(t=torch.tensor(t), y=y, y_held_out=y[:0], n_train=t.size, system=None, state_names=names)


def _coefficients(formula) -> list[dict[str, float]]:
    return [{str(f): c for c, f in terms(e)} for e in formula.rhs]


def _sine_and_rational(y: np.ndarray) -> np.ndarray:
    """x' = y, y' = −2 sin x + 1.5/(1 + y²) − 0.3 y (a driven, damped pendulum whose drive saturates)."""
    return np.array([y[1], -2.0 * np.sin(y[0]) + 1.5 / (1 + y[1] ** 2) - 0.3 * y[1]])


SINE_AND_RATIONAL = [{"y": 1.0}, {"sin(x)": -2.0, "1/(y**2 + 1)": 1.5, "y": -0.3}]


def test_the_sparse_start_recovers_a_law_with_a_sine_and_a_rational_term() -> None:
    data = _law_data(_sine_and_rational, [2.0, 0.0], np.linspace(0, 15, 301), ("x", "y"))
    start = sparse_start(data)
    found = _coefficients(start.model.formula(start.factors, ("x", "y")))
    assert [set(c) for c in found] == [set(c) for c in SINE_AND_RATIONAL], found
    worst = max(abs(found[k][f] / v - 1) for k, eq in enumerate(SINE_AND_RATIONAL) for f, v in eq.items())
    assert worst < 1e-3, found        # the derivative estimates' error (measured 2e-5)
    assert len(start.factors) > 20 and len(start.path) > 3                # chosen among many candidates and models


def test_the_selection_picks_the_true_support_over_a_superset_and_a_subset() -> None:
    """Noise-free Lotka-Volterra, 51 points on t ≤ 5: the best 2+2-term fit of the smoothed
    derivatives (the law), the best 2+3-term fit (a spurious x·y²/(1 + y²) that absorbs some of
    the derivative estimates' error: a smaller trajectory error, 5.9e-6 against 1.65e-5) and the
    best 1+2-term fit. The selection keeps the law: admissible (within KAPPA of the best excess)
    with fewer terms; the subset is not admissible."""
    t = np.linspace(0, 5, 51)
    data = _law_data(lambda y: np.array([1.5 * y[0] - y[0] * y[1], y[0] * y[1] - 3 * y[1]]), [1.0, 1.0], t, ("x", "y"))
    observed = data.y.numpy()
    derivatives = smoothed_derivatives(t, observed)
    states = derivatives.states[0]
    factors = default_candidates(states, ("x", "y"))
    library = evaluate_candidates(factors, ("x", "y"), states)
    fits = [best_subsets(library, derivatives.rates[0][:, k], max_size=3, keep=1) for k in range(2)]
    models = [SparseModel(np.stack([fits[0][a - 1][0], fits[1][b - 1][0]]), 0.0) for a, b in ((2, 3), (2, 2), (1, 2))]
    chosen, limit = select_model(models, factors, ("x", "y"), t, derivatives.states[:, 0], observed,
                                 noise=derivatives.residual_variance, floor=1e-6 * observed.var(axis=(0, 1)).mean())
    found = [{str(factors[j]) for j in np.flatnonzero(row)} for row in models[chosen].coefficients]
    assert chosen == 1 and found == [{"x", "x*y"}, {"y", "x*y"}], found
    assert models[0].mse < models[1].mse <= limit < models[2].mse


@pytest.mark.slow
def test_the_default_recipe_returns_the_law_with_a_sine_and_a_rational_term() -> None:
    data = _law_data(_sine_and_rational, [2.0, 0.0], np.linspace(0, 15, 151), ("x", "y"))
    found = discover_sparse(data, None, SymbolicConfig(digits=8))
    coefs = _coefficients(found.formula)
    assert [set(c) for c in coefs] == [set(c) for c in SINE_AND_RATIONAL], coefs
    worst = max(abs(coefs[k][f] / v - 1) for k, eq in enumerate(SINE_AND_RATIONAL) for f, v in eq.items())
    assert worst < 2e-5, coefs        # the polish's RK4 bias (README: about 3e-6)
    assert found.verdict.accepted and found.summary["start"] == "sparse-regression"
    assert found.summary["terms_from"] in ("sparse-regression", "polish-threshold", "polish-selection")


def test_the_default_command_finds_lotka_volterra_without_a_kan(tmp_path: Path) -> None:
    from kanode.symbolic.__main__ import main

    out = tmp_path / "lv"
    assert main(["--system", "lotka_volterra", "--out", str(out), "--quiet"]) == 0
    formula = json.loads((out / "formula.json").read_text())
    symbols = {n: sympy.Symbol(n) for n in ("x", "y")}
    found = [{str(f): c for c, f in terms(sympy.sympify(formula["rhs"][n], locals=symbols))} for n in ("x", "y")]
    assert found == [{"x": 1.5, "x*y": -1.0}, {"y": -3.0, "x*y": 1.0}]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["start"] == "sparse-regression"
    assert summary["derivatives"]["source"] == "smoothed" and "smoothed data" in summary["verdict"]["reason"]
    assert not (out / "edges.png").exists()                               # no KAN, no edge plots


# Hudson's Bay Company pelts (thousands), 1900-1915 (tests/kanode/symbolic/test_polish.py)
HARE = [30.0, 47.2, 70.2, 77.4, 36.3, 20.6, 18.1, 21.4, 22.0, 25.4, 27.1, 40.3, 57.0, 76.6, 52.3, 19.5]
LYNX = [4.0, 6.1, 9.8, 35.2, 59.4, 41.7, 19.0, 13.0, 8.3, 9.1, 7.4, 8.0, 12.3, 19.5, 45.7, 51.1]


@pytest.mark.slow
def test_poor_derivatives_fall_back_to_the_zero_start_on_16_hare_lynx_years() -> None:
    """16 yearly counts: the smoother's leave-one-out error is half the variance; the sparse start
    is wrong, the polish from the quadratic monomials at zero forecasts the held-out years better
    and is Lotka-Volterra with the least-squares baseline's coefficients."""
    t = torch.arange(1900.0, 1916.0, dtype=torch.float64)
    y = torch.tensor([HARE, LYNX], dtype=torch.float64).T[None]
    data = FitData(t=t, y=y, y_held_out=y[:0], n_train=16, system=None, state_names=("hare", "lynx"))
    found = discover_sparse(data, None, SymbolicConfig())
    assert found.summary["start"] == "degree-2 monomials at zero"
    assert found.summary["other_start"]["forecast_mse"] < found.summary["other_start"]["sparse_forecast_mse"]
    coefs = _coefficients(found.formula)
    baseline = [{"hare": 0.460, "hare*lynx": -0.0238}, {"lynx": -0.968, "hare*lynx": 0.0284}]
    assert [set(c) for c in coefs] == [set(c) for c in baseline], coefs
    assert max(abs(coefs[k][n] / v - 1) for k in range(2) for n, v in baseline[k].items()) < 0.02


def test_kan_derivatives_are_the_fields_values_and_the_verdict_keeps_the_smoothers_reference() -> None:
    """``--derivatives kan``: the rates are the fitted field's at the observed states (here a KAN
    trained 5 + 3 steps, so a poor one), and the verdict still compares the formula with the
    smoothed data's leave-one-out error: a formula from a poor field is rejected, not passed."""
    from kanode.config import FitConfig
    from kanode.data import load_data
    from kanode.symbolic import discover
    from kanode.symbolic.sparse_recipe import fit_kan_rates

    config = FitConfig(system="lotka_volterra")
    data = load_data(config).to(torch.float64, "cpu")
    sym = SymbolicConfig(derivatives="kan", sparse_steps=5, sparse_lbfgs_steps=3, polish_rounds=0)
    rates = fit_kan_rates(data, config, sym)
    smoothed = smoothed_derivatives(data.t_train.numpy(), data.y_train.numpy())
    assert rates.source == "field" and rates.residual_variance == smoothed.residual_variance > 0
    np.testing.assert_array_equal(rates.states, data.y_train.numpy())
    found = discover(data, config, sym)
    assert found.summary["derivatives"]["source"] == "field"
    assert f"smoothed data {smoothed.residual_variance:.4g}" in found.verdict.reason
    assert found.verdict.accepted == (found.summary["formula_mse_train"] <= 10 * smoothed.residual_variance)


def test_the_union_of_ties_takes_the_admissible_models_that_are_no_longer() -> None:
    from kanode.symbolic.sparse import union_of_ties

    chosen = SparseModel(np.array([[1.0, 0, 0, 0], [0, 2.0, 0, 0]]), 0.0, mse=0.5)
    tie = SparseModel(np.array([[0, 0, 3.0, 0], [0, 2.5, 0, 0]]), 0.0, mse=0.4)          # 2 terms, admissible
    longer = SparseModel(np.array([[1.0, 0, 0, 7.0], [0, 2.0, 0, 0]]), 0.0, mse=0.1)     # 3 terms
    outside = SparseModel(np.array([[0, 0, 0, 9.0], [0, 0, 0, 9.0]]), 0.0, mse=2.0)      # not admissible
    union = union_of_ties([chosen, tie, longer, outside], chosen, limit=1.0)
    np.testing.assert_array_equal(union.coefficients, [[1.0, 0, 3.0, 0], [0, 2.0, 0, 0]])
    assert union_of_ties([chosen, longer, outside], chosen, limit=1.0) is chosen


def test_the_sparse_start_keeps_the_law_among_look_alikes_on_noisy_lotka_volterra() -> None:
    """5 % noise, 4 trajectories (data seed 2): two 4-term models are admissible, the law and
    y' = a·x²y + b·xy/(1 + x²), whose derivative-fitted coefficients give the smaller trajectory
    error; the start carries both y' supports, so the polish can keep the law."""
    from kanode.config import FitConfig
    from kanode.data import load_data

    data = load_data(FitConfig(noise=0.05, n_traj=4, data_seed=2)).to(torch.float64, "cpu")
    start = sparse_start(data)
    found = [{str(start.factors[j]) for j in np.flatnonzero(row)} for row in start.model.coefficients]
    assert found[0] == {"x", "x*y"} and {"y", "x*y"} <= found[1], found
