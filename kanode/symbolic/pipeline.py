"""The KAN recipe: sparsify → prune → retrain → symbolify → fine-tune → export → polish.

(``SymbolicConfig(start="kan")``; the default start is :mod:`kanode.symbolic.sparse_recipe`.)
Each stage is one of the package's functions over models; :func:`discover_kan`
only chains them and times them. Defaults (measured on Lotka–Volterra, the
default protocol; see the README section "Equations from data"):

1. **sparsify**: a ``[dim, hidden, dim]`` KAN whose first layer starts as
   trainable linear symbolic edges ``c·(a·x + b) + d`` (``first_layer =
   "linear"``: hidden nodes are ridge directions, as a KAN writes a product
   ``((u+v)² − (u−v)²)/4``; ``"spline"`` starts every edge as a B-spline) is
   trained with the sparsity penalty of :mod:`kanode.symbolic.regularize`;
2. **prune** edges and hidden nodes by attribution (:func:`kanode.symbolic.prune`);
3. **retrain** the pruned network without the penalty;
4. **symbolify** every remaining spline edge (:func:`kanode.symbolic.symbolify`), then
   refit the symbolic constants jointly to the network's own field on the training states
   (:func:`distill`);
5. **fine-tune** all symbolic constants ``(a, b, c, d)`` through the ODE loss (Adam, then L-BFGS),
   first on the start of the training window, then on all of it; a stage that does not lower
   its window's MSE is undone (:func:`finetune_stage`);
6. **export** in the data's variables (:mod:`kanode.symbolic.export`), expand,
   drop small terms and **polish**: fine-tune the surviving coefficients
   through the ODE loss, drop again, until the terms stop changing, then eliminate terms one by
   one and keep the smallest support that forecasts the window's held-out last points as well as
   the best (:func:`kanode.symbolic.polish`; a small ridge keeps cancelling large coefficients out
   of the selection);
7. **evaluate**: fit the formula's initial states, integrate it from them, and judge it against
   the KAN it came from (:func:`kanode.symbolic.verdict.judge`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

import systems
from kanode.config import FitConfig
from kanode.data import FitData
from kanode.nn import KAN
from kanode.ode import SolverError, VectorField
from kanode.train import Diverged, Trainer, training_loss

from .edge_fit import evaluate
from .export import Formula, simplify, to_sympy, to_system
from .library import LIBRARY
from .polish import fit_initial_states, polish
from .prune import PruneError, connectivity, prune
from .regularize import score_l1, sparsity_regularizer
from .scores import layer_inputs, training_inputs
from .settings import SymbolicConfig
from .symbolic_layer import as_mixed, set_edge
from .symbolify import EdgeReport, edge_samples, symbolify
from .verdict import Verdict, judge

__all__ = ["SymbolicConfig", "Discovery", "discover_kan", "DiscoveryError", "formula_mse", "distill", "finetune_stage"]


FINETUNE_HORIZON = 8
"""The fine-tuning first fits the first this many points of the training window, then twice as
many, and so on up to all of it (a symbolic model whose long trajectories blow up is first fitted
where they do not)."""


def finetune_horizons(n_train: int, first: int = FINETUNE_HORIZON) -> list[int]:
    """The windows of the fine-tuning: ``first``, doubling, ending at ``n_train`` (e.g. 8, 16, 32, 35)."""
    horizons, h = [], max(2, min(first, n_train))
    while h < n_train:
        horizons.append(h)
        h *= 2
    return horizons + [n_train]

GRID_UPDATES = (0, 20, 40)
"""Adam steps of the sparse training at which spline grids are refit to the visited states
(the hidden nodes of a linear first layer move out of the initial grid range)."""


class DiscoveryError(RuntimeError):
    """A stage could not reach a formula; ``partial`` holds what was done."""

    def __init__(self, message: str, partial: dict[str, Any]) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass
class Discovery:
    """What :func:`discover` returns."""

    formula: Formula
    raw_formula: Formula | None
    field: VectorField
    edges: list[EdgeReport]
    summary: dict[str, Any]
    samples: torch.Tensor = field(repr=False, default=None)
    plot_edges: list = field(repr=False, default=None)
    initial_states: np.ndarray | None = None    # (n_traj, dim) the formula's fitted initial states
    verdict: Verdict | None = None


STAGE_DIVERGENCE_FACTOR = 1e300
"""The recipe's own trainings end only on a non-finite loss (see :func:`_fit`)."""


