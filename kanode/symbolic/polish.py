"""Fine-tune the constants of an exported formula through the ODE loss.

Every term of the expanded formula gets its coefficient fine-tuned through
the trajectory loss — the MSE of the formula's own trajectories against the
training window, minimised by least squares over the coefficients, never by
regression on derivatives —; then the terms below the drop threshold of
:func:`kanode.symbolic.export.simplify` are removed and the rest refitted,
until the set of terms stops changing (sequential thresholding, as SINDy's
STLSQ, but on the ODE loss); then terms are eliminated by BIC. A small ridge
penalty on the coefficients keeps cancelling combinations of large
coefficients out of that selection (:func:`refit`).

The trajectories are integrated by classic RK4 at half the data's finest
sampling interval, for all coefficient vectors of a finite-difference
Jacobian at once (one batched solve per Jacobian).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import sympy
from scipy.optimize import least_squares

from kanode.data import FitData

from .export import Formula, simplify, terms

__all__ = ["TermModel", "polish", "refit"]


class TermModel:
    """``f_o(y) = Σ_k θ_{o,k} m_{o,k}(y)``: coefficients θ of fixed factors m (numpy)."""

    def __init__(self, formula: Formula) -> None:
        self.state_names = formula.state_names
        self.symbols = formula.symbols
        self.factors: list[list[sympy.Expr]] = []
        self._fns = []
        coefs: list[float] = []
        for expr in formula.rhs:
            parts = [(c, f) for c, f in terms(expr) if c != 0.0]
            self.factors.append([f for _, f in parts])
            self._fns.append([sympy.lambdify(self.symbols, f, modules="numpy") for _, f in parts])
            coefs += [c for c, _ in parts]
        self.theta = np.array(coefs, dtype=np.float64)

    @property
    def sizes(self) -> list[int]:
        return [len(f) for f in self.factors]

    def rhs(self, theta: np.ndarray, y: np.ndarray) -> np.ndarray:
        """theta (B, n_theta), y (B, ..., dim) → (B, ..., dim)."""
        cols = [y[..., k] for k in range(y.shape[-1])]
        out, start = [], 0
        extra = (1,) * (y.ndim - 2)
        for fns in self._fns:
            total = np.zeros(y.shape[:-1])
            for k, fn in enumerate(fns):
                total = total + theta[:, start + k].reshape(-1, *extra) * np.broadcast_to(fn(*cols), total.shape)
            start += len(fns)
            out.append(total)
        return np.stack(out, axis=-1)

    def trajectories(self, theta: np.ndarray, y0: np.ndarray, t: np.ndarray, step: float) -> np.ndarray:
        """RK4 for every row of theta (B, n_theta) from y0 (n_traj, dim), or from its own
        y0 (B, n_traj, dim) → (B, n_t, n_traj, dim)."""
        y = np.broadcast_to(y0, (theta.shape[0], *y0.shape[-2:])).copy()
        out = [y]
        with np.errstate(all="ignore"):
            for t0, t1 in zip(t[:-1], t[1:]):
                n = max(1, int(np.ceil((t1 - t0) / step - 1e-9)))
                h = (t1 - t0) / n
                for _ in range(n):
                    k1 = self.rhs(theta, y)
                    k2 = self.rhs(theta, y + 0.5 * h * k1)
                    k3 = self.rhs(theta, y + 0.5 * h * k2)
                    k4 = self.rhs(theta, y + h * k3)
                    y = y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
                out.append(y)
        return np.stack(out, axis=1)

    def formula(self) -> Formula:
        rhs, start = [], 0
        for factors in self.factors:
            coefs = self.theta[start : start + len(factors)]
            rhs.append(sum((sympy.Float(float(c), 17) * f for c, f in zip(coefs, factors)), sympy.Integer(0)))
            start += len(factors)
        return Formula(self.state_names, tuple(rhs), self.symbols)


def _least_squares(residuals: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, max_nfev: int) -> Any:
    """scipy's trust-region least squares with a central-difference Jacobian evaluated as one batch:
    ``residuals`` maps (B, n) unknowns to (B, m) residuals."""
    def fun(x: np.ndarray) -> np.ndarray:
        return residuals(x[None])[0]

    def jac(x: np.ndarray) -> np.ndarray:
        h = 1e-6 * np.maximum(np.abs(x), 1e-3)
        res = residuals(np.concatenate([x[None] + np.diag(h), x[None] - np.diag(h)]))
        return ((res[: x.size] - res[x.size :]) / (2 * h[:, None])).T

    return least_squares(fun, x0.copy(), jac=jac, method="trf", x_scale="jac",
                         max_nfev=max_nfev, ftol=1e-15, xtol=1e-15, gtol=1e-15)


def _bounded(res: np.ndarray) -> np.ndarray:
    """(B, m) residuals with blown-up rows as large, finite ones (the trust region then shrinks)."""
    res[~np.isfinite(res).all(axis=1)] = 1e3
    return np.clip(res, -1e3, 1e3)


def refit(model: TermModel, data: FitData, max_nfev: int = 40, ridge: float = 0.0) -> float:
    """Least squares of the model's trajectories against the training window (in place); returns the
    MSE of the trajectories (the ridge penalty not included).

    The unknowns are the coefficients *and* the trajectories' initial states
    (started at the first observations): with noisy data the first
    observation is not the true initial state, and a trajectory started from
    it stays off along the whole window, which the coefficients would
    otherwise bend to absorb (spurious terms). Noise-free, the initial states
    stay where they are.

    When the starting formula's trajectories blow up on the window, the
    horizon grows in stages (the first 6 points, a quarter, half, all of the
    window), so it is first fitted where they do not; a trajectory that still blows up counts as a large
    residual, so the trust region shrinks instead of the fit aborting.

    ``ridge`` > 0 adds ``ridge · n · Σ_k (θ_k · rms_k · T)²`` to the sum of squares (n residuals,
    rms_k the RMS of term k's factor over the window's states, T the window's length: θ_k rms_k T
    is how far term k moves a state over the window). Over a few trajectories that stay close to
    one orbit, combinations of terms that nearly vanish on the visited states (large coefficients
    that cancel) cost the trajectory fit almost nothing; the penalty rules them out, at a bias that
    the unpenalised refit of :func:`polish`'s last step removes.
    """
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge}")
    t_all = data.t_train.double().numpy()
    target_all = data.y_train.double().numpy().transpose(1, 0, 2)           # (n_t, n_traj, dim)
    step = float(np.diff(t_all).min()) / 2
    n_t, n_theta, shape0 = t_all.size, model.theta.size, target_all.shape[1:]
    result_fun = None
    full = model.trajectories(model.theta[None], target_all[0], t_all, step)
    stable = bool(np.isfinite(full).all() and np.abs(full - target_all).max() < 1e3)
    horizons = [n_t] if stable else sorted({min(n_t, 6), max(2, n_t // 4), max(2, n_t // 2), n_t})
    unknowns = np.concatenate([model.theta, target_all[0].ravel()])       # (n_theta + n_traj·dim,)
    n_res = target_all.size
    penalty = np.sqrt(ridge * n_res) * _term_rms(model, target_all) * (t_all[-1] - t_all[0])    # (n_theta,)
    for horizon in horizons:
        t, target = t_all[:horizon], target_all[:horizon]

        def residuals(batch: np.ndarray, t=t, target=target) -> np.ndarray:
            y0 = batch[:, n_theta:].reshape(-1, *shape0)
            pred = model.trajectories(batch[:, :n_theta], y0, t, step)       # (B, n_t, n_traj, dim)
            res = _bounded((pred - target).reshape(batch.shape[0], -1))
            return np.concatenate([res, penalty * batch[:, :n_theta]], axis=1) if ridge else res

        if n_theta == 0:
            return float(np.mean(residuals(unknowns[None])[0] ** 2))
        result = _least_squares(residuals, unknowns, max_nfev)
        unknowns, result_fun = result.x, result.fun
    model.theta = unknowns[:n_theta]
    return float(np.mean(result_fun[: n_res] ** 2))


def _term_rms(model: TermModel, states: np.ndarray) -> np.ndarray:
    """(n_theta,) RMS of each term's factor over ``states`` (..., dim): row k of the batch is
    the field with θ = e_k, zero in every equation but the term's own."""
    fields = model.rhs(np.eye(model.theta.size), states.reshape(1, -1, states.shape[-1]))  # (n_theta, N, dim)
    return np.sqrt(np.mean(fields**2, axis=(1, 2)) * len(model.sizes))


