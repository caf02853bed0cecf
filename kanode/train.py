"""The optimisation loop: Adam, L-BFGS or Adam → L-BFGS on a neural ODE.

The loop knows nothing about files: a :class:`Trainer` exposes its complete
state (``state_dict``/``load_state_dict``) and reports each step to a
callback, and :mod:`kanode.runs` writes metrics and checkpoints.

The optimisers are :mod:`kanode.optim`'s (``make_optimizer``), the same that
:class:`kanode.ensemble.EnsembleTrainer` runs on every member: a single fit is
an ensemble of one. A line-search trial point of L-BFGS whose solve fails or
is not finite shrinks the step (it does not end the run); the step's first
evaluation failing does (:class:`Diverged`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .compiled import CompiledLoss, compiles, torch_compiles
from .config import FitConfig
from .data import FitData, observed_mse, sample_windows, take_windows, window_times
from .divergence import divergence_reason
from .horizons import curriculum_windows, window_points
from .ode import SolverError, VectorField, backward_guarded, solve
from .optim import BatchedAdam, BatchedLBFGS

__all__ = ["Trainer", "TrainState", "StepRecord", "Diverged", "Evaluation", "lr_at", "phase_at", "training_loss",
           "solver_options", "count_parameters", "training_window", "make_optimizer", "apply_grid_schedule",
           "state_swapped", "l2_penalty"]


class Diverged(RuntimeError):
    """Training produced a non-finite loss or gradient, a loss above the divergence rule's
    multiple of the first one (:func:`kanode.divergence.divergence_reason`), or the solver failed."""


@dataclass(frozen=True)
class Evaluation:
    """MSE in the data's units; None where the split is empty."""

    train_loss: float
    val_loss: float | None
    extrap_loss: float | None


@dataclass(frozen=True)
class StepRecord:
    """One optimiser step, as written to ``metrics.csv``.

    ``train_loss`` is the objective at the parameters the step started from;
    ``val_loss``/``extrap_loss`` are evaluated at the same parameters every
    ``eval_every`` steps (None otherwise). ``reg_loss`` is the Trainer's
    regulariser at those parameters (None without one); the optimiser
    minimises ``train_loss + reg_loss``.
    """

    step: int
    phase: str
    train_loss: float
    val_loss: float | None
    extrap_loss: float | None
    lr: float
    nfe_forward: int
    nfe_backward: int
    wall_time: float
    grad_norm: float
    reg_loss: float | None = None

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def solver_options(config: FitConfig, data: FitData) -> dict[str, Any]:
    """The ``solve`` keywords a config asks for; fixed-step methods default to
    the data's finest sampling interval when ``step_size`` is 0."""
    return dict(method=config.method, rtol=config.rtol, atol=config.atol,
                step_size=config.step_size or float(torch.diff(data.t).min()),
                max_num_steps=config.max_num_steps)


# Adam's eps in units of the data's squared values (FitData.loss_scale): torch's 1e-8 for
# data whose mean square is 1. An absolute eps made a fit depend on the units of the file.
ADAM_EPS = 1e-8


def make_optimizer(phase: str, named: Iterator[tuple[str, Tensor]], n_members: int | None,
                   config: FitConfig,
                   loss_scale: float | Sequence[float] = 1.0) -> BatchedAdam | BatchedLBFGS:
    """The optimiser of ``phase`` ("adam" or "lbfgs") with ``config``'s settings, over a
    single model's parameters (``n_members`` None) or an ensemble's (M, ...).

    ``loss_scale`` (one value, or one per member): the data's
    :attr:`~kanode.data.FitData.loss_scale`; Adam's eps is ``ADAM_EPS * loss_scale``, as the
    gradients scale with the loss. (L-BFGS's first step ``min(1, 1/|g|₁)·lr`` and its
    curvature threshold ``yᵀs > 1e-10`` stay absolute, as torch's.)
    """
    if phase == "adam":
        eps = (ADAM_EPS * loss_scale if isinstance(loss_scale, (int, float))
               else [ADAM_EPS * s for s in loss_scale])
        return BatchedAdam(named, n_members, eps=eps)
    if phase == "lbfgs":
        # max_eval bounds the objective evaluations of one step, line search included
        return BatchedLBFGS(named, n_members, history_size=config.lbfgs_history,
                            max_iter=config.lbfgs_max_iter, max_eval=config.lbfgs_max_iter * 25)
    raise ValueError(f"unknown phase {phase!r}")


