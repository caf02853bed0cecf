"""Sparse regression of derivative estimates on candidate terms (our own; no pysindy).

Each equation's candidate fits (coefficients over the library and their relative residual):

* :func:`best_subsets` — every support of up to :data:`BEST_SUBSET_SIZE` terms, the best few of
  each size (a textbook law has 1–3 terms per equation; greedy paths miss them when the
  candidates are nearly collinear over one trajectory);
* :func:`forward_path` and :func:`backward_path` — stepwise paths up to :data:`MAX_TERMS` terms;
* :func:`stlsq` over the thresholds of :func:`threshold_path` (SINDy's STLSQ: ridge least
  squares on unit-RMS columns, terms below the threshold dropped and the rest refitted until the
  support stops changing; a joint model per distinct support).

:func:`tolerance_models` joins the equations' fits into models (at each tolerance, every
equation's fewest-term fit within it). :func:`select_model` chooses one of them by its
**trajectories**, not its derivative fit: each model is integrated (RK4) from the smoothed first
states over the training window, and the model kept is the one with the fewest terms whose
trajectory error is *admissible*::

    MSE_m ≤ σ̂² + KAPPA · max(MSE_best − σ̂², 0) + floor

σ̂² is the smoother's leave-one-out error (the noise the data carry), MSE_best the smallest error
on the path, ``floor`` :data:`RELATIVE_FLOOR` of the data's variance. Why not an information
criterion: a trajectory's errors are strongly correlated in time, so counting every point as
independent (BIC's N) rewards any term that absorbs a little of the derivative estimates' own
error (noise-free Duffing: 8 terms with trajectory MSE 5e-8 against the law's 4 with 2e-7, BIC
prefers the 8). The polish afterwards (:func:`kanode.symbolic.polish`) eliminates terms by
forecasting held-out points; it can remove terms but not add them, so erring towards more
terms here is the safe side. :func:`refine_equations` then lets each equation take
another of its fits (fewer terms and admissible, or the same count and a smaller error), and
:func:`union_of_ties` adds the terms of the other admissible models that are no longer.
A model whose trajectories blow up is never admissible.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sympy

from .export import Formula
from .polish import TermModel

__all__ = ["stlsq", "threshold_path", "best_subsets", "forward_path", "backward_path", "tolerance_models",
           "refine_equations", "union_of_ties", "admissible_limit", "select_model", "SparseModel", "KAPPA", "MAX_TERMS",
           "THRESHOLDS", "RIDGE", "RELATIVE_FLOOR"]

THRESHOLDS = tuple(float(v) for v in np.geomspace(1e-4, 1.0, 29))
"""The thresholds of the path: a term's share of its equation's derivative RMS."""

RIDGE = 1e-10
"""Ridge weight on the unit-RMS columns: it only resolves exact collinearity (``1/(1+x²) +
x²/(1+x²) = 1``) towards the minimum-norm solution."""

RELATIVE_FLOOR = 1e-6
"""Trajectory errors below this fraction of the data's variance count as equal (see the module docstring)."""

KAPPA = 10.0
"""A model is admissible when its trajectory error's excess over the noise is within this
factor of the best model's (module docstring)."""

MAX_ITERATIONS = 25
"""At most this many refits of one :func:`stlsq`."""

MAX_TERMS = 8
"""The stepwise paths stop at this many terms per equation, and STLSQ models with more are not scored."""

BEST_SUBSET_SIZE = 4
"""Every support of up to this many terms per equation is tried (:func:`best_subsets`), as long
as there are at most :data:`MAX_SUBSETS` of a size."""
BEST_SUBSET_KEEP = 3
MAX_SUBSETS = 100_000
"""The forward paths stop at this many terms per equation."""

TOLERANCES = tuple(float(v) for v in np.geomspace(1e-6, 0.3, 31))
"""Relative residuals of the derivative fit at which :func:`tolerance_models` cuts each forward path."""