def _fit(field_: VectorField, data: FitData, config: FitConfig, steps: int, lbfgs_steps: int,
         regularizer: Callable | None = None, lr: float | None = None,
         grid_updates: Sequence[int] = ()) -> Trainer | None:
    """Train ``field_`` in place (Adam ``steps``, then L-BFGS ``lbfgs_steps``); the trainer,
    or None when there was nothing to train. Raises Diverged."""
    if steps == 0 and lbfgs_steps == 0:
        return None
    optimizer = "adam+lbfgs" if steps and lbfgs_steps else ("adam" if steps else "lbfgs")
    # The recipe's stages are judged by their results (a fine-tune stage that worsens its window
    # is undone; the formula by its verdict), not by the run rule of a loss 1e6 x its first: a
    # stage's loss may pass through a large finite excursion and recover (hare-lynx's sparse
    # stage reached 6.7e17 from 5.7e2 and ended at 342). Non-finite losses still raise Diverged.
    cfg = config.replace(optimizer=optimizer, steps=steps, lbfgs_steps=lbfgs_steps,
                         lr=lr or config.lr, grid_update_steps=[s for s in grid_updates if s < steps],
                         grid_extend=[], eval_every=10**6, divergence_factor=STAGE_DIVERGENCE_FACTOR)
    trainer = Trainer.single(field_, data, cfg, regularizer=regularizer)  # trains field_ itself
    for step in trainer.steps():
        if step.diverged:
            raise Diverged(f"step {trainer.step + 1}: {step.diverged[0]}")
    return trainer


def _train(field_: VectorField, data: FitData, config: FitConfig, steps: int, lbfgs_steps: int,
           regularizer: Callable | None = None, lr: float | None = None,
           grid_updates: Sequence[int] = ()) -> float:
    """:func:`_fit`, then the whole-window training MSE (NaN when there was nothing to train)."""
    trainer = _fit(field_, data, config, steps, lbfgs_steps, regularizer, lr, grid_updates)
    return float("nan") if trainer is None else trainer.evaluate()[0].train_loss


@torch.no_grad()
def _window_loss(field_: VectorField, data: FitData, config: FitConfig) -> float:
    """MSE of ``field_``'s trajectories over ``data``'s training window only (inf if the solve
    fails); what a fine-tuning stage on that window minimises."""
    saved = field_.nfe
    try:
        value = training_loss(field_, data, config, full=True, adjoint=False).item()
    except SolverError:
        return math.inf
    finally:
        field_.nfe = saved
    return value if math.isfinite(value) else math.inf


def finetune_stage(field_: VectorField, window: FitData, config: FitConfig, steps: int, lbfgs_steps: int,
                   lr: float) -> tuple[float, str]:
    """Train ``field_`` on ``window`` (Adam ``steps``, then L-BFGS ``lbfgs_steps``) and keep the
    result only if it lowered the window's MSE; otherwise restore the constants it started from.
    In place; returns (the window's MSE now, a note saying what happened)."""
    snapshot = copy.deepcopy(field_.state_dict())
    before = _window_loss(field_, window, config)
    try:
        _fit(field_, window, config, steps, lbfgs_steps, lr=lr)   # its own window's MSE follows
        after = _window_loss(field_, window, config)
    except Diverged:
        after = math.inf
    if math.isfinite(after) and after <= before:
        return after, f"MSE {before:.3e} -> {after:.3e}"
    field_.load_state_dict(snapshot)   # it diverged or made its own window worse
    return before, f"MSE {before:.3e} -> {after:.3e}, undone"