def apply_grid_schedule(net: nn.Module, step: int, extend_steps: dict[int, int], update_steps: set[int],
                        visited: Callable[[], Tensor]) -> bool:
    """The grid extension and update ``config`` schedules at ``step`` (a no-op for nets without
    grids); ``visited()`` gives the normalised training states to refit the grid on. Returns
    whether the grid changed (the caller rebuilds its optimiser). Shared by the single and the
    ensemble trainer, whose nets take (N, in) and (M, N, in) samples."""
    if not hasattr(net, "update_grid"):
        return False
    changed = False
    if step in extend_steps:
        net.extend_grid(extend_steps[step])
        changed = True
    if step in update_steps:
        with torch.no_grad():
            states = visited()
        net.update_grid(states)
        changed = True
    return changed


@contextlib.contextmanager
def state_swapped(module: nn.Module, state: dict[str, Tensor]) -> Iterator[None]:
    """Load ``state`` into ``module`` for the duration of the block, then restore its own."""
    current = copy.deepcopy(module.state_dict())
    module.load_state_dict(state)
    try:
        yield
    finally:
        module.load_state_dict(current)


def phase_at(config: FitConfig, step: int) -> str:
    """The optimiser that runs global step ``step`` (0-based)."""
    if config.optimizer == "adam":
        return "adam"
    if config.optimizer == "lbfgs":
        return "lbfgs"
    if config.optimizer == "adam+lbfgs":
        return "adam" if step < config.steps else "lbfgs"
    raise ValueError(f"unknown optimizer {config.optimizer!r}")  # FitConfig.validate refuses it


def training_window(field: VectorField, data: FitData, config: FitConfig, full: bool = True,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """What :func:`training_loss` fits: initial states y0 (batch, dim), times t (n_out,) to
    solve at, targets (n_t, batch, dim) (NaN where missing) and the rows of the solution
    that hold them (``index``: None when the solution at ``t`` is the targets' own grid; else
    :func:`kanode.data.take_windows`'s index, windows of an irregular grid).

    The training window (``full``, or ``config.batch_time`` 0) starts from the field's
    fitted initial states when it has them; ``config.batch_size`` random windows of
    ``batch_time`` points drawn with ``generator`` start at observed states.
    """
    c, d = config, data
    if full or not c.batch_time:
        return field.initial_values(d.y_train[:, 0]), d.t_train, d.y_train.transpose(0, 1), None
    if generator is None:
        raise ValueError("random windows (config.batch_time > 0, full=False) need a generator")
    y0, target, start = sample_windows(d.y_train, c.batch_time, c.batch_size, generator)
    t, index = window_times(d.t_train, start, c.batch_time)
    return y0, t, target, index


def training_loss(field: VectorField, data: FitData, config: FitConfig, full: bool = True,
                  generator: torch.Generator | None = None, adjoint: bool | None = None,
                  solver: dict[str, Any] | None = None, compiled: CompiledLoss | None = None) -> Tensor:
    """The training objective the :class:`Trainer` minimises: MSE of the solved
    trajectories against the training window (``full``, or with
    ``config.batch_time`` 0) or against ``config.batch_size`` random windows
    of ``batch_time`` points drawn with ``generator``, over the observed
    values only (:func:`kanode.data.observed_mse`; missing ones are NaN). The
    whole-window trajectories start from the field's fitted initial states when
    it has them (``fit_initial_state``; :meth:`kanode.ode.NormalisedField.initial_values`).

    ``adjoint`` overrides ``config.adjoint`` (the loss is the same function
    either way; only how its gradient is computed differs). ``solver``: the
    ``solve`` keywords, :func:`solver_options` of config and data unless given
    (a caller evaluating the loss repeatedly passes them once computed).
    ``compiled``: evaluate with this :class:`kanode.compiled.CompiledLoss` (direct
    backpropagation only; where it cannot, the eager solve runs). Returns a scalar.
    """
    options = solver_options(config, data) if solver is None else solver
    adjoint = config.adjoint if adjoint is None else adjoint
    y0, t, target, index = training_window(field, data, config, full, generator)
    if compiled is not None and not adjoint and index is None:
        losses = compiled(field, y0.unsqueeze(0), t, target.unsqueeze(1))           # (1,)
        if losses is not None:
            return losses[0]
    pred = solve(field, y0, t, adjoint=adjoint, **options)                     # (n_out, batch, dim)
    return observed_mse(take_windows(pred, index), target)                     # over the observed values


def l2_penalty(net: nn.Module, weight: float, n_members: int | None = None) -> Tensor:
    """``weight · Σ p²`` over the network's parameters (``config.l2``; the fitted initial
    states live outside ``net`` and are not penalised).

    ``n_members`` None: a single network, returns a scalar; else an ensemble network
    whose parameters are (M, ...), returns (M,), member m's penalty (that of its single fit).
    """
    params = list(net.parameters())
    if n_members is None:
        return weight * sum(p.pow(2).sum() for p in params)
    return weight * sum(p.pow(2).reshape(n_members, -1).sum(1) for p in params)     # (M,)


def lr_at(config: FitConfig, step: int) -> float:
    """Learning rate of global step ``step``: the Adam schedule, or ``lbfgs_lr``."""
    if phase_at(config, step) == "lbfgs":
        return config.lbfgs_lr
    if config.lr_schedule == "none":
        return config.lr
    if config.lr_schedule == "cosine":
        progress = step / max(config.steps, 1)
        return config.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))
    if config.lr_schedule == "step":
        return config.lr * config.lr_step_gamma ** (step // config.lr_step_every)
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}")


