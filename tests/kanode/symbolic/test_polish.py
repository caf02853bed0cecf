"""Polish: the formula's coefficients refitted through the ODE loss, small terms dropped."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch

from kanode.config import FitConfig
from kanode.data import FitData, load_data
from kanode.symbolic import Formula, TermModel, fit_initial_states, polish
from kanode.symbolic.polish import refit
from kanode.symbolic.export import terms


def test_polish_recovers_lotka_volterra_from_a_perturbed_formula() -> None:
    config = FitConfig(train_fraction=0.15)
    data = load_data(config).to(torch.float64, "cpu")
    x, y = sympy.symbols("x y")
    start = Formula(("x", "y"), (1.3 * x - 0.9 * x * y + 0.002 * y**2 + 0.001,
                                 1.1 * x * y - 2.7 * y + 0.003 * x))
    states = data.y_train.reshape(-1, 2).numpy()
    polished = polish(start, data, states, drop_threshold=0.01, digits=6)
    coefs = [{str(f): c for c, f in terms(e)} for e in polished.formula.rhs]
    assert set(coefs[0]) == {"x", "x*y"} and set(coefs[1]) == {"y", "x*y"}, coefs
    assert abs(coefs[0]["x"] - 1.5) < 1e-3 and abs(coefs[0]["x*y"] + 1.0) < 1e-3
    assert abs(coefs[1]["y"] + 3.0) < 1e-3 and abs(coefs[1]["x*y"] - 1.0) < 1e-3
    assert polished.refits >= 2
    # noise-free: the fitted initial state is the true one, (1, 1); the selection kept the
    # 4-term support (its forecast is off by the ridge's bias, which the last refit removes)
    np.testing.assert_allclose(polished.initial_states, [[1.0, 1.0]], atol=1e-6)
    chosen = polished.path[polished.chosen]
    assert chosen.n_terms == 4 and chosen.forecast_mse < 1e-3
    assert all(step.forecast_mse > chosen.forecast_mse + chosen.forecast_se
               for step in polished.path if step.n_terms < 4)   # dropping a true term forecasts worse
    assert polished.terms_from == "export"   # the start's 0.001-0.003 terms are below the 1 % drop already



# What the recipe returned at 5 % noise (4 trajectories, data seeds 0-4) while the polish held
# the initial states at the first observations: all five with wrong terms (results.csv of
# experiments/discovery.py at commit 456e94d). Seed 1 (coefficients ~100, cancelling on the visited
# states) is recovered only with the ridge of the term selection (polish(..., ridge=0) keeps
# coefficients of ~100).
NOISY_STARTS = {
    0: ({"1": -0.749, "y": 1.174, "x": 1.717, "x**2": -0.04036, "y**2": -0.3263, "x*y": -0.9441},
        {"1": -0.3799, "x": 0.1204, "y": -2.628, "x*y": 0.8875}),
    1: ({"1": 105.4, "y**2": 40.18, "x**2": 6.986, "x": -82.38, "y": -148.4, "x*y": 54.03},
        {"x**2": 15.44, "x": -43.98, "y": -24.06, "x*y": 11.31}),
    2: ({"1": 3.245, "x**2": 0.2689, "y**2": 0.4954, "y": -2.059, "x": -0.461, "x*y": -0.975},
        {"x**2": 0.04594, "y": -2.832, "x": -0.1596, "x*y": 0.8967}),
    3: ({"1": 6.392, "y**2": 0.8645, "x**2": 0.5582, "y": -3.559, "x": -2.494, "x*y": -1.024},
        {"1": 2.977, "x**2": 0.2993, "y**2": 0.6935, "y": -5.209, "x": -1.796, "x*y": 0.7246}),
    4: ({"1": 3.204, "y**2": 0.4851, "x**2": 0.2648, "x": -0.4033, "y": -1.999, "x*y": -0.9944},
        {"1": 0.6477, "x**2": 0.0952, "y**2": 0.1851, "y": -3.455, "x": -0.4839, "x*y": 0.8785}),
}


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_polish_finds_the_terms_in_noisy_data(seed: int) -> None:
    """5 % noise: the refit also fits the initial states (the first noisy observation is not
    the true one), and the forecast-validated elimination removes the spurious terms of these
    poor starts."""
    data = load_data(FitConfig(noise=0.05, n_traj=4, data_seed=seed)).to(torch.float64, "cpu")
    symbols = {"x": sympy.Symbol("x"), "y": sympy.Symbol("y")}
    rhs = tuple(sum(c * sympy.sympify(k, locals=symbols) for k, c in eq.items()) for eq in NOISY_STARTS[seed])
    states = data.y_train.reshape(-1, 2).numpy()
    found = polish(Formula(("x", "y"), rhs), data, states, drop_threshold=0.01, digits=6).formula
    coefs = [{str(f): c for c, f in terms(e)} for e in found.rhs]
    assert set(coefs[0]) == {"x", "x*y"} and set(coefs[1]) == {"y", "x*y"}, coefs
    truth = [{"x": 1.5, "x*y": -1.0}, {"y": -3.0, "x*y": 1.0}]
    worst = max(abs(coefs[k][t] - v) / abs(v) for k in range(2) for t, v in truth[k].items())
    assert worst < 0.02, coefs   # measured 0.93 / 0.76 % (seeds 0 / 1, with the ridge); 0.99, 0.40, 0.83 % (2-4, before it)


def test_the_ridge_shrinks_every_coefficient_and_is_left_out_of_the_mse() -> None:
    data = load_data(FitConfig(train_fraction=0.15)).to(torch.float64, "cpu")
    x, y = sympy.symbols("x y")
    exact = Formula(("x", "y"), (1.5 * x - x * y, x * y - 3 * y))
    free, shrunk = TermModel(exact), TermModel(exact)
    mse_free = refit(free, data)
    mse_shrunk = refit(shrunk, data, ridge=1e-4)
    assert mse_free < 1e-9
    assert np.all(np.abs(shrunk.theta) < np.abs(free.theta) - 1e-4)
    assert mse_free < mse_shrunk < 1e-2   # the data term only: the penalty itself is about n·1e-4·(θ·rms·T)²


def test_fit_initial_states_recovers_the_true_start() -> None:
    """The exact law, its trajectory started from a wrong guess: the fitted start is (1, 1), to
    the error of the polish's RK4 at half the sampling interval (2e-6 here)."""
    data = load_data(FitConfig(train_fraction=0.15)).to(torch.float64, "cpu")
    x, y = sympy.symbols("x y")
    exact = Formula(("x", "y"), (1.5 * x - x * y, x * y - 3 * y))
    y0, mse = fit_initial_states(exact, data, start=np.array([[1.2, 0.8]]))
    np.testing.assert_allclose(y0, [[1.0, 1.0]], atol=1e-5)
    assert mse < 1e-10