def _initial_field(config: FitConfig, sym: SymbolicConfig, data: FitData) -> VectorField:
    torch.manual_seed(config.seed)
    widths = [data.dim, sym.hidden, data.dim]
    kan = as_mixed(KAN(widths, grid_size=sym.grid_size, spline_order=config.spline_order,
                       grid_range=tuple(config.grid_range)).double())
    if sym.first_layer == "linear":
        gen = torch.Generator().manual_seed(config.seed)
        layer = kan.layers[0]
        for o in range(layer.out_features):
            for i in range(layer.in_features):
                c = float(torch.randn((), generator=gen, dtype=torch.float64))
                set_edge(layer, o, i, "x", (1.0, 0.0, c, 0.0))
    return VectorField.from_data(kan, data.t_train, data.y_train, grid_range=config.grid_range).double()


def distill(symbolic: KAN, reference: KAN, z: torch.Tensor, steps: int = 200) -> float:
    """Refit the symbolic constants so that ``symbolic(z)`` matches ``reference(z)`` on the training
    states z (n, dim) — the network's own field, never the data's derivatives — by L-BFGS; in place.

    The per-edge fits each leave an error, and their sum can make the symbolic field's trajectories
    blow up before the ODE loss can correct them. Returns the final mean squared mismatch.
    """
    with torch.no_grad():
        target = reference(z)
    params = [layer.sym_params for layer in symbolic.layers] + [layer.bias for layer in symbolic.layers]
    start = [p.detach().clone() for p in params]
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, history_size=50,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.mean((symbolic(z) - target) ** 2)
        loss.backward()
        return loss

    before = closure().item()
    optimizer.step(closure)
    after = closure().item()
    if not after <= before:   # non-finite or worse: keep the per-edge fits
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        after = before
    return after


def formula_mse(formula: Formula, data: FitData,
                initial_states: np.ndarray | None = None) -> tuple[float | None, float | None]:
    """MSE of the formula's own trajectories vs the data: (training window, whole grid); None
    where the integration fails. They start from ``initial_states`` (n_traj, dim), by default
    the first observations."""
    t = data.t.double().numpy()
    y = data.y.double().numpy()                                            # (n_traj, n_t, dim)
    y0 = y[:, 0] if initial_states is None else np.asarray(initial_states, dtype=np.float64)
    system = to_system(formula, y0[0], (t[0], t[-1]), t.size)
    try:
        pred = systems.simulate(system, t, y0, rtol=1e-10, atol=1e-12).y
    except (systems.IntegrationError, ValueError, FloatingPointError, OverflowError):
        return None, None
    train = float(np.mean((pred[:, : data.n_train] - y[:, : data.n_train]) ** 2))
    return train, float(np.mean((pred - y) ** 2))


class StageLog:
    """A recipe's summary and its progress: calling it with (stage, what it did) records the
    stage's wall seconds since the previous one in ``summary["times_s"]`` and says
    ``"<stage>: <what> (<s> s)"``."""

    def __init__(self, sym: SymbolicConfig, progress: Callable[[str], None] | None = None) -> None:
        self.summary: dict[str, Any] = {"recipe": asdict(sym), "times_s": {}}
        self._say = progress or (lambda line: None)
        self._timer = time.perf_counter()

    def __call__(self, name: str, line: str) -> None:
        now = time.perf_counter()
        self.summary["times_s"][name] = round(now - self._timer, 3)
        self._timer = now
        self._say(f"{name}: {line} ({self.summary['times_s'][name]:.1f} s)")


def polish_record(polished: Any) -> dict[str, Any]:
    """The summary's record of a :func:`~kanode.symbolic.polish.polish`: its refits and its
    support selection (held-out points, the chosen step, the path)."""
    return {"polish_rounds": polished.refits,
            "selection": {"holdout_points": polished.holdout, "chosen": polished.chosen,
                          "path": [dataclasses.asdict(step) for step in polished.path]}}