@dataclass
class _Counters:
    forward: int = 0
    backward: int = 0
    grad_norm: float = float("nan")
    first_loss: float | None = None
    first_reg: float | None = None


@dataclass
class TrainState:
    """Everything besides the model and optimiser that a resume needs."""

    step: int = 0
    wall_time: float = 0.0
    best_loss: float = float("inf")
    best_step: int = -1
    best_model: dict[str, Tensor] | None = field(default=None, repr=False)
    first_loss: float | None = None  # step 1's training loss: the divergence rule's reference


class Trainer:
    """Fits ``field`` to ``data`` following ``config``'s optimiser schedule.

    Parameters
    ----------
    field : the vector field; its ``net`` may be a KAN (grid updates apply then).
    data : training/validation/extrapolation trajectories (already on the
        field's dtype and device).
    config : the schedule, solver settings and seed.
    regularizer : optional penalty ``regularizer(field) -> scalar Tensor``
        added to the training loss once per objective evaluation (once per
        Adam step, once per L-BFGS closure call), outside the ODE solve; it
        is recorded as ``StepRecord.reg_loss``. E.g. the sparsity penalty of
        :func:`kanode.symbolic.sparsity_regularizer` on training states.
    """

    def __init__(self, field: VectorField, data: FitData, config: FitConfig,
                 regularizer: Callable[[VectorField], Tensor] | None = None) -> None:
        self.field = field
        self.data = data
        self.config = config
        self.regularizer = regularizer
        self.generator = torch.Generator().manual_seed(config.seed)
        self._solver = solver_options(config, data)
        self.compiled = (CompiledLoss(config.method, self._solver["step_size"], torch_compile=torch_compiles(config))
                         if compiles(config) else None)
        self.state = TrainState()
        self._phase = phase_at(config, 0)
        self.optimizer = self._make_optimizer(self._phase)
        self._grid_steps = set(config.grid_update_steps)
        self._extend_steps = {int(s): int(g) for s, g in config.grid_extend}

    # ------------------------------------------------------------ optimiser
    def _make_optimizer(self, phase: str) -> BatchedAdam | BatchedLBFGS:
        """The phase's optimiser: kanode.optim's, the algorithm ensemble members run too
        (a single model is an ensemble of one)."""
        return make_optimizer(phase, self.field.named_parameters(), None, self.config,
                              self.data.loss_scale)

    # ------------------------------------------------------------ objective
    def _solve(self, y0: Tensor, t: Tensor, adjoint: bool) -> Tensor:
        if self.compiled is not None and not torch.is_grad_enabled():  # evaluations: the fused kernel
            solution = self.compiled.solution(self.field, y0.unsqueeze(0), t)
            if solution is not None:
                if not bool(torch.isfinite(solution).all()):
                    raise SolverError("the solution became non-finite (the vector field blew up)")
                return solution[:, 0]
        return solve(self.field, y0, t, adjoint=adjoint, **self._solver)

    def _objective(self, full: bool) -> Tensor:
        """Training MSE on the whole window (``full``), the step's curriculum windows
        (:mod:`kanode.horizons`) or random windows."""
        if points := (0 if full else window_points(self.config, self.data.n_train, self.state.step)):
            y0, target, start = curriculum_windows(self.data.y_train, points)
            t, index = window_times(self.data.t_train, start, points)
            return observed_mse(take_windows(self._solve(y0, t, self.config.adjoint), index), target)
        return training_loss(self.field, self.data, self.config, full=full, generator=self.generator,
                             solver=self._solver, compiled=self.compiled)

    def _loss_and_grad(self, counters: _Counters, full: bool) -> Tensor:
        """Zero grads, evaluate the objective, backpropagate; raise Diverged on trouble."""
        self.optimizer.zero_grad()
        self.field.reset_nfe()
        try:
            loss = self._objective(full)
            counters.forward += self.field.reset_nfe()
            # the step's first evaluation is held to the multiple rule; line-search trials only to finiteness
            first = self.state.first_loss if counters.first_loss is None else None
            reason = divergence_reason(loss.item(), first, self.config.divergence_factor)
            if reason is not None:
                raise Diverged(reason)
            data_loss = loss
            if self.regularizer is not None:
                reg = self.regularizer(self.field)
                if not torch.isfinite(reg):
                    raise Diverged(f"non-finite regulariser ({reg.item()})")
                loss = loss + reg
                if counters.first_reg is None:
                    counters.first_reg = reg.item()
            backward_guarded(loss, self.config.max_num_steps)
        except SolverError as exc:
            raise Diverged(f"solver failure: {exc}") from exc
        counters.backward += self.field.reset_nfe()
        grads = [p.grad for p in self.field.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if not torch.isfinite(norm):
            raise Diverged("non-finite gradient")
        if counters.first_loss is None:
            counters.first_loss = data_loss.item()
            counters.grad_norm = norm.item()
            if self.state.first_loss is None:
                self.state.first_loss = counters.first_loss
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.field.parameters(), self.config.grad_clip)
        return loss

    def _trial(self, counters: _Counters) -> Tensor:
        """The L-BFGS closure: (1,) loss with gradients set. The step's first evaluation
        raises Diverged on trouble; a line-search trial point that fails counts as +inf
        (the search then steps back)."""
        first = counters.first_loss is None
        try:
            return self._loss_and_grad(counters, full=True).detach().reshape(1)
        except Diverged:
            if first:
                raise
            return torch.full((1,), math.inf, dtype=self.data.y.dtype)

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        """Whole-window training, held-out and extrapolation MSE over the observed values
        (no gradients)."""
        d = self.data
        saved = self.field.nfe
        try:
            y0 = self.field.initial_values(d.y[:, 0])
            pred = self._solve(y0, d.t, adjoint=False).transpose(0, 1)  # (n_traj, n_t, dim)
            train = observed_mse(pred[:, : d.n_train], d.y_train).item()
            extrap = (observed_mse(pred[:, d.n_train:], d.y[:, d.n_train:]).item()
                      if d.has_extrapolation else None)
            val = None
            if d.y_held_out.shape[0]:
                held = self._solve(d.y_held_out[:, 0], d.t_train, adjoint=False).transpose(0, 1)
                val = observed_mse(held, d.y_held_out[:, : d.n_train]).item()
        except SolverError:
            train, val, extrap = float("inf"), float("inf"), float("inf")
        finally:
            self.field.nfe = saved
        return Evaluation(train, val, extrap)

    # --------------------------------------------------------------- grids
    def _adapt_grid(self, step: int) -> None:
        """Grid update / extension scheduled at ``step``; rebuilds the optimiser."""
        def visited() -> Tensor:
            y0 = self.field.initial_values(self.data.y_train[:, 0])
            pred = self._solve(y0, self.data.t_train, adjoint=False)
            return self.field.normalize(pred.reshape(-1, pred.shape[-1]))               # (N, dim)

        if apply_grid_schedule(self.field.net, step, self._extend_steps, self._grid_steps, visited):
            self.optimizer = self._make_optimizer(self._phase)

    # ---------------------------------------------------------------- loop
    @property
    def total_steps(self) -> int:
        return self.config.total_steps

    def steps(self) -> Iterator[StepRecord]:
        """Run the remaining steps, yielding one record per optimiser step.

        Raises
        ------
        Diverged : non-finite loss or gradient, or a solver failure. The
            model then still holds the parameters of the last finite step
            for Adam (L-BFGS may have moved them within its line search).
        """
        c = self.config
        while self.state.step < self.total_steps:
            step = self.state.step
            start = time.perf_counter()
            phase = phase_at(c, step)
            if phase != self._phase:
                self._phase = phase
                self.optimizer = self._make_optimizer(phase)
            try:
                self._adapt_grid(step)
            except SolverError as exc:  # the grid update solves the ODE too
                raise Diverged(f"solver failure in the grid update: {exc}") from exc
            lr = lr_at(c, step)
            counters = _Counters()
            snapshot = copy.deepcopy(self.field.state_dict())
            if phase == "adam":
                self._loss_and_grad(counters, full=False)
                self.optimizer.step(lr)
            else:
                self.optimizer.step(lambda: self._trial(counters), lr)
            assert counters.first_loss is not None
            evaluate = (step + 1) % c.eval_every == 0 or step + 1 == self.total_steps
            ev = self._evaluate_at(snapshot) if evaluate else None
            self._track_best(counters.first_loss, step, snapshot)
            self.state.step += 1
            self.state.wall_time += time.perf_counter() - start
            yield StepRecord(step=step + 1, phase=phase, train_loss=counters.first_loss,
                             val_loss=ev.val_loss if ev else None,
                             extrap_loss=ev.extrap_loss if ev else None,
                             lr=lr, nfe_forward=counters.forward, nfe_backward=counters.backward,
                             wall_time=self.state.wall_time, grad_norm=counters.grad_norm,
                             reg_loss=counters.first_reg)

    def _evaluate_at(self, params: dict[str, Tensor]) -> Evaluation:
        """Evaluate at the step's starting parameters, then restore the updated ones."""
        with state_swapped(self.field, params):
            return self.evaluate()

    def _track_best(self, loss: float, step: int, params: dict[str, Tensor]) -> None:
        if loss < self.state.best_loss:
            self.state.best_loss, self.state.best_step = loss, step
            self.state.best_model = params

    # ---------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """All a resume needs; loadable with ``torch.load(weights_only=True)``."""
        return {
            "step": self.state.step,
            "wall_time": self.state.wall_time,
            "best_loss": self.state.best_loss,
            "best_step": self.state.best_step,
            "first_loss": self.state.first_loss,
            "phase": self._phase,
            "model": self.field.state_dict(),
            "grid_size": getattr(self.field.net, "grid_size", None),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the model must have the saved grid size)."""
        self.field.load_state_dict(state["model"])
        self.state.step = int(state["step"])
        self.state.wall_time = float(state["wall_time"])
        self.state.best_loss = float(state["best_loss"])
        self.state.best_step = int(state["best_step"])
        first = state.get("first_loss")  # absent in checkpoints of earlier versions
        self.state.first_loss = None if first is None else float(first)
        self._phase = str(state["phase"])
        self.optimizer = self._make_optimizer(self._phase)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


StepCallback = Callable[[StepRecord], None]
