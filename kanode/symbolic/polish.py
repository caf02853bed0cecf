"""Fine-tune the constants of an exported formula through the ODE loss.

Every term of the expanded formula gets its coefficient fine-tuned through
the trajectory loss — the MSE of the formula's own trajectories against the
training window, minimised by least squares over the coefficients, never by
regression on derivatives —; then the terms below the drop threshold of
:func:`kanode.symbolic.export.simplify` are removed and the rest refitted,
until the set of terms stops changing (sequential thresholding, as SINDy's
STLSQ, but on the ODE loss); then terms are eliminated one by one, and the
support kept is the smallest that forecasts held-out last points of the
window as well as the best (:func:`polish`). A small ridge penalty on the
coefficients keeps cancelling combinations of large coefficients out of that
selection (:func:`refit`).

The trajectories are integrated by classic RK4 at half the data's finest
sampling interval, for all coefficient vectors of a finite-difference
Jacobian at once (one batched solve per Jacobian).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy
from scipy.optimize import least_squares

from kanode.data import FitData

from .export import Formula, simplify, terms

__all__ = ["TermModel", "Polished", "SelectionStep", "polish", "refit", "holdout_points", "fit_initial_states"]


class TermModel:
    """``f_o(y) = Σ_k θ_{o,k} m_{o,k}(y)``: coefficients θ of fixed factors m (numpy).

    ``theta`` (n_theta,) are the coefficients; ``y0`` (n_traj, dim) the trajectories' initial
    states that the last :func:`refit` fitted with them (None before any refit).
    """

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
        self.y0: np.ndarray | None = None

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
    """Least squares of the model's trajectories against the training window (in place: ``theta``
    and ``y0``); returns the MSE of the trajectories (the ridge penalty not included).

    The unknowns are the coefficients *and* the trajectories' initial states
    (started at the first observations, or at ``model.y0`` when a refit set them): with noisy data the first
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
    y0 = target_all[0] if model.y0 is None or model.y0.shape != shape0 else model.y0
    full = model.trajectories(model.theta[None], y0, t_all, step)
    stable = bool(np.isfinite(full).all() and np.abs(full - target_all).max() < 1e3)
    horizons = [n_t] if stable else sorted({min(n_t, 6), max(2, n_t // 4), max(2, n_t // 2), n_t})
    unknowns = np.concatenate([model.theta, y0.ravel()])                  # (n_theta + n_traj·dim,)
    n_res = target_all.size
    penalty = np.sqrt(ridge * n_res) * _term_rms(model, target_all) * (t_all[-1] - t_all[0])    # (n_theta,)
    for horizon in horizons:
        t, target = t_all[:horizon], target_all[:horizon]

        def residuals(batch: np.ndarray, t=t, target=target) -> np.ndarray:
            y0 = batch[:, n_theta:].reshape(-1, *shape0)
            pred = model.trajectories(batch[:, :n_theta], y0, t, step)       # (B, n_t, n_traj, dim)
            res = _bounded((pred - target).reshape(batch.shape[0], -1))
            return np.concatenate([res, penalty * batch[:, :n_theta]], axis=1) if ridge else res

        if n_theta == 0:   # nothing to fit (a formula that is 0): its trajectories stay at y0
            model.y0 = y0
            return float(np.mean(residuals(unknowns[None])[0] ** 2))
        result = _least_squares(residuals, unknowns, max_nfev)
        unknowns, result_fun = result.x, result.fun
    model.theta = unknowns[:n_theta]
    model.y0 = unknowns[n_theta:].reshape(shape0)
    return float(np.mean(result_fun[: n_res] ** 2))


def _term_rms(model: TermModel, states: np.ndarray) -> np.ndarray:
    """(n_theta,) RMS of each term's factor over ``states`` (..., dim): row k of the batch is
    the field with θ = e_k, zero in every equation but the term's own."""
    fields = model.rhs(np.eye(model.theta.size), states.reshape(1, -1, states.shape[-1]))  # (n_theta, N, dim)
    return np.sqrt(np.mean(fields**2, axis=(1, 2)) * len(model.sizes))


def _support(formula: Formula) -> list[set[str]]:
    return [{str(f) for _, f in terms(e)} for e in formula.rhs]


def _without(formula: Formula, equation: int, factor: sympy.Expr) -> Formula:
    rhs = list(formula.rhs)
    rhs[equation] = sum((sympy.Float(c, 17) * f for c, f in terms(rhs[equation]) if f != factor),
                        sympy.Integer(0))
    return Formula(formula.state_names, tuple(rhs), formula.symbols)


def _removable(formula: Formula) -> list[tuple[int, sympy.Expr]]:
    """(equation, factor) for every term whose removal leaves its equation a term."""
    out = []
    for k, expr in enumerate(formula.rhs):
        factors = [f for _, f in terms(expr)]
        if len(factors) > 1:
            out += [(k, f) for f in factors]
    return out


FULL_SEARCH_TERMS = 12
"""Up to this many terms (a full quadratic in two states), each elimination step tries every
removal; above it, only the :data:`SCREENED` terms of smallest RMS contribution over the training
states (each trial is a refit, and a quartic of two states has 26 terms)."""

SCREENED = 4


def _screened(model: TermModel, removable: list[tuple[int, sympy.Expr]],
              states: np.ndarray) -> list[tuple[int, sympy.Expr]]:
    """``removable`` itself while the model has at most :data:`FULL_SEARCH_TERMS` terms, else the
    :data:`SCREENED` of them whose terms contribute least (|θ_k| × RMS of the factor on ``states``)."""
    if model.theta.size <= FULL_SEARCH_TERMS:
        return removable
    contribution = np.abs(model.theta) * _term_rms(model, states)          # (n_theta,)
    offsets = np.cumsum([0, *model.sizes])
    index = {(k, f): offsets[k] + j for k, factors in enumerate(model.factors) for j, f in enumerate(factors)}
    return sorted(removable, key=lambda ef: contribution[index[ef]] if ef in index else 0.0)[:SCREENED]


RIDGE = 1e-6
"""Default ``ridge`` of :func:`polish`'s term selection (see :func:`refit`): a term's penalty is
that of a trajectory error of 1e-3 × how far the term moves a state over the window."""

HOLDOUT_FRACTION = 0.25
"""Default share of each training trajectory's last points that :func:`polish`'s term selection
forecasts (fitting the terms on the points before them)."""

MIN_FIT_POINTS = 4
"""The term selection fits on at least this many points per trajectory (and forecasts at least one)."""

FORECAST_FLOOR = 1e-10
"""Forecast errors below this fraction of the data's mean square count as equal (the precision of
the refits; far below what rounding the constants to 4 digits moves a trajectory)."""


def holdout_points(n_train: int, fraction: float = HOLDOUT_FRACTION) -> int:
    """Points per trajectory that the term selection forecasts: ``round(fraction · n_train)``, at
    least 1, leaving at least :data:`MIN_FIT_POINTS` to fit on. Raises ValueError when
    ``n_train`` is too short for both."""
    if not 0 < fraction < 1:
        raise ValueError(f"the hold-out fraction must lie in (0, 1), got {fraction}")
    k = max(1, round(fraction * n_train))
    if n_train - k < MIN_FIT_POINTS:
        raise ValueError(f"the training window has {n_train} points per trajectory; the term selection "
                         f"needs at least {MIN_FIT_POINTS + 1} (it fits the terms on the first ones and "
                         "forecasts the last ones); give a longer window or --polish-rounds 0")
    return k


@dataclass
class SelectionStep:
    """One support on the backward-elimination path of :func:`polish`."""

    n_terms: int
    formula: dict[str, str]      # the support with the fit-part coefficients
    fit_mse: float               # trajectory MSE on the points the coefficients were fitted to
    forecast_mse: float          # MSE of the forecast of the held-out last points (inf: blew up)
    forecast_se: float           # standard error of forecast_mse (over the held-out squared errors)


@dataclass
class Polished:
    """What :func:`polish` returns.

    ``initial_states`` (n_traj, dim) are the training trajectories' initial states fitted with
    the final coefficients (the formula's own trajectories start there); ``terms_from`` names
    the step that last changed the terms: ``"export"`` (neither did), ``"polish-threshold"``
    (the refit-and-drop rounds) or ``"polish-selection"`` (the forecast-validated elimination);
    ``path`` the supports the selection compared and ``chosen`` the index of the one it kept.
    """

    formula: Formula
    initial_states: np.ndarray
    mse: float
    refits: int
    terms_from: str
    holdout: int
    path: list[SelectionStep] = field(default_factory=list)
    chosen: int = 0


def _forecast(model: TermModel, data: FitData, holdout: int) -> tuple[float, float]:
    """(MSE, its standard error) of the model's trajectories from its fitted initial states
    against the last ``holdout`` points of every training trajectory."""
    t = data.t_train.double().numpy()
    target = data.y_train.double().numpy().transpose(1, 0, 2)[-holdout:]    # (holdout, n_traj, dim)
    with np.errstate(all="ignore"):
        pred = model.trajectories(model.theta[None], model.y0, t, float(np.diff(t).min()) / 2)[0, -holdout:]
        sq = ((pred - target) ** 2).ravel()
    if not np.isfinite(sq).all():
        return math.inf, math.inf
    return float(sq.mean()), float(sq.std() / np.sqrt(sq.size))


def polish(formula: Formula, data: FitData, states: np.ndarray, drop_threshold: float = 0.01,
           digits: int = 4, rounds: int = 4, max_nfev: int = 40, ridge: float = RIDGE,
           holdout_fraction: float = HOLDOUT_FRACTION, from_zero: bool = False) -> Polished:
    """Refit, drop, repeat; then choose the terms by forecasting held-out points; refit on all.

    The last ``K = holdout_points(n_train, holdout_fraction)`` points of every training
    trajectory are held out while the terms are chosen:

    1. on the first ``n_train − K`` points, refit every coefficient (and the initial states),
       drop the terms below ``drop_threshold``, until the terms stop changing (at most
       ``rounds`` refits);
    2. backward elimination path: remove the term whose removal leaves the lowest trajectory
       MSE on those points, refit, and so on down to one term per equation;
    3. each support of the path forecasts the K held-out points (its trajectories from its
       fitted initial states, through the whole window); the smallest support whose forecast
       MSE is within one standard error of the best (the one-standard-error rule; errors below
       :data:`FORECAST_FLOOR` of the data's mean square count as equal) is kept;
    4. its coefficients and initial states are refitted on all ``n_train`` points and rounded
       to ``digits``.

    Why a forecast and not an information criterion: on 16 yearly hare–lynx counts (32 numbers)
    the 9-term quadratic on the elimination path fits the training years with MSE 3.3 against
    16 for the 4-term Lotka–Volterra support — a ratio no in-sample penalty of the usual size
    (BIC: log n = 3.5 per term; AICc: about 2–5) outweighs — and forecasts the held-out years
    worse. The refits of steps 1–2 carry the ``ridge`` penalty of :func:`refit` (it decides
    which term leaves); each support of step 3 is refitted without it before it forecasts, so
    the comparison does not carry its bias, and so is the final refit.
    ``states`` (n, dim) are the states of the drop rule; ``max_nfev`` bounds the least-squares
    iterations of each refit. ``from_zero``: the first refit starts every coefficient of
    ``formula``'s terms at 0 instead of at its value (only the terms are taken from it; the
    ablation's "all library terms at zero", :func:`kanode.symbolic.ablation.polish_from`).
    """
    holdout = holdout_points(data.n_train, holdout_fraction)
    fit_part = dataclasses.replace(data, n_train=data.n_train - holdout)
    exported = _support(simplify(formula, states, 0.0 if from_zero else drop_threshold, digits=17))
    current = simplify(formula, states, drop_threshold=0.0, digits=17)   # round 1 refits every term
    done, y0 = 0, None
    for done in range(1, rounds + 1):
        model = TermModel(current)
        model.y0 = y0
        if from_zero and done == 1:
            model.theta = np.zeros_like(model.theta)
        refit(model, fit_part, max_nfev=max_nfev, ridge=ridge)
        y0 = model.y0
        refined = simplify(model.formula(), states, drop_threshold, digits=17)
        stable = _support(refined) == _support(current)
        current = refined
        if stable:
            break
    thresholded = _support(current)
    model = TermModel(current)
    model.y0 = y0
    fit_mse = refit(model, fit_part, max_nfev=max_nfev, ridge=ridge)
    done += 1
    path = [(model, fit_mse)]
    while True:
        trials = []
        for equation, factor in _screened(path[-1][0], _removable(path[-1][0].formula()), states):
            trial = TermModel(_without(path[-1][0].formula(), equation, factor))
            trial.y0 = path[-1][0].y0
            trials.append((refit(trial, fit_part, max_nfev=max_nfev, ridge=ridge), trial))
            done += 1
        if not trials:
            break
        path.append(min(trials, key=lambda mt: mt[0])[::-1])
    floor = FORECAST_FLOOR * float(data.y_train.double().pow(2).mean())
    steps = []
    for k, (model, _) in enumerate(path):   # compared without the ridge's bias
        free = TermModel(model.formula())
        free.y0 = model.y0
        fit_mse = refit(free, fit_part, max_nfev=max_nfev) if ridge else path[k][1]
        done += bool(ridge)
        path[k] = (free, fit_mse)
        mse, se = _forecast(free, data, holdout)
        steps.append(SelectionStep(int(free.theta.size), free.formula().as_strings(), fit_mse, mse, se))
    best = min(steps, key=lambda s: s.forecast_mse)
    limit = best.forecast_mse + best.forecast_se + floor
    chosen = min((k for k, s in enumerate(steps) if s.forecast_mse <= limit),
                 key=lambda k: steps[k].n_terms) if math.isfinite(limit) else 0   # no forecast: all terms
    model = path[chosen][0]
    mse = refit(model, data, max_nfev=max_nfev)
    done += 1
    final = simplify(model.formula(), states, drop_threshold=0.0, digits=digits)
    support = _support(final)
    terms_from = ("export" if support == exported else
                  "polish-threshold" if support == thresholded else "polish-selection")
    return Polished(final, model.y0.copy(), mse, done, terms_from, holdout, steps, chosen)


def fit_initial_states(formula: Formula, data: FitData, start: np.ndarray | None = None,
                       max_nfev: int = 40) -> tuple[np.ndarray, float]:
    """The initial states (n_traj, dim) from which the formula's trajectories best match the
    training window (least squares; the coefficients fixed), started at ``start`` or the first
    observations; and the MSE of those trajectories (inf when they blow up)."""
    model = TermModel(formula)
    t = data.t_train.double().numpy()
    target = data.y_train.double().numpy().transpose(1, 0, 2)                # (n_t, n_traj, dim)
    y0 = target[0] if start is None else np.asarray(start, dtype=np.float64).reshape(target.shape[1:])
    step = float(np.diff(t).min()) / 2 if t.size > 1 else 1.0

    def residuals(batch: np.ndarray) -> np.ndarray:                           # (B, n_traj·dim)
        theta = np.broadcast_to(model.theta, (batch.shape[0], model.theta.size))
        pred = model.trajectories(theta, batch.reshape(-1, *target.shape[1:]), t, step)
        return _bounded((pred - target).reshape(batch.shape[0], -1))

    result = _least_squares(residuals, y0.ravel(), max_nfev)
    model.y0 = result.x.reshape(target.shape[1:])
    with np.errstate(all="ignore"):
        pred = model.trajectories(model.theta[None], model.y0, t, step)[0]
        mse = float(np.mean((pred - target) ** 2))
    return model.y0, mse if math.isfinite(mse) else math.inf