def evaluate_formula(formula: Formula, data: FitData, start_states: np.ndarray | None,
                     reference_mse: float | None, summary: dict[str, Any], reference: str = "KAN"
                     ) -> tuple[np.ndarray, float | None, float | None, Verdict]:
    """The formula's trajectories from its fitted initial states (n_traj, dim) against the data,
    and its verdict against ``reference_mse`` (the training-window MSE of ``reference``):
    (initial states, training MSE, whole-grid MSE, verdict), also recorded in ``summary``."""
    initial_states, _ = fit_initial_states(formula, data, start_states)
    train_mse, full_mse = formula_mse(formula, data, initial_states)
    verdict = judge(train_mse, reference_mse, float(data.y_train.double().var(dim=(0, 1)).mean()),
                    reference=reference)
    summary["initial_states"] = {"t0": float(data.t[0]), "states": initial_states.tolist()}
    summary["formula_mse_train"], summary["formula_mse_full"] = train_mse, full_mse
    summary["verdict"] = {"accepted": verdict.accepted, "reason": verdict.reason}
    return initial_states, train_mse, full_mse, verdict


def show(value: float | None) -> str:
    """A trajectory MSE for a progress line ("n/a" when the integration failed)."""
    return "n/a" if value is None else f"{value:.4g}"


