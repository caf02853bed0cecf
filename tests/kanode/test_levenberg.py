"""Levenberg–Marquardt (kanode.optim.levenberg): it reaches the minima of least-squares problems
whose solutions are known (Rosenbrock's, an exponential fit against numpy's linear fit of log data),
stops on its plateau rule when the sum of squares goes flat and not while it falls, and refuses bad
settings and a non-finite start."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kanode.optim.levenberg import levenberg_marquardt


def rosenbrock(theta):                       # S = 100 (y - x²)² + (1 - x)², minimum 0 at (1, 1)
    x, y = theta
    return torch.stack([10 * (y - x**2), 1 - x])


def rosenbrock_jacobian(theta):
    x, _ = theta
    jac = torch.tensor([[-20 * float(x), 10.0], [-1.0, 0.0]], dtype=theta.dtype)
    return rosenbrock(theta), jac


def test_rosenbrock_from_the_classic_start():
    result = levenberg_marquardt(rosenbrock, rosenbrock_jacobian, torch.tensor([-1.2, 1.0], dtype=torch.float64),
                                 max_steps=200, plateau_steps=0)
    assert result.theta.tolist() == pytest.approx([1.0, 1.0], abs=1e-8)
    assert result.losses[-1] < 1e-16
    assert all(b < a for a, b in zip(result.losses, result.losses[1:]))  # only downhill steps are taken
    assert result.stopped_on in ("stalled", "cap")


def test_exponential_fit_matches_the_exact_solution_of_noise_free_data():
    t = torch.linspace(0, 2, 25, dtype=torch.float64)
    y = 2.5 * torch.exp(-1.3 * t)

    def residuals(theta):
        return theta[0] * torch.exp(theta[1] * t) - y

    def jacobian(theta):
        e = torch.exp(theta[1] * t)
        return residuals(theta), torch.stack([e, theta[0] * t * e], dim=1)

    # the start from numpy's straight-line fit of log(y) perturbed: the exact answer is (2.5, -1.3)
    slope, intercept = np.polyfit(t.numpy(), np.log(y.numpy()), 1)
    start = torch.tensor([math.exp(intercept) * 3.0, slope * 0.2], dtype=torch.float64)
    result = levenberg_marquardt(residuals, jacobian, start, max_steps=100, plateau_steps=0)
    assert result.theta.tolist() == pytest.approx([2.5, -1.3], rel=1e-9)


def slow_decay(theta):                        # S = Σ θ_i^2 · (1 + 1e-6 θ_i²): LM shrinks it geometrically
    return theta * torch.sqrt(1 + 1e-6 * theta**2)


def slow_decay_jacobian(theta):
    root = torch.sqrt(1 + 1e-6 * theta**2)
    return slow_decay(theta), torch.diag(root + 1e-6 * theta**2 / root)


def test_plateau_rule_stops_a_flat_run_and_not_a_falling_one():
    # S = 1 + Σ θ_i⁴: each step halves θ, so S keeps falling, by ever less, towards its floor 1
    flat = levenberg_marquardt(lambda th: torch.cat([th**2, torch.ones(1, dtype=th.dtype)]),
                               lambda th: (torch.cat([th**2, torch.ones(1, dtype=th.dtype)]),
                                           torch.cat([torch.diag(2 * th), torch.zeros(1, 2, dtype=th.dtype)])),
                               torch.tensor([3.0, -2.0], dtype=torch.float64), max_steps=500, plateau_steps=5,
                               plateau_rtol=0.01)
    assert flat.stopped_on == "plateau" and flat.steps < 60 and flat.losses[-1] == pytest.approx(1.0, abs=1e-3)
    # the plateau window really is flat: < 1 % over its last 5 accepted steps, and the window before it was not
    assert (flat.losses[-6] - min(flat.losses[-5:])) / flat.losses[-6] < 0.01
    assert (flat.losses[-7] - min(flat.losses[-6:-1])) / flat.losses[-7] >= 0.01
    falling = levenberg_marquardt(slow_decay, slow_decay_jacobian, torch.full((3,), 5.0, dtype=torch.float64),
                                  max_steps=8, plateau_steps=3, plateau_rtol=0.01, damping=1e3)
    assert falling.stopped_on == "cap" and falling.steps == 8
    assert falling.losses[-1] < 0.9 * falling.losses[-4]


def test_refusals():
    with pytest.raises(ValueError, match="not finite"):
        levenberg_marquardt(lambda th: th / 0.0, rosenbrock_jacobian, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="damping > 0"):
        levenberg_marquardt(rosenbrock, rosenbrock_jacobian, torch.zeros(2, dtype=torch.float64), damping=0.0)