def stlsq(library: np.ndarray, target: np.ndarray, threshold: float, ridge: float = RIDGE,
          max_iterations: int = MAX_ITERATIONS) -> np.ndarray:
    """Sequentially thresholded ridge least squares: ``library`` (N, K) candidate values,
    ``target`` (N,) derivative estimates → coefficients (K,) in the library's own units, zero
    outside the support. Columns that are zero on the data never enter."""
    norms = np.sqrt(np.mean(library**2, axis=0))                         # (K,)
    scale = float(np.sqrt(np.mean(target**2))) or 1.0
    usable = np.isfinite(norms) & (norms > 0)
    active = usable.copy()
    weights = np.zeros(library.shape[1])
    columns = np.where(usable[None], library / np.where(usable, norms, 1.0)[None], 0.0)  # (N, K)
    b = target / scale
    for _ in range(max_iterations):
        weights = np.zeros(library.shape[1])
        if not active.any():
            break
        a = columns[:, active]
        gram = a.T @ a / a.shape[0] + ridge * np.eye(a.shape[1])
        weights[active] = np.linalg.solve(gram, a.T @ b / a.shape[0])
        keep = active & (np.abs(weights) >= threshold)
        if (keep == active).all():
            break
        active = keep
    weights[~active] = 0.0
    return weights * scale / np.where(usable, norms, 1.0)


@dataclass
class SparseModel:
    """One model of the path: ``coefficients`` (dim, K) over the library's factors, the
    smallest ``threshold`` (or tolerance) that gave it and its trajectory ``mse`` (inf: blew up)."""

    coefficients: np.ndarray
    threshold: float
    mse: float = math.inf

    @property
    def n_terms(self) -> int:
        return int(np.count_nonzero(self.coefficients))

    def formula(self, factors: Sequence[sympy.Expr], state_names: Sequence[str]) -> Formula:
        rhs = tuple(sum((sympy.Float(float(c), 17) * f for c, f in zip(row, factors) if c != 0), sympy.Integer(0))
                    for row in self.coefficients)
        return Formula(tuple(state_names), rhs)


def threshold_path(library: np.ndarray, targets: np.ndarray,
                   thresholds: Sequence[float] = THRESHOLDS) -> list[SparseModel]:
    """:func:`stlsq` of every column of ``targets`` (N, dim) on ``library`` (N, K) at each
    threshold, one model per distinct support (largest support first)."""
    models: dict[tuple, SparseModel] = {}
    for threshold in sorted(thresholds):
        coefs = np.stack([stlsq(library, targets[:, k], threshold) for k in range(targets.shape[1])])
        key = tuple(map(tuple, coefs != 0))
        if key not in models:
            models[key] = SparseModel(coefs, threshold)
    return sorted(models.values(), key=lambda m: -m.n_terms)


def forward_path(library: np.ndarray, target: np.ndarray, max_terms: int) -> list[tuple[np.ndarray, float]]:
    """Forward stepwise regression (orthogonal least squares) of ``target`` (N,) on ``library``
    (N, K): at each step the candidate that most lowers the residual of the refitted model joins
    (a candidate already spanned by the chosen ones never does — collinear terms enter one at a
    time). Returns, for 1 … ``max_terms`` terms, (coefficients (K,) in the library's units,
    the residual RMS relative to the target's)."""
    norms = np.sqrt(np.mean(library**2, axis=0))                           # (K,)
    usable = np.isfinite(norms) & (norms > 0)
    columns = np.where(usable[None], library / np.where(usable, norms, 1.0)[None], 0.0)   # (N, K)
    scale = float(np.sqrt(np.mean(target**2))) or 1.0
    residual = target / scale                                               # (N,)
    free = columns.copy()                                                   # the columns orthogonal to the chosen
    chosen: list[int] = []
    out = []
    for _ in range(min(max_terms, int(usable.sum()))):
        length = np.sum(free**2, axis=0)                                   # (K,)
        alive = usable & (length > 1e-10 * columns.shape[0])
        alive[chosen] = False
        if not alive.any():
            break
        gain = np.where(alive, (free.T @ residual) ** 2 / np.where(alive, length, 1.0), -1.0)
        j = int(np.argmax(gain))
        q = free[:, j] / np.sqrt(length[j])
        residual = residual - q * (q @ residual)
        free = free - np.outer(q, q @ free)
        chosen.append(j)
        weights = np.linalg.lstsq(columns[:, chosen], target / scale, rcond=None)[0]
        coef = np.zeros(library.shape[1])
        coef[chosen] = weights * scale / norms[chosen]
        out.append((coef, float(np.sqrt(np.mean(residual**2)))))
    return out


