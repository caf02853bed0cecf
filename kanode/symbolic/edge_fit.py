"""Fit ``φ(x) ≈ c · f(a·x + b) + d`` for many edges and every library function at once.

For each candidate ``f`` the unknowns split into ``(c, d)``, which enter
linearly and are solved in closed form for any ``(a, b)``, and the nonlinear
``(a, b)`` of the candidate's canonical form (:mod:`kanode.symbolic.library`).
Candidates that are affine in all their unknowns (``0``, ``x``, ``x^2``) are
plain linear least squares. The others are searched on a grid of ``(a, b)``
for all edges in one array operation, and the best ``n_starts`` grid points
of every edge are refined together by one ``scipy.optimize.least_squares``
call per candidate (variable projection: the residual is the data minus its
projection onto ``{f(a·x + b), 1}``; the Jacobian is block-diagonal, so its
finite differences cost ``p + 1`` residual evaluations, ``p`` ≤ 2).

Selection rule (:func:`select`), per edge: the candidate with the lowest
``log10(1 − R² + 1e-12) + complexity_weight · complexity`` — each unit of
complexity must buy a ``10**complexity_weight``-fold smaller unexplained
variance (ties: the simpler one). ``"0"`` is never chosen for an edge marked
``alive`` (its score is above the pruning threshold), so a live edge is never
silently replaced by a constant; a choice with R² below ``r2_threshold`` is
flagged ``below_threshold``. R² = 1 − SS_res / SS_tot over the
samples; a candidate that cannot be evaluated on an edge's samples (domain,
overflow) gets R² = −inf and is never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .library import LIBRARY, Candidate, get_candidate

__all__ = ["CandidateFit", "EdgeChoice", "fit_candidates", "select", "evaluate"]

_TINY = 1e-300


@dataclass(frozen=True)
class CandidateFit:
    """One candidate fitted to E edges: ``params`` (E, 4) = (a, b, c, d), ``r2`` (E,)."""

    name: str
    params: np.ndarray
    r2: np.ndarray


@dataclass(frozen=True)
class EdgeChoice:
    """The function chosen for one edge, with every candidate's R²."""

    name: str
    params: tuple[float, float, float, float]
    r2: float
    complexity: int
    below_threshold: bool
    r2_all: dict[str, float | None]


