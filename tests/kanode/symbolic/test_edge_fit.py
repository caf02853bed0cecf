"""Per-edge symbolic fits: parameter recovery, domain guards, the selection rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kanode.symbolic.edge_fit import evaluate, fit_candidates, select
from kanode.symbolic.library import LIBRARY

X = np.linspace(-0.7, 1.3, 101)
# canonical (a, b, c, d) of each library function (see kanode.symbolic.library)
TRUE = {
    "0": (1.0, 0.0, 0.0, 0.37),
    "x": (1.0, 0.0, 2.0, 0.3),
    "x^2": (1.0, 0.4, -1.5, 0.2),
    "x^3": (1.0, -0.3, 0.8, -0.1),
    "x^4": (1.0, 0.2, 1.1, 0.5),
    "1/x": (1.0, 1.2, 0.7, 0.1),
    "sqrt": (-1.0, 1.9, 1.3, -0.2),
    "exp": (1.3, 0.0, 0.6, 0.1),
    "log": (1.0, 0.9, 0.5, 0.2),
    "sin": (2.1, 0.7, 1.2, -0.3),
    "tanh": (1.7, -0.4, 0.9, 0.2),
    "abs": (1.0, -0.25, 1.4, 0.1),
    "gaussian": (1.5, 0.3, 2.0, -0.5),
}


def test_every_library_function_is_tested() -> None:
    assert set(TRUE) == set(LIBRARY)


@pytest.mark.parametrize("name", sorted(TRUE))
def test_parameters_recovered_from_noise_free_samples(name: str) -> None:
    true = np.array(TRUE[name])
    y = evaluate(LIBRARY[name], true[None], X[None])
    fit = fit_candidates(X[None], y, names=[name])[name]
    np.testing.assert_allclose(fit.params[0], true, atol=1e-6, rtol=0)
    assert fit.r2[0] == pytest.approx(1.0, abs=1e-10) or name == "0"


def test_recovery_is_per_edge_in_one_call() -> None:
    """Several edges with different ranges and parameters fitted together."""
    rng = np.random.default_rng(0)
    lo = rng.uniform(-2, 0, 5)
    x = lo[:, None] + np.linspace(0, 1, 80) * rng.uniform(0.5, 3, 5)[:, None]   # (5, 80)
    true = np.stack([rng.uniform(0.5, 2, 5), rng.uniform(-1, 1, 5), rng.uniform(0.5, 2, 5),
                     rng.uniform(-1, 1, 5)], -1)
    y = evaluate(LIBRARY["tanh"], true, x)
    fit = fit_candidates(x, y, names=["tanh"])["tanh"]
    np.testing.assert_allclose(fit.params, true, atol=1e-6)


@pytest.mark.parametrize("name", ["log", "sqrt", "1/x"])
def test_domain_unsafe_candidates_never_nan(name: str) -> None:
    """Inputs crossing 0: the fitted argument stays on the safe side, values are finite."""
    x = np.linspace(-1.0, 1.0, 60)[None]
    y = np.sin(3 * x)
    fit = fit_candidates(x, y, names=[name])[name]
    assert np.isfinite(fit.r2[0]) and fit.r2[0] <= 1.0
    u = fit.params[0, 0] * x + fit.params[0, 1]
    assert (u > 0).all() or (name == "1/x" and (u < 0).all())
    assert np.isfinite(evaluate(LIBRARY[name], fit.params, x)).all()
    # the trainable torch form is guarded on any input
    u_any = torch.linspace(-3, 3, 101, requires_grad=True)
    value = LIBRARY[name].torch(u_any)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(u_any.grad).all()


def test_selection_prefers_the_simplest_good_fit_and_never_zeroes_a_live_edge() -> None:
    x = np.stack([X, X, X])
    y = np.stack([3 * X + 1, (X + 0.2) ** 2, 1e-9 * X + 2.0])   # linear, quadratic, nearly constant
    fits = fit_candidates(x, y)
    choices = select(fits, r2_threshold=0.999, alive=np.array([True, True, True]))
    assert [c.name for c in choices[:2]] == ["x", "x^2"]
    assert choices[2].name != "0"
    dead = select(fits, r2_threshold=0.999, alive=np.array([True, True, False]))
    assert dead[2].name == "x"              # still exact; "0" only where allowed and simplest
    constant = fit_candidates(X[None], np.full((1, X.size), 2.0))
    assert select(constant, alive=np.array([False]))[0].name == "0"
    assert select(constant, alive=np.array([True]))[0].name != "0"