def best_subsets(library: np.ndarray, target: np.ndarray, max_size: int = BEST_SUBSET_SIZE,
                 keep: int = BEST_SUBSET_KEEP, max_subsets: int = MAX_SUBSETS) -> list[tuple[np.ndarray, float]]:
    """Exhaustive search: for each size 1 … ``max_size`` (fewer when the number of subsets of a
    size passes ``max_subsets``), the ``keep`` subsets of the usable candidates whose least-squares
    fit of ``target`` (N,) on ``library`` (N, K) leaves the smallest residual. Returns
    (coefficients (K,), relative residual) for each, size by size."""
    norms = np.sqrt(np.mean(library**2, axis=0))                           # (K,)
    usable = np.flatnonzero(np.isfinite(norms) & (norms > 0))
    columns = library[:, usable] / norms[usable]                            # (N, U)
    scale = float(np.sqrt(np.mean(target**2))) or 1.0
    b = target / scale
    gram = columns.T @ columns / b.size                                     # (U, U)
    moment = columns.T @ b / b.size                                         # (U,)
    total = float(b @ b / b.size)
    out = []
    for size in range(1, max_size + 1):
        if math.comb(usable.size, size) > max_subsets:
            break
        subsets = np.array(list(itertools.combinations(range(usable.size), size)))   # (M, size)
        g = gram[subsets[:, :, None], subsets[:, None, :]] + RIDGE * np.eye(size)     # (M, size, size)
        c = moment[subsets]                                                           # (M, size)
        with np.errstate(all="ignore"):
            w = np.linalg.solve(g, c[..., None])[..., 0]                               # (M, size)
            rss = total - np.sum(c * w, axis=1)                                       # (M,)
        rss = np.where(np.isfinite(rss), rss, np.inf)
        for m in np.argsort(rss)[:keep]:
            coef = np.zeros(library.shape[1])
            coef[usable[subsets[m]]] = w[m] * scale / norms[usable[subsets[m]]]
            out.append((coef, float(np.sqrt(max(rss[m], 0.0)))))
    return out


def backward_path(library: np.ndarray, target: np.ndarray, max_terms: int) -> list[tuple[np.ndarray, float]]:
    """Backward elimination of ``target`` (N,) on ``library`` (N, K): from every usable
    candidate, remove the term whose removal raises the least-squares residual least
    (``w_j² / (G⁻¹)_jj`` on unit-RMS columns: a term spanned by the others goes first), refit,
    repeat. Returns the fits of ``max_terms`` … 1 terms as (coefficients (K,), relative residual)."""
    norms = np.sqrt(np.mean(library**2, axis=0))                           # (K,)
    usable = np.isfinite(norms) & (norms > 0)
    columns = np.where(usable[None], library / np.where(usable, norms, 1.0)[None], 0.0)   # (N, K)
    scale = float(np.sqrt(np.mean(target**2))) or 1.0
    b = target / scale
    active = list(np.flatnonzero(usable))
    out = []
    while active:
        a = columns[:, active]
        gram_inv = np.linalg.pinv(a.T @ a + RIDGE * a.shape[0] * np.eye(len(active)))
        weights = gram_inv @ (a.T @ b)
        if len(active) <= max_terms:
            coef = np.zeros(library.shape[1])
            coef[active] = weights * scale / norms[active]
            out.append((coef, float(np.sqrt(np.mean((b - a @ weights) ** 2)))))
        active.pop(int(np.argmin(weights**2 / np.maximum(np.diag(gram_inv), 1e-300))))
    return out


def tolerance_models(paths: Sequence[list[tuple[np.ndarray, float]]],
                     tolerances: Sequence[float] = TOLERANCES) -> list[SparseModel]:
    """Joint models from each equation's fits (``paths[e]``: (coefficients (K,), relative
    residual), e.g. :func:`forward_path` and :func:`backward_path` together): at each tolerance τ,
    every equation takes its fewest-term fit whose relative residual is at most τ (its best fit if
    none is); one model per distinct support. ``SparseModel.threshold`` holds τ."""
    models: dict[tuple, SparseModel] = {}
    for tau in sorted(tolerances):
        rows = []
        for path in paths:
            fits = [(np.count_nonzero(coef), rel, i) for i, (coef, rel) in enumerate(path) if rel <= tau]
            best = min(fits)[2] if fits else min(range(len(path)), key=lambda i: path[i][1])
            rows.append(path[best][0])
        coefs = np.stack(rows)
        key = tuple(map(tuple, coefs != 0))
        if key not in models:
            models[key] = SparseModel(coefs, tau)
    return sorted(models.values(), key=lambda m: -m.n_terms)


