"""Hessians of a run's training loss: exact vs finite differences, Lanczos,
Hutchinson and SLQ, and a quadratic with a known spectrum."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kanode.analysis import (exact_hessian, hutchinson_trace, hvp_operator, lanczos_extremes, load_objective,
                             slq_density)


@pytest.fixture(autouse=True)
def one_thread():
    """Batched HVPs are many small GEMMs: on a shared 2-core machine a second
    intra-op thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quadratic():
    """f(θ) = ½ θᵀAθ + bᵀθ, A = Q diag(λ) Qᵀ with λ spread over [−3, 50] (n = 60)."""
    gen = torch.Generator().manual_seed(0)
    n = 60
    spectrum = torch.cat([torch.tensor([-3.0, -1.0]), torch.linspace(0.5, 2.0, n - 5),
                          torch.tensor([10.0, 20.0, 50.0])]).double()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(spectrum) @ q.T
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    return (lambda th: 0.5 * th @ a @ th + b @ th), torch.randn(n, generator=gen, dtype=torch.float64), spectrum


def test_quadratic_spectrum_is_recovered(quadratic):
    f, theta, spectrum = quadratic
    n = theta.numel()
    hvp = hvp_operator(f, theta)
    exact = torch.linalg.eigvalsh(exact_hessian(hvp, n, chunk=16))
    assert torch.allclose(exact, spectrum, rtol=0, atol=1e-12)
    top = lanczos_extremes(hvp, n, 3, "LA")
    bottom = lanczos_extremes(hvp, n, 2, "SA")
    np.testing.assert_allclose(top, [10.0, 20.0, 50.0], rtol=1e-10)
    np.testing.assert_allclose(bottom, [-3.0, -1.0], rtol=1e-10)


def test_quadratic_hutchinson_and_slq(quadratic):
    f, theta, spectrum = quadratic
    n = theta.numel()
    hvp = hvp_operator(f, theta)
    trace, stderr = hutchinson_trace(hvp, n, probes=200, seed=0)
    assert abs(trace - spectrum.sum().item()) <= 0.05 * spectrum.sum().item()
    assert abs(trace - spectrum.sum().item()) <= 4 * stderr
    # n Lanczos steps from one probe: its Ritz values are the whole spectrum
    full = slq_density(hvp, n, steps=n, probes=1, seed=1)
    np.testing.assert_allclose(np.sort(full.nodes), spectrum.numpy(), rtol=0, atol=1e-8)
    assert full.moment(0) == pytest.approx(1.0, abs=1e-12)
    # 6 steps: each probe's quadrature is exact up to degree 11
    vectors = torch.randn(4, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    short = slq_density(hvp, n, steps=6, vectors=vectors)
    a = exact_hessian(hvp, n, chunk=60)
    for power in (1, 2, 5, 11):
        ap = torch.linalg.matrix_power(a, power)
        expected = torch.mean(torch.einsum("pi,ij,pj->p", vectors, ap, vectors) / (vectors**2).sum(1)).item()
        assert short.moment(power) == pytest.approx(expected, rel=1e-9), power
    # and over many probes the first moment is tr(A) / n (standard error ~4 % here)
    density = slq_density(hvp, n, steps=8, probes=300, seed=2)
    assert density.moment(1) == pytest.approx(spectrum.mean().item(), rel=0.15)


def _gradient(f, theta):
    point = theta.clone().requires_grad_()
    return torch.autograd.grad(f(point), point)[0]


@pytest.mark.parametrize("model", ["kan", "mlp"])
def test_objective_is_the_runs_training_loss(tiny_runs, model):
    f, theta = load_objective(tiny_runs[model])
    summary = json.loads((tiny_runs[model] / "summary.json").read_text())
    assert theta.dtype == torch.float64 and theta.numel() == summary["n_params"]
    assert f(theta).item() == pytest.approx(summary["final_train_loss"], rel=1e-12)
    assert f(theta + 0.01).item() != pytest.approx(summary["final_train_loss"], rel=1e-6)


@pytest.mark.parametrize("model", ["kan", "mlp"])
def test_exact_hessian_matches_finite_differences(tiny_runs, model):
    f, theta = load_objective(tiny_runs[model])
    n = theta.numel()
    hvp = hvp_operator(f, theta)
    hess = exact_hessian(hvp, n, chunk=64)
    h, columns = 1e-5, list(range(0, n, 3))  # every third column keeps the test fast
    eye = torch.eye(n, dtype=torch.float64)
    fd = torch.stack([(_gradient(f, theta + h * eye[j]) - _gradient(f, theta - h * eye[j])) / (2 * h)
                      for j in columns], 1)
    assert (hess[:, columns] - fd).abs().max() <= 1e-6 * hess.abs().max()
    values = torch.linalg.eigvalsh(hess).numpy()
    top = lanczos_extremes(hvp, n, 5, "LA")
    np.testing.assert_allclose(top, values[-5:], rtol=1e-8)
    trace, stderr = hutchinson_trace(hvp, n, probes=200, seed=0)
    assert abs(trace - values.sum()) <= 4 * stderr  # the estimator's error is what its standard error says