def evaluate(candidate: Candidate, params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``c · f(a·x + b) + d``: params (..., 4), x (..., N) → (..., N)."""
    a, b, c, d = (params[..., k : k + 1] for k in range(4))
    with np.errstate(all="ignore"):
        return c * candidate.numpy(a * x + b) + d


# ---------------------------------------------------------------- linear part
def _project(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form (c, d) of y ≈ c f + d. f, y: (..., N) → c, d, residual (..., N)."""
    with np.errstate(all="ignore"):
        fm = f.mean(-1, keepdims=True)
        ym = y.mean(-1, keepdims=True)
        fc = f - fm
        var = (fc * fc).sum(-1, keepdims=True)
        c = np.where(var > _TINY, (fc * (y - ym)).sum(-1, keepdims=True) / np.maximum(var, _TINY), 0.0)
        d = ym - c * fm
        res = y - c * f - d
    return c[..., 0], d[..., 0], res


def _r2(res: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R² from residuals (..., N) and targets (..., N); −inf where non-finite."""
    with np.errstate(all="ignore"):
        ssr = (res * res).sum(-1)
        sst = ((y - y.mean(-1, keepdims=True)) ** 2).sum(-1)
        scale = (y * y).sum(-1) + 1.0
        r2 = np.where(sst > 1e-24 * scale, 1.0 - ssr / np.maximum(sst, _TINY),
                      np.where(ssr <= 1e-24 * scale, 1.0, 0.0))
    return np.where(np.isfinite(r2), r2, -np.inf)


# ------------------------------------------------------------------ searches
@dataclass(frozen=True)
class _Search:
    """How a candidate's nonlinear parameters θ map to (a, b) for each edge.

    ``grid`` (G, p) starting values of θ; ``to_ab(theta, lo, hi)``: θ (E, S, p),
    range (E, 1) → a, b (E, S).
    """

    grid: np.ndarray
    to_ab: object


def _half(lo, hi):
    return 0.5 * (lo + hi), np.maximum(0.5 * (hi - lo), 1e-12)


def _shift_ab(theta, lo, hi):
    mid, half = _half(lo, hi)
    return np.ones_like(theta[..., 0]), half * theta[..., 0] - mid


def _rate_ab(theta, lo, hi):
    _, half = _half(lo, hi)
    return theta[..., 0] / half, np.zeros_like(theta[..., 0])


def _wave_ab(theta, lo, hi):
    mid, half = _half(lo, hi)
    a = np.exp(theta[..., 0]) / half
    return a, theta[..., 1] - a * mid


def _side_ab(sign: float, domain: str):
    def to_ab(theta, lo, hi):
        _, half = _half(lo, hi)
        gap = half * np.exp(theta[..., 0])
        ones = np.ones_like(gap)
        if domain == "positive":       # u = ±x + b > 0 on [lo, hi]
            return (ones, gap - lo) if sign > 0 else (-ones, gap + hi)
        return (ones, gap - lo) if sign > 0 else (ones, -hi - gap)  # pole left / right of the range
    return to_ab


def _searches(candidate: Candidate) -> list[_Search]:
    if candidate.search == "shift":
        return [_Search(np.linspace(-3.0, 3.0, 25)[:, None], _shift_ab)]
    if candidate.search == "rate":
        rates = np.geomspace(0.05, 20.0, 20)
        return [_Search(np.concatenate([-rates[::-1], rates])[:, None], _rate_ab)]
    if candidate.search == "wave":
        width = np.pi if candidate.name == "sin" else 4.0
        log_a, shift = np.meshgrid(np.log(np.geomspace(0.1, 20.0, 16)), np.linspace(-width, width, 17),
                                   indexing="ij")
        return [_Search(np.stack([log_a.ravel(), shift.ravel()], -1), _wave_ab)]
    if candidate.search == "side":
        grid = np.log(np.geomspace(1e-3, 1e2, 30))[:, None]
        return [_Search(grid, _side_ab(+1.0, candidate.domain)),
                _Search(grid, _side_ab(-1.0, candidate.domain))]
    raise AssertionError(f"no search for {candidate.search}")  # our own invariant


def _residuals(candidate, theta, to_ab, x, y, lo, hi):
    """θ (E, S, p) → a, b, c, d (E, S) and residuals (E, S, N)."""
    with np.errstate(all="ignore"):
        a, b = to_ab(theta, lo, hi)
        f = candidate.numpy(a[..., None] * x[:, None, :] + b[..., None])
    bad = ~np.isfinite(f).all(-1)
    f = np.where(np.isfinite(f), f, 0.0)
    c, d, res = _project(f, y[:, None, :])
    res = np.where(bad[..., None], 1e150, res)
    return a, b, c, d, res


def _fit_searched(candidate: Candidate, x, y, lo, hi, n_starts: int):
    best_params = np.full((x.shape[0], 4), np.nan)
    best_r2 = np.full(x.shape[0], -np.inf)
    n_edges = x.shape[0]
    for search in _searches(candidate):
        grid = np.broadcast_to(search.grid, (n_edges, *search.grid.shape))     # (E, G, p)
        *_, res = _residuals(candidate, grid, search.to_ab, x, y, lo, hi)
        cost = (res * res).sum(-1)                                             # (E, G)
        starts = min(n_starts, grid.shape[1])
        order = np.argsort(cost, axis=1)[:, :starts]
        theta0 = np.take_along_axis(grid, order[..., None], axis=1)             # (E, S, p)
        theta = _refine(candidate, theta0, search.to_ab, x, y, lo, hi)
        a, b, c, d, res = _residuals(candidate, theta, search.to_ab, x, y, lo, hi)
        r2 = _r2(res, y[:, None, :])                                           # (E, S)
        pick = np.argmax(r2, axis=1)
        rows = np.arange(n_edges)
        r2_pick = r2[rows, pick]
        better = r2_pick > best_r2
        params = np.stack([a, b, c, d], -1)[rows, pick]
        best_params[better], best_r2[better] = params[better], r2_pick[better]
    return best_params, best_r2


def _refine(candidate, theta0, to_ab, x, y, lo, hi, max_iter: int = 100):
    """Levenberg–Marquardt on every (edge, start) problem at once.

    θ0 (E, S, p), p ≤ 2: central-difference Jacobians (E, S, N, p) and the
    damped p × p normal equations are solved for all problems together; each
    problem keeps its own damping and accepts only steps that lower its cost.
    """
    theta = theta0.copy()

    def residual(th):
        return _residuals(candidate, th, to_ab, x, y, lo, hi)[-1]

    res = residual(theta)
    cost = (res * res).sum(-1)                                             # (E, S)
    damping = np.full(cost.shape, 1e-3)
    p = theta.shape[-1]
    eye = np.eye(p)
    for _ in range(max_iter):
        jac = np.empty((*res.shape, p))
        for k in range(p):
            h = 1e-6 * (1.0 + np.abs(theta[..., k]))
            step = np.zeros_like(theta)
            step[..., k] = h
            jac[..., k] = (residual(theta + step) - residual(theta - step)) / (2 * h[..., None])
        jac = np.where(np.isfinite(jac), jac, 0.0)
        grad = np.einsum("esnp,esn->esp", jac, res)
        hess = np.einsum("esnp,esnq->espq", jac, jac)
        diag = np.einsum("espp->esp", hess)
        system = hess + (damping[..., None] * diag + 1e-30)[..., None] * eye
        with np.errstate(all="ignore"):
            delta = -np.linalg.solve(system, grad[..., None])[..., 0]
        delta = np.where(np.isfinite(delta), delta, 0.0)
        trial = theta + delta
        trial_res = residual(trial)
        trial_cost = (trial_res * trial_res).sum(-1)
        better = trial_cost < cost
        theta = np.where(better[..., None], trial, theta)
        res = np.where(better[..., None], trial_res, res)
        improvement = np.where(better, cost - trial_cost, 0.0)
        cost = np.where(better, trial_cost, cost)
        damping = np.clip(np.where(better, damping / 3, damping * 4), 1e-12, 1e12)
        done = (improvement <= 1e-15 * cost + 1e-300) & (~better | (np.abs(delta).max(-1) < 1e-13))
        if done.all():
            break
    return theta


# ----------------------------------------------------------------- closed form
def _fit_closed(candidate: Candidate, x, y, lo, hi):
    n_edges = x.shape[0]
    ones = np.ones(n_edges)
    if candidate.search == "const":
        d = y.mean(-1)
        params = np.stack([ones, 0 * ones, 0 * ones, d], -1)
        return params, _r2(y - d[:, None], y)
    if candidate.search == "linear":
        c, d, res = _project(x, y)
        return np.stack([ones, 0 * ones, c, d], -1), _r2(res, y)
    # quadratic: y ≈ p2 s² + p1 s + p0 with s = (x - mid)/half, then c (x + b)² + d
    mid, half = _half(lo[:, 0], hi[:, 0])
    s = (x - mid[:, None]) / half[:, None]
    design = np.stack([s * s, s, np.ones_like(s)], -1)                         # (E, N, 3)
    coef = np.stack([np.linalg.lstsq(design[e], y[e], rcond=None)[0] for e in range(n_edges)])
    p2, p1, p0 = coef[:, 0], coef[:, 1], coef[:, 2]
    res = y - (design @ coef[..., None])[..., 0]
    curved = np.abs(p2) > 1e-12 * (np.abs(coef).sum(-1) + 1e-300)
    with np.errstate(all="ignore"):
        vertex = np.where(curved, p1 / (2 * p2), 0.0)
    c = p2 / half**2
    b = half * vertex - mid
    d = p0 - p2 * vertex**2
    r2 = np.where(curved, _r2(res, y), -np.inf)
    return np.stack([ones, b, c, d], -1), r2


# ------------------------------------------------------------------- public
def fit_candidates(x: np.ndarray, y: np.ndarray, names: Sequence[str] | None = None,
                   n_starts: int = 3) -> dict[str, CandidateFit]:
    """Fit every candidate to every edge.

    Parameters
    ----------
    x, y : (E, N) each edge's input samples and activation values there.
    names : candidate names (default: the whole :data:`LIBRARY`).
    n_starts : grid points refined per edge and search branch.

    Returns
    -------
    {name: CandidateFit} with params (E, 4) in canonical form and R² (E,).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape or x.shape[1] < 3:
        raise ValueError(f"x and y must both have shape (edges, samples ≥ 3), got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("edge samples contain NaN or inf; the model produced non-finite activations")
    lo, hi = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
    fits = {}
    for name in names or tuple(LIBRARY):
        candidate = get_candidate(name)
        if candidate.closed_form:
            params, r2 = _fit_closed(candidate, x, y, lo, hi)
        else:
            params, r2 = _fit_searched(candidate, x, y, lo, hi, n_starts)
        fits[name] = CandidateFit(name, _canonical(candidate, params), r2)
    return fits


def _canonical(candidate: Candidate, params: np.ndarray) -> np.ndarray:
    params = params.copy()
    if candidate.name == "sin":
        flip = params[:, 2] < 0
        params[flip, 2] *= -1
        params[flip, 1] += np.pi
        params[:, 1] = np.pi - np.mod(np.pi - params[:, 1], 2 * np.pi)  # into (-π, π]
    return params


def select(fits: dict[str, CandidateFit], complexity_weight: float = 2.0, r2_threshold: float = 0.99,
           alive: np.ndarray | None = None) -> list[EdgeChoice]:
    """Apply the selection rule of the module docstring to each edge.

    ``alive`` (E,) bool: edges that must not become ``"0"`` (default: all).
    """
    first = next(iter(fits.values()))
    n_edges = first.r2.shape[0]
    alive = np.ones(n_edges, dtype=bool) if alive is None else np.asarray(alive, dtype=bool)
    choices = []
    for e in range(n_edges):
        allowed = [n for n in fits if np.isfinite(fits[n].r2[e]) and not (n == "0" and alive[e])]
        r2_all = {n: (float(fits[n].r2[e]) if np.isfinite(fits[n].r2[e]) else None) for n in fits}
        if not allowed:
            choices.append(EdgeChoice("none", (np.nan,) * 4, float("-inf"), -1, True, r2_all))
            continue

        def score(n: str) -> tuple[float, int]:
            unexplained = max(1.0 - float(fits[n].r2[e]), 0.0) + 1e-12
            return np.log10(unexplained) + complexity_weight * LIBRARY[n].complexity, LIBRARY[n].complexity

        name = min(allowed, key=score)
        r2 = float(fits[name].r2[e])
        params = tuple(float(v) for v in fits[name].params[e])
        choices.append(EdgeChoice(name, params, r2, LIBRARY[name].complexity, r2 < r2_threshold, r2_all))
    return choices
