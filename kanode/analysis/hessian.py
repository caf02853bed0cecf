"""Hessian spectra from Hessian-vector products (HVPs).

``hvp_operator(f, theta)`` differentiates ``f`` once with a graph
(``create_graph=True``) and then applies the Hessian to a block of tangents
in one reverse pass over that graph (``is_grads_batched=True``: the
backward is vmapped over the tangents), so the exact Hessian of n
parameters costs ⌈n / chunk⌉ passes, not n. On top of it: the exact
spectrum, extreme eigenvalues by Lanczos (ARPACK's ``eigsh``), Hutchinson's
trace estimate and a stochastic Lanczos quadrature (SLQ) density.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import Tensor

__all__ = ["HVP", "hvp_operator", "exact_hessian", "lanczos_extremes", "hutchinson_trace",
           "slq_density", "SLQDensity", "EXACT_MAX_PARAMS"]

EXACT_MAX_PARAMS = 5000

HVP = Callable[[Tensor], Tensor]
"""Maps tangents V (k, n) to H V (k, n), float64."""


def hvp_operator(f: Callable[[Tensor], Tensor], theta: Tensor) -> HVP:
    """The Hessian of ``f`` at ``theta`` (n,) as a batched product V (k, n) → H V (k, n).

    ``f`` must be twice differentiable by autograd. The gradient graph is built
    once here and kept for every product.
    """
    point = theta.detach().to(torch.float64).clone().requires_grad_()
    (grad,) = torch.autograd.grad(f(point), point, create_graph=True)

    def apply(tangents: Tensor) -> Tensor:
        if tangents.ndim != 2 or tangents.shape[1] != point.shape[0]:
            raise ValueError(f"tangents must be (k, {point.shape[0]}), got {tuple(tangents.shape)}")
        (out,) = torch.autograd.grad(grad, point, tangents.to(point), retain_graph=True,
                                     is_grads_batched=True)
        return out.detach()

    return apply


def exact_hessian(hvp: HVP, n: int, chunk: int = 256) -> Tensor:
    """The (n, n) Hessian from ⌈n / chunk⌉ batched products, symmetrised."""
    eye = torch.eye(n, dtype=torch.float64)
    rows = [hvp(eye[start : start + chunk]) for start in range(0, n, chunk)]
    hess = torch.cat(rows)
    return 0.5 * (hess + hess.T)


def _operator(hvp: HVP, n: int) -> LinearOperator:
    def matvec(v: np.ndarray) -> np.ndarray:
        return hvp(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).reshape(1, n))[0].numpy()

    def matmat(v: np.ndarray) -> np.ndarray:
        return hvp(torch.from_numpy(np.ascontiguousarray(v.T, dtype=np.float64))).numpy().T

    return LinearOperator((n, n), matvec=matvec, matmat=matmat, rmatvec=matvec, dtype=np.float64)


def lanczos_extremes(hvp: HVP, n: int, k: int = 20, which: str = "LA", tol: float = 0.0,
                     seed: int = 0) -> np.ndarray:
    """The ``k`` algebraically largest (``which="LA"``) or smallest (``"SA"``)
    eigenvalues, ascending, by implicitly restarted Lanczos on the HVP.
    ``tol=0`` asks for machine precision."""
    if which not in ("LA", "SA"):
        raise ValueError(f"which must be 'LA' or 'SA', got {which!r}")
    if not 0 < k < n:
        raise ValueError(f"k must lie in [1, n - 1] = [1, {n - 1}], got {k}")
    v0 = np.random.default_rng(seed).standard_normal(n)
    values = eigsh(_operator(hvp, n), k=k, which=which, tol=tol, v0=v0, return_eigenvectors=False)
    return np.sort(values)


def _rademacher(k: int, n: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (k, n), generator=generator, dtype=torch.int64).to(torch.float64) * 2 - 1


def hutchinson_trace(hvp: HVP, n: int, probes: int = 200, seed: int = 0, chunk: int = 100) -> tuple[float, float]:
    """Hutchinson's estimate of tr H with Rademacher probes: (mean, standard error)."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for start in range(0, probes, chunk):
        z = _rademacher(min(chunk, probes - start), n, generator)
        samples.append((z * hvp(z)).sum(1))
    values = torch.cat(samples)
    return values.mean().item(), (values.std() / probes**0.5).item()


@dataclass(frozen=True)
class SLQDensity:
    """Spectral density ≈ Σ_j weights[j] δ(λ − nodes[j]) (weights sum to 1),
    pooled over the probes' Gauss quadratures."""

    nodes: np.ndarray
    weights: np.ndarray

    def moment(self, power: int) -> float:
        """∫ λ^power dμ ≈ tr(H^power) / n."""
        return float(np.sum(self.weights * self.nodes**power))


def slq_density(hvp: HVP, n: int, steps: int = 80, probes: int = 10, seed: int = 0,
                vectors: Tensor | None = None) -> SLQDensity:
    """Stochastic Lanczos quadrature (Ghorbani et al. 2019): ``steps`` Lanczos
    iterations (full reorthogonalisation) from each of ``probes`` Gaussian
    start vectors (or the rows of ``vectors`` (probes, n)); the Ritz values
    are the nodes, the squared first components of the tridiagonal's
    eigenvectors (divided by the number of probes) the weights. Each probe's
    Gauss quadrature is exact for polynomials of degree < 2·steps:
    ``Σ_j w_j θ_j^p = mean over probes of vᵀHᵖv / vᵀv``."""
    steps = min(steps, n)
    if vectors is None:
        generator = torch.Generator().manual_seed(seed)
        vectors = torch.randn(probes, n, generator=generator, dtype=torch.float64)
    nodes, weights = [], []
    for v in vectors.to(torch.float64):
        alpha, beta = _lanczos(hvp, v / v.norm(), steps)
        theta, vecs = eigh_tridiagonal(alpha, beta)
        nodes.append(theta)
        weights.append(vecs[0] ** 2 / vectors.shape[0])
    return SLQDensity(np.concatenate(nodes), np.concatenate(weights))


def _lanczos(hvp: HVP, v: Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    basis = [v]
    alpha, beta = [], []
    for j in range(steps):
        w = hvp(basis[-1].unsqueeze(0))[0]
        alpha.append(float(w @ basis[-1]))
        q = torch.stack(basis)  # (j + 1, n)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - q.T @ (q @ w)
        b = float(w.norm())
        if j == steps - 1 or b <= 1e-12 * max(1.0, abs(alpha[-1])):
            break
        beta.append(b)
        basis.append(w / b)
    return np.array(alpha), np.array(beta[: len(alpha) - 1])
