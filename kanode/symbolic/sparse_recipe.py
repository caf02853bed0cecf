"""The default recipe: derivative estimates → sparse regression → trajectory polish → verdict.

Stages (each a function of this package; :func:`discover_sparse` chains and times them):

1. **derivatives**: smoothed finite differences (:func:`~kanode.symbolic.derivatives.smoothed_derivatives`,
   the window chosen by leave-one-out error), or a trained vector field's values at the data
   (``derivatives="kan"``: a KAN-ODE fitted first, :func:`fit_kan_rates`);
2. **library**: the default candidates built from the data's scales
   (:func:`~kanode.symbolic.candidates.default_candidates`);
3. **sparse**: per equation, the best subsets of up to 4 terms, forward and backward stepwise
   paths and STLSQ over a path of thresholds; the joint model with the fewest terms whose
   trajectories over the training window are admissible, with the terms of the other
   admissible models that are no longer (:mod:`kanode.symbolic.sparse`);
4. **polish**: that model's terms and coefficients refitted through its own trajectories,
   small terms dropped, terms eliminated by forecasting held-out points
   (:func:`kanode.symbolic.polish`);
   With poor derivative estimates (:data:`POOR_DERIVATIVES`) the polish also starts from the
   monomials to degree 2 at zero, and the better forecast of the two is kept;
5. **evaluate**: the formula's trajectory error from its fitted initial states, judged against
   the smoother's own error on the same data (:func:`kanode.symbolic.verdict.judge` with the
   reference ``"smoothed data"``): a formula that does not reproduce its data is rejected.

``summary["start"]`` names the polish's start and ``summary["terms_from"]`` the stage that last
changed the terms: ``"sparse-regression"`` (the polish kept them), ``"polish-threshold"`` or
``"polish-selection"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from kanode.data import FitData

from .candidates import default_candidates, evaluate_candidates
from .derivatives import Derivatives, field_derivatives, smoothed_derivatives
from .pipeline import Discovery, DiscoveryError, StageLog, evaluate_formula, polish_record, show
from .export import simplify, terms
from .ablation import polish_from, term_library
from .polish import TermModel, polish, refit
from .settings import SymbolicConfig
from .sparse import (MAX_TERMS, RELATIVE_FLOOR, SparseModel, backward_path, best_subsets, forward_path, refine_equations, select_model,
                     union_of_ties,
                     threshold_path, tolerance_models)

__all__ = ["discover_sparse", "SparseStart", "sparse_start", "fit_kan_rates"]

SMOOTHED_REFERENCE = "smoothed data"

POOR_DERIVATIVES = 0.01
"""When the smoother's leave-one-out error is above this fraction of the data's variance (a few
points per oscillation, or heavy noise: 16 yearly hare-lynx counts give 0.5), the derivative
estimates cannot be trusted to find the terms; the polish then also starts from every monomial
up to :data:`ZERO_START_DEGREE` at coefficient 0 (no derivatives needed), and the polished
formula that forecasts the held-out points better is kept."""

ZERO_START_DEGREE = 2


@dataclasses.dataclass
class SparseStart:
    """The sparse regression's result: the candidate ``factors``, the ``path`` of models (each
    scored), the index ``chosen``, the admissible trajectory error ``limit`` and the
    ``derivatives`` it regressed on."""

    factors: tuple
    path: list[SparseModel]
    chosen: int
    limit: float
    derivatives: Derivatives

    @property
    def model(self) -> SparseModel:
        return self.path[self.chosen]


def sparse_start(data: FitData, derivatives: Derivatives | None = None) -> SparseStart:
    """Stages 1–3 on ``data``'s training window (fully observed trajectories):
    the chosen sparse model and the path it was chosen from."""
    t = data.t_train.double().numpy()
    y = data.y_train.double().numpy()                                      # (n_traj, n_train, dim)
    derivatives = derivatives or smoothed_derivatives(t, y)
    states = derivatives.states.reshape(-1, data.dim)
    factors = default_candidates(states, data.state_names)
    library = evaluate_candidates(factors, data.state_names, states)     # (N, K)
    usable = np.isfinite(library).all(axis=0)
    factors = tuple(f for f, ok in zip(factors, usable) if ok)
    library = library[:, usable]
    rates = derivatives.rates.reshape(-1, data.dim)
    fits = [best_subsets(library, rates[:, k]) + forward_path(library, rates[:, k], MAX_TERMS)
            + backward_path(library, rates[:, k], MAX_TERMS) for k in range(data.dim)]
    path = tolerance_models(fits) + [m for m in threshold_path(library, rates)
                                     if np.count_nonzero(m.coefficients, axis=1).max() <= MAX_TERMS]
    variance = float(y.var(axis=(0, 1)).mean()) or 1.0
    y0 = derivatives.states[:, 0]
    chosen, limit = select_model(path, factors, data.state_names, t, y0, y, derivatives.residual_variance,
                                 RELATIVE_FLOOR * variance)
    refined = refine_equations(path[chosen], [[coef for coef, _ in f] for f in fits], factors,
                               data.state_names, t, y0, y, limit)
    if not np.array_equal(refined.coefficients != 0, path[chosen].coefficients != 0):
        path.append(refined)
        chosen = len(path) - 1
    union = union_of_ties(path, path[chosen], limit)
    if union is not path[chosen]:
        select_model([union], factors, data.state_names, t, y0, y, derivatives.residual_variance,
                     RELATIVE_FLOOR * variance)                            # sets union.mse
        path.append(union)
        chosen = len(path) - 1
    return SparseStart(factors, path, chosen, limit, derivatives)


def fit_kan_rates(data: FitData, config, sym: SymbolicConfig) -> Derivatives:
    """Derivatives from a KAN-ODE fitted to ``data`` (the recipe's sparse-stage KAN, trained
    with the penalty off): its field at the observed states; the noise estimate they carry is
    the smoother's leave-one-out error (the verdict's reference)."""
    import torch

    from .pipeline import _initial_field, _train

    field = _initial_field(config.replace(lr=sym.lr), dataclasses.replace(sym, first_layer="spline"), data)
    _train(field, data, config.replace(lr=sym.lr), sym.sparse_steps, sym.sparse_lbfgs_steps)

    def rates(states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return field(torch.zeros(()), torch.tensor(states)).double().numpy()

    y = data.y_train.double().numpy()
    noise = smoothed_derivatives(data.t_train.double().numpy(), y).residual_variance
    return field_derivatives(rates, y, noise)


def discover_sparse(data: FitData, config, sym: SymbolicConfig,
                    progress: Callable[[str], None] | None = None) -> Discovery:
    """The recipe of the module docstring on ``data`` (``config`` is the data's
    :class:`~kanode.config.FitConfig`; used only for ``derivatives="kan"``).

    Raises DiscoveryError when the data are too short or not fully observed.
    """
    stage = StageLog(sym, progress)
    summary = stage.summary

    try:
        if sym.derivatives == "kan":
            derivatives = fit_kan_rates(data, config, sym)
        else:
            derivatives = smoothed_derivatives(data.t_train.double().numpy(), data.y_train.double().numpy())
    except ValueError as exc:
        raise DiscoveryError(str(exc), summary) from None
    summary["derivatives"] = {"source": derivatives.source, "half_width": derivatives.half_width,
                              "residual_variance": derivatives.residual_variance}
    stage("derivatives", f"{derivatives.source}" + (f", window of {2 * derivatives.half_width + 1} points, "
                                                    f"leave-one-out MSE {derivatives.residual_variance:.3g}"
                                                    if derivatives.half_width else ""))
    start = sparse_start(data, derivatives)
    names = data.state_names
    sparse_formula = start.model.formula(start.factors, names)
    summary["library"] = [str(f) for f in start.factors]
    summary["sparse_path"] = [{"threshold": m.threshold, "n_terms": m.n_terms, "trajectory_mse": m.mse,
                               "admissible": m.mse <= start.limit} for m in start.path]
    summary["formula_before_polish"] = sparse_formula.as_strings()
    stage("sparse", f"{len(start.factors)} candidates, {len(start.path)} models on the threshold path, "
                    f"chose {start.model.n_terms} terms (threshold {start.model.threshold:.3g}): "
          + "; ".join(f"{k}' = {v}" for k, v in _short(sparse_formula).items()))
    states = derivatives.states.reshape(-1, data.dim)
    formula, start_states, summary["terms_from"] = sparse_formula, None, "sparse-regression"
    summary["start"] = "sparse-regression"
    if sym.polish_rounds:
        try:
            ridge = sym.polish_ridge * window_ratio(derivatives, data) ** 2
            summary["polish_ridge"] = ridge
            polished = polish(sparse_formula, data, states, sym.drop_threshold, sym.digits, sym.polish_rounds,
                              ridge=ridge, holdout_fraction=sym.holdout_fraction)
            variance = float(data.y_train.double().var(dim=(0, 1)).mean())
            if derivatives.residual_variance > POOR_DERIVATIVES * variance:
                stage("polish", "; ".join(f"{k}' = {v}" for k, v in polished.formula.as_strings().items())
                      + f" (forecast MSE {_forecast(polished):.4g}); the derivative estimates are poor "
                        f"(leave-one-out MSE {derivatives.residual_variance:.3g} > {POOR_DERIVATIVES:g} of the "
                        f"variance {variance:.3g}): polishing from every monomial to degree {ZERO_START_DEGREE} at 0")
                zero = polish_from(term_library(data.state_names, ZERO_START_DEGREE), data, sym.drop_threshold,
                                   sym.digits, sym.polish_rounds, sym.polish_ridge, sym.holdout_fraction)
                summary["other_start"] = {"formula": zero.formula.as_strings(), "forecast_mse": _forecast(zero),
                                          "sparse_forecast_mse": _forecast(polished)}
                if _forecast(zero) < _forecast(polished):
                    polished, summary["start"] = zero, f"degree-{ZERO_START_DEGREE} monomials at zero"
        except ValueError as exc:
            raise DiscoveryError(str(exc), summary) from None
        formula, start_states = polished.formula, polished.initial_states
        summary.update(polish_record(polished))
        summary["terms_from"] = ("sparse-regression" if polished.terms_from == "export" and summary["start"] ==
                                 "sparse-regression" else polished.terms_from)
        cleaned = simplify(formula, states, sym.drop_threshold, digits=17)
        if _support(cleaned) != _support(formula):
            # the final refit of the polish may leave a term below its own drop rule (a term that
            # only absorbs the RK4 bias, coefficient ~1e-6): drop it and refit the rest
            model = TermModel(cleaned)
            model.y0 = polished.initial_states
            refit(model, data)
            formula = simplify(model.formula(), states, 0.0, sym.digits)
            start_states = model.y0
            summary["terms_from"] = "polish-threshold"
        stage("polish", "; ".join(f"{k}' = {v}" for k, v in formula.as_strings().items())
              + f" (start: {summary['start']}; terms from: {summary['terms_from']})")
    summary["smoothed_mse_train"] = derivatives.residual_variance
    initial_states, train_mse, full_mse, verdict = evaluate_formula(
        formula, data, start_states, derivatives.residual_variance or None, summary, reference=SMOOTHED_REFERENCE)
    stage("evaluate", f"trajectory MSE from the fitted initial states: formula train {show(train_mse)}, "
                      f"full {show(full_mse)}; smoothed data (leave-one-out) {derivatives.residual_variance:.4g}")
    return Discovery(formula, None, None, [], summary, None, None, initial_states, verdict)


def window_ratio(derivatives: Derivatives, data: FitData) -> float:
    """min(1, T_move / T): the time the field takes to move a state by its spread (the mean over
    states of std(x) / RMS(ẋ), from the derivative estimates) over the window's length T.

    The polish's ridge (:func:`kanode.symbolic.polish.refit`) prices a term by how far it moves a
    state over the whole window, θ·rms·T; on a window many times T_move long (Lengyel-Epstein:
    t ≤ 20, constant term 10) that price swamps the trajectory fit of noise-free data and the
    refit trades the law for smaller coefficients. The sparse start's polish prices a term over
    T_move instead: its ridge is ``polish_ridge · window_ratio²`` (1 on the canonical
    Lotka-Volterra window it is 0.12, on the 16 hare-lynx years 0.08)."""
    t = data.t_train.double().numpy()
    span = float(t[-1] - t[0]) or 1.0
    states = derivatives.states.reshape(-1, data.dim)
    rates = derivatives.rates.reshape(-1, data.dim)
    move = states.std(axis=0) / np.maximum(np.sqrt(np.mean(rates**2, axis=0)), 1e-300)
    return float(min(1.0, np.mean(move) / span))


def _forecast(polished) -> float:
    """The held-out forecast MSE of the support a polish chose."""
    return polished.path[polished.chosen].forecast_mse if polished.path else float("inf")


def _support(formula) -> list[set[str]]:
    return [{str(f) for _, f in terms(e)} for e in formula.rhs]


def _short(formula) -> dict[str, str]:
    return {k: v if len(v) < 200 else v[:200] + " …" for k, v in formula.as_strings().items()}