# Hudson's Bay Company pelts (thousands), 1900-1915: the training years of the hare-lynx case of
# the real-data issue (20); its least-squares Lotka-Volterra fit (scipy least_squares through
# solve_ivp, six parameters): a = 0.460, b = 0.0238, c = 0.968, d = 0.0284.
HARE = [30.0, 47.2, 70.2, 77.4, 36.3, 20.6, 18.1, 21.4, 22.0, 25.4, 27.1, 40.3, 57.0, 76.6, 52.3, 19.5]
LYNX = [4.0, 6.1, 9.8, 35.2, 59.4, 41.7, 19.0, 13.0, 8.3, 9.1, 7.4, 8.0, 12.3, 19.5, 45.7, 51.1]
# what kanode.symbolic exported before the polish on that file (formula_before_polish, seed 0)
HARE_LYNX_EXPORT = ("-0.3128*hare**2 + 0.1108*hare*lynx + 12.86*hare - 0.009259*lynx**2 - 1.261*lynx - 102.1",
                    "0.1065*hare**2 - 0.05456*hare*lynx - 5.173*hare - 0.005247*lynx**2 + 0.322*lynx + 86.72")


@pytest.mark.slow
def test_the_selection_keeps_lotka_volterra_on_16_noisy_years() -> None:
    """32 numbers: in-sample, a 9-term quadratic fits 5x better than the 4-term Lotka-Volterra
    support (no usual information criterion prefers LV); forecasting the held-out last years
    picks LV, with the least-squares baseline's coefficients."""
    t = torch.arange(1900.0, 1916.0, dtype=torch.float64)
    y = torch.tensor([HARE, LYNX], dtype=torch.float64).T[None]                # (1, 16, 2)
    data = FitData(t=t, y=y, y_held_out=y[:0], n_train=16, system=None, state_names=("hare", "lynx"))
    symbols = {n: sympy.Symbol(n) for n in data.state_names}
    start = Formula(data.state_names, tuple(sympy.sympify(e, locals=symbols) for e in HARE_LYNX_EXPORT))
    polished = polish(start, data, y[0].numpy())
    coefs = [{str(f): c for c, f in terms(e)} for e in polished.formula.rhs]
    assert set(coefs[0]) == {"hare", "hare*lynx"} and set(coefs[1]) == {"lynx", "hare*lynx"}, coefs
    baseline = [{"hare": 0.460, "hare*lynx": -0.0238}, {"lynx": -0.968, "hare*lynx": 0.0284}]
    worst = max(abs(coefs[k][n] / v - 1) for k in range(2) for n, v in baseline[k].items())
    assert worst < 0.02, coefs
    assert polished.terms_from == "polish-selection" and polished.holdout == 4
    chosen = polished.path[polished.chosen]
    assert min(step.fit_mse for step in polished.path if step.n_terms == 9) < chosen.fit_mse / 4


def test_above_a_full_quadratic_only_the_smallest_terms_are_tried() -> None:
    """14 terms: the elimination tries the 4 removals whose terms contribute least (|θ| × RMS);
    at 12 terms or fewer it tries every one."""
    from kanode.symbolic.polish import SCREENED, _removable, _screened

    x, y = sympy.symbols("x y")
    states = np.array([[1.0, 2.0], [2.0, 1.0], [0.5, 0.5]])
    big = [3.0 * x, -2.0 * y, 1.5 * x * y, 4.0 * x**2, 2.5 * y**2, 5.0, 0.1 * x**3]
    small = [1e-3 * x, 2e-3 * y, 3e-3 * x * y, 4e-3 * x**2, 5e-3 * y**2, 6e-3, 7e-3 * x**3]
    rhs = (sum(big), sum(small))                                     # 7 + 7 = 14 terms
    model = TermModel(Formula(("x", "y"), rhs))
    tried = _screened(model, _removable(model.formula()), states)
    assert len(tried) == SCREENED and {k for k, _ in tried} == {1}
    assert {str(f) for _, f in tried} == {"x", "y", "x*y", "1"}      # |θ|·rms smallest: 1e-3·rms(x), ...
    few = TermModel(Formula(("x", "y"), (sum(big[:6]), sum(small[:6]))))
    assert len(_screened(few, _removable(few.formula()), states)) == 12