def discover_kan(data: FitData, config: FitConfig, sym: SymbolicConfig | None = None,
                 start: VectorField | None = None, progress: Callable[[str], None] | None = None) -> Discovery:
    """Run the KAN recipe on ``data``; ``start`` continues from a trained KAN field instead of stage 1.

    Raises
    ------
    DiscoveryError : pruning left nothing, or the symbolic model diverged;
        ``exc.partial`` keeps the summary so far.
    """
    sym = sym or SymbolicConfig()
    stage = StageLog(sym, progress)
    summary = stage.summary

    config = config.replace(lr=sym.lr)
    if start is None:
        field_ = _initial_field(config, sym, data)
        z = training_inputs(field_, data.y_train)
        reg = sparsity_regularizer(field_, data.y_train, sym.sparsity, sym.sparsity_l1,
                                   sym.sparsity_entropy, sym.coef_l1) if (sym.sparsity or sym.coef_l1) else None
        l1_before = score_l1(field_.net, z)
        try:
            loss = _train(field_, data, config, sym.sparse_steps, sym.sparse_lbfgs_steps, reg,
                          grid_updates=GRID_UPDATES if sym.first_layer == "linear" else ())
        except Diverged as exc:
            raise DiscoveryError(f"sparse training diverged: {exc}", summary) from None
        summary["sparse_train_mse"] = loss
        summary["score_l1"] = {"before": l1_before, "after": score_l1(field_.net, z)}
        stage("sparsify", f"trained {field_.net.widths} with sparsity {sym.sparsity:g}, train MSE {loss:.3e}")
    else:
        field_ = start
        field_.net = as_mixed(field_.net)
        z = training_inputs(field_, data.y_train)
        stage("load", f"KAN {field_.net.widths} from the run")
    widths_before = list(field_.net.widths)
    try:
        field_.net = prune(field_.net, z, sym.edge_threshold, sym.node_threshold)
    except PruneError as exc:
        raise DiscoveryError(str(exc), summary) from None
    summary["widths"] = {"before": widths_before, "after": list(field_.net.widths)}
    summary["connected"] = connectivity(field_.net).tolist()
    n_live = sum(int((layer.mode != 0).sum()) for layer in field_.net.layers)
    if n_live == 0:
        raise DiscoveryError("nothing is above the pruning thresholds: every edge was pruned "
                             "(lower --edge-threshold / --node-threshold)", summary)
    stage("prune", f"widths {widths_before} -> {field_.net.widths}, {n_live} live edges")
    try:
        loss = _train(field_, data, config, sym.retrain_steps, sym.retrain_lbfgs_steps, lr=sym.finetune_lr)
    except Diverged as exc:
        raise DiscoveryError(f"retraining the pruned network diverged: {exc}", summary) from None
    summary["retrain_mse"] = loss
    stage("retrain", f"train MSE {loss:.3e}")
    kan_train = kan_full = _window_loss(field_, data, config)
    if data.has_extrapolation:
        kan_full = _window_loss(field_, dataclasses.replace(data, n_train=data.t.shape[0]), config)
    summary["kan_mse_train"], summary["kan_mse_full"] = kan_train, kan_full
    z = training_inputs(field_, data.y_train)
    plot_edges = _edge_plot_data(field_.net, z)
    spline_net = field_.net
    field_.net, edges = symbolify(field_.net, z, sym.complexity_weight, names=sym.library_names)
    _add_fits(plot_edges, edges)
    summary["distill_mse"] = distill(field_.net, spline_net, z)
    summary["edges"] = [e.as_dict() for e in edges]
    stage("symbolify", f"{len(edges)} edges: " + ", ".join(sorted({e.function for e in edges})))
    loss, notes = None, []
    stages = [(horizon, steps, lbfgs) for horizon in finetune_horizons(data.n_train)
              for steps, lbfgs in ((sym.finetune_steps, 0), (0, sym.finetune_lbfgs_steps))]
    for horizon, steps, lbfgs in stages:
        window = dataclasses.replace(data, n_train=horizon)
        loss, note = finetune_stage(field_, window, config, steps, lbfgs, sym.finetune_lr)
        notes.append(f"{'Adam' if steps else 'L-BFGS'} on the first {horizon} points: {note}")
    summary["finetune_mse"] = loss
    summary["finetune"] = notes
    stage("fine-tune", "; ".join(notes))
    states = data.y_train.reshape(-1, data.dim).double().numpy()
    raw = to_sympy(field_, data.state_names)
    formula = simplify(raw, states, sym.drop_threshold, sym.digits)
    summary["formula_before_polish"] = formula.as_strings()
    stage("export", "; ".join(f"{k}' = {v}" for k, v in formula.as_strings().items()))
    start_states, summary["terms_from"] = None, "export"
    if sym.polish_rounds:
        try:
            polished = polish(raw, data, states, sym.drop_threshold, sym.digits, sym.polish_rounds,
                              ridge=sym.polish_ridge, holdout_fraction=sym.holdout_fraction)
        except ValueError as exc:   # a window too short to hold points out
            raise DiscoveryError(str(exc), summary) from None
        formula, start_states = polished.formula, polished.initial_states
        summary.update(polish_record(polished), terms_from=polished.terms_from)
        stage("polish", "; ".join(f"{k}' = {v}" for k, v in formula.as_strings().items())
              + f" (terms from: {polished.terms_from}; the selection forecast the last "
                f"{polished.holdout} points)")
    initial_states, train_mse, full_mse, verdict = evaluate_formula(formula, data, start_states, kan_train, summary)
    stage("evaluate", f"trajectory MSE from the fitted initial states: formula train {show(train_mse)}, "
                      f"full {show(full_mse)}; KAN train {show(kan_train)}, full {show(kan_full)}")
    return Discovery(formula, raw, field_, edges, summary, z, plot_edges, initial_states, verdict)


@torch.no_grad()
def _edge_plot_data(kan: KAN, z: torch.Tensor) -> list[dict[str, Any]]:
    """Learned activation of every live spline edge over its visited range, with the visited inputs."""
    inputs = layer_inputs(kan, z)
    return [{"key": (l, o, i), "x": x, "learned": y, "visited": inputs[l][:, i].double().numpy()}
            for l, o, i, x, y in edge_samples(kan, z)]


def _add_fits(plot_edges: list[dict[str, Any]], edges: list[EdgeReport]) -> None:
    by_key = {(e.layer, e.out_index, e.in_index): e for e in edges}
    for entry in plot_edges:
        e = by_key.get(entry["key"])
        if e is None:
            entry["fit"], entry["title"] = entry["learned"], f"layer {entry['key'][0]} {entry['key'][1:]}: spline"
            continue
        entry["fit"] = evaluate(LIBRARY[e.function], np.array(e.params)[None], entry["x"][None])[0]
        entry["title"] = (f"layer {e.layer} ({e.out_index},{e.in_index}): {e.function}  "
                          f"R²={e.r2:.5f}")