def _trajectory_mse(coefficients: np.ndarray, factors: Sequence[sympy.Expr], state_names: Sequence[str],
                    t: np.ndarray, y0: np.ndarray, target: np.ndarray) -> float:
    """MSE of the model's RK4 trajectories from ``y0`` (n_traj, dim) against ``target``
    (n_t, n_traj, dim); inf when they blow up."""
    model = SparseModel(coefficients, 0.0)
    if model.n_terms == 0:
        pred = np.broadcast_to(y0, target.shape)
    else:
        term_model = TermModel(model.formula(factors, state_names))
        with np.errstate(all="ignore"):
            pred = term_model.trajectories(term_model.theta[None], y0, t, float(np.diff(t).min()) / 2)[0]
    with np.errstate(all="ignore"):
        mse = float(np.mean((pred - target) ** 2))
    return mse if math.isfinite(mse) else math.inf


def admissible_limit(mses: Sequence[float], noise: float, floor: float) -> float:
    """The largest admissible trajectory error (module docstring): ``noise`` σ̂², ``floor``
    absolute. inf-only ``mses`` give ``-inf`` (nothing is admissible)."""
    best = min(mses, default=math.inf)
    if not math.isfinite(best):
        return -math.inf
    return noise + KAPPA * max(best - noise, 0.0) + floor


def _rank(model: SparseModel, limit: float) -> tuple:
    """Order of preference: admissible before not; then fewer terms; then smaller error."""
    ok = model.mse <= limit
    return (not ok, model.n_terms if ok else 0, model.mse)


def refine_equations(model: SparseModel, options: Sequence[Sequence[np.ndarray]], factors: Sequence[sympy.Expr],
                     state_names: Sequence[str], t: np.ndarray, y0: np.ndarray, observed: np.ndarray,
                     limit: float, sweeps: int = 2) -> SparseModel:
    """Coordinate descent: each equation in turn takes whichever of its ``options``
    (coefficient rows (K,), e.g. its forward path) the model prefers (:func:`_rank` with the
    admissible ``limit``), the other equations held, for at most ``sweeps`` passes. Returns the
    preferred model (a new one if it changed). ``observed`` (n_traj, n_t, dim)."""
    target = observed.transpose(1, 0, 2)
    best = SparseModel(model.coefficients.copy(), model.threshold, model.mse)
    for _ in range(sweeps):
        changed = False
        for e, rows in enumerate(options):
            for row in rows:
                if np.array_equal(row != 0, best.coefficients[e] != 0):
                    continue
                trial = best.coefficients.copy()
                trial[e] = row
                if np.count_nonzero(trial) > best.n_terms and best.mse <= limit:
                    continue   # it cannot be preferred; skip its integration
                candidate = SparseModel(trial, best.threshold,
                                        _trajectory_mse(trial, factors, state_names, t, y0, target))
                if _rank(candidate, limit) < _rank(best, limit):
                    best, changed = candidate, True
        if not changed:
            break
    return best


def union_of_ties(models: Sequence[SparseModel], chosen: SparseModel, limit: float) -> SparseModel:
    """The chosen model with the terms of every other admissible model that has no more terms
    than it (per equation, the union of their supports; a term's coefficient from the first
    model that has it). Among equally short admissible models the trajectory error of
    derivative-fitted coefficients does not tell the law from a look-alike (noisy Lotka-Volterra:
    ``y' ∝ x²y, xy/(1 + x²)`` against the law's ``y, xy``, 0.078 against 0.090); the polish,
    which refits them through the trajectories and forecasts, does. Returns ``chosen`` itself
    when there is nothing to add."""
    ties = [m for m in models if m.mse <= limit and m.n_terms <= chosen.n_terms]
    coefficients = chosen.coefficients.copy()
    for model in ties:
        new = (coefficients == 0) & (model.coefficients != 0)
        coefficients[new] = model.coefficients[new]
    if np.array_equal(coefficients != 0, chosen.coefficients != 0):
        return chosen
    return SparseModel(coefficients, chosen.threshold)


def select_model(models: list[SparseModel], factors: Sequence[sympy.Expr], state_names: Sequence[str],
                 t: np.ndarray, y0: np.ndarray, observed: np.ndarray, noise: float,
                 floor: float) -> tuple[int, float]:
    """Score every model by its trajectories (sets ``mse``) and return (the index of the
    preferred one, the admissible limit) (module docstring). ``t`` (n_t,), ``y0`` (n_traj, dim)
    the start, ``observed`` (n_traj, n_t, dim) the data the trajectories are compared with."""
    target = observed.transpose(1, 0, 2)                                  # (n_t, n_traj, dim)
    for model in models:
        model.mse = _trajectory_mse(model.coefficients, factors, state_names, t, y0, target)
    limit = admissible_limit([m.mse for m in models], noise, floor)
    return min(range(len(models)), key=lambda k: _rank(models[k], limit)), limit