def _support(formula: Formula) -> list[set[str]]:
    return [{str(f) for _, f in terms(e)} for e in formula.rhs]


def _without(formula: Formula, equation: int, factors: tuple[sympy.Expr, ...]) -> Formula:
    rhs = list(formula.rhs)
    rhs[equation] = sum((sympy.Float(c, 17) * f for c, f in terms(rhs[equation]) if f not in factors),
                        sympy.Integer(0))
    return Formula(formula.state_names, tuple(rhs), formula.symbols)


def _removable(formula: Formula, size: int) -> list[tuple[int, tuple[sympy.Expr, ...]]]:
    """(equation, factors) for every set of ``size`` terms of one equation that leaves it a term."""
    out = []
    for k, expr in enumerate(formula.rhs):
        factors = [f for _, f in terms(expr)]
        if len(factors) > size:
            out += [(k, group) for group in itertools.combinations(factors, size)]
    return out


def _bic(mse: float, n: int, k: int, floor: float) -> float:
    return n * np.log(max(mse, floor)) + k * np.log(n)


RIDGE = 1e-6
"""Default ``ridge`` of :func:`polish`'s term selection (see :func:`refit`): a term's penalty is
that of a trajectory error of 1e-3 × how far the term moves a state over the window."""


def polish(formula: Formula, data: FitData, states: np.ndarray, drop_threshold: float = 0.01,
           digits: int = 4, rounds: int = 4, max_nfev: int = 40, ridge: float = RIDGE) -> tuple[Formula, int]:
    """Refit, drop, repeat; then backward elimination by BIC. Returns the formula and the refits run.

    1. refit every coefficient, drop the terms below ``drop_threshold``, until
       the terms stop changing (at most ``rounds`` refits);
    2. then backward elimination: refit without each remaining term in turn and
       keep the removal with the lowest Bayesian information criterion of the
       trajectory fit, ``n log(MSE) + k log(n)`` (n residuals, k terms, MSE
       floored at 1e-12 of the data's mean square), while it does not increase;
       when no single removal helps, try removing two terms of one equation
       together (two nearly collinear terms, such as y and y² over a small
       range, can only leave together).

    The refits of both steps carry the ``ridge`` penalty of :func:`refit` (the BIC uses the
    trajectory MSE alone); the chosen terms are refitted without it at the end.
    ``states`` (n, dim) are the states of the drop rule; ``max_nfev`` bounds
    the least-squares iterations of each refit.
    """
    current = simplify(formula, states, drop_threshold=0.0, digits=17)   # round 1 refits every term
    done = 0
    mse = float("inf")
    for done in range(1, rounds + 1):
        model = TermModel(current)
        mse = refit(model, data, max_nfev=max_nfev, ridge=ridge)
        refined = simplify(model.formula(), states, drop_threshold, digits=17)
        stable = _support(refined) == _support(current)
        current = refined
        if stable:
            break
    n = int(data.y_train.numel())
    floor = 1e-12 * float(data.y_train.double().pow(2).mean())
    model = TermModel(current)
    mse = refit(model, data, max_nfev=max_nfev, ridge=ridge)
    current = model.formula()
    bic = _bic(mse, n, model.theta.size, floor)
    size = 1
    while size <= 2:  # backward elimination, one term at a time, then pairs of one equation
        trials = []
        for equation, factors in _removable(current, size):
            trial = TermModel(_without(current, equation, factors))
            trial_mse = refit(trial, data, max_nfev=max_nfev, ridge=ridge)
            done += 1
            trials.append((_bic(trial_mse, n, trial.theta.size, floor), trial))
        best = min(trials, key=lambda bt: bt[0], default=None)
        if best is None or not best[0] <= bic:
            size += 1
            continue
        bic, current, size = best[0], best[1].formula(), 1
    if ridge:
        model = TermModel(current)
        refit(model, data, max_nfev=max_nfev)
        current, done = model.formula(), done + 1
    return simplify(current, states, drop_threshold=0.0, digits=digits), done
