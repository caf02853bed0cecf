"""The optimisation loop: Adam, L-BFGS or Adam → L-BFGS on neural ODEs, one :class:`Trainer`
for M members of an ensemble field; a single fit is an ensemble of one.

The loop knows nothing about files: the :class:`Trainer` exposes each member's
complete state (``member_state``/``load_member_states``) and yields one
:class:`TrainStep` per optimiser step; :mod:`kanode.lifecycle` writes metrics
and checkpoints. The optimisers are :mod:`kanode.optim`'s (``make_optimizer``).
A line-search trial point of L-BFGS whose solve fails or is not finite shrinks
the step (it does not end the run); a member whose step's first evaluation
fails diverges (it is frozen; a single fit then ends as "diverged").
"""

from __future__ import annotations

import contextlib
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
from .ensemble.data import StackedData
from .ensemble.field import EnsembleVectorField
from .ensemble.packing import check_packable
from .ensemble.solve import solve_ensemble
from .horizons import curriculum_windows, window_points
from .plateau import plateaued
from .ode import SolverError, VectorField, backward_guarded, solve
from .optim import BatchedAdam, BatchedLBFGS

__all__ = ["Trainer", "TrainState", "TrainStep", "StepRecord", "Diverged", "Evaluation", "lr_at", "phase_at",
           "training_loss", "solver_options", "count_parameters", "training_window", "make_optimizer",
           "apply_grid_schedule", "state_swapped", "l2_penalty"]


class Diverged(RuntimeError):
    """Training produced a non-finite loss or gradient, a loss above the divergence rule's
    multiple of the first one (:func:`kanode.divergence.divergence_reason`), or the solver failed
    (raised by callers that end on a member's divergence, e.g. :mod:`kanode.symbolic`)."""


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
    regulariser plus ``l2`` penalty at those parameters (None without either);
    the optimiser minimises ``train_loss + reg_loss``.
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
    whether the grid changed (the caller rebuilds its optimiser). ``visited()`` is (M, N, in) for
    an ensemble net, (1, N, in) for a single net trained as an ensemble of one."""
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


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    """A copy of ``module``'s state dict (its tensors cloned: what ``copy.deepcopy`` of it
    gives, without deepcopy's per-object bookkeeping, which cost as much as a whole
    training step of the default fit)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@contextlib.contextmanager
def state_swapped(module: nn.Module, state: dict[str, Tensor]) -> Iterator[None]:
    """Load ``state`` into ``module`` for the duration of the block, then restore its own."""
    current = snapshot(module)
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


def l2_penalty(net: nn.Module, weight: float | Tensor, n_members: int | None = None) -> Tensor:
    """``weight · Σ p²`` over the network's parameters (``config.l2``; the fitted initial
    states live outside ``net`` and are not penalised).

    ``n_members`` None: a single network, returns a scalar; else an ensemble network
    whose parameters are (M, ...), returns (M,), member m's penalty (that of its single fit);
    ``weight`` is then a number or (M,), each member's own ``l2``.
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
class TrainState:
    """A member's training state besides its parameters and optimiser (what a resume needs)."""

    step: int = 0
    wall_time: float = 0.0
    best_loss: float = float("inf")  # the best model's whole-trajectory training MSE
    best_step: int = -1
    best_objective: float = float("inf")  # what it is chosen by: that MSE plus the penalty
    best_model: dict[str, Tensor] | None = field(default=None, repr=False)
    first_loss: float | None = None  # step 1's training loss: the divergence rule's reference
    lbfgs_losses: list[float] = field(default_factory=list)  # the last ones: the plateau rule's window


@dataclass(frozen=True)
class TrainStep:
    """One optimiser step: a record per member that took it, the members that diverged at it
    (member → reason), and the members the plateau rule stopped after it (member → their
    evaluation at the parameters they keep: those of their last record)."""

    records: dict[int, StepRecord]
    diverged: dict[int, str]
    converged: dict[int, "Evaluation"] = field(default_factory=dict)


@dataclass
class _Counters:
    forward: int = 0
    backward: int = 0
    first_losses: list[float] | None = None
    grad_norms: list[float] | None = None
    first_regs: list[float] | None = None
    bad_regs: set[int] = field(default_factory=set)


class _SharedSolverError(RuntimeError):
    """The solve of all members failed as a whole (an adaptive solve shares its steps)."""


Regularizer = Callable[[nn.Module], Tensor]


class Trainer:
    """Fits the M members of an ensemble field to their data following their configs;
    M = 1 is a single fit.

    * member m's loss is its own MSE against its own data (plus its regulariser and
      ``l2``); the backward of the sum gives each member exactly its own gradient;
    * the optimisers are :mod:`kanode.optim`'s (one algorithm over (M, ...) parameters),
      with each member's learning rate and schedule (:func:`lr_at` of its config), and its
      own ``grad_clip`` (``torch.nn.utils.clip_grad_norm_``'s rule on its own gradient);
    * member m draws its random windows from its own generator seeded with its seed;
    * a member whose loss breaks the divergence rule (:mod:`kanode.divergence`), whose
      regulariser or gradient is not finite, or whose own solve fails, is frozen (its
      field masked to zero, ``set_live``) at the parameters the step started from, and
      reported in :attr:`TrainStep.diverged`; the others go on. With a fixed-step method
      the others are unaffected; with an adaptive one they share the step, so a failing
      L-BFGS trial point of one member shrinks the others' trial step in that round too.

    Parameters
    ----------
    field : an :class:`kanode.ensemble.EnsembleVectorField` of M members, or a
        :class:`kanode.one_member.OneMemberField` (a single field trained in place;
        see :meth:`single`).
    datas : M members' data (one time grid and shape; values may differ).
    configs : M configs that :func:`kanode.ensemble.check_packable` accepts.
    regularizer : optional penalty ``regularizer(field) -> (M,)`` (a scalar for one
        member), member m's added to its loss once per objective evaluation (once per
        Adam step, once per L-BFGS closure call), outside the ODE solve; recorded, with
        ``l2``, as ``StepRecord.reg_loss``. E.g. the sparsity penalty of
        :mod:`kanode.symbolic.regularize`.

    Per-member state (:meth:`member_state`) is a run's checkpoint format: a member's
    checkpoint resumes as a single fit, and single checkpoints at one step resume as an
    ensemble (:meth:`load_member_states`).
    """

    def __init__(self, field: nn.Module, datas: Sequence[FitData], configs: Sequence[FitConfig],
                 regularizer: Regularizer | None = None) -> None:
        check_packable(configs)
        n = field.n_members
        if len(datas) != n or len(configs) != n:
            raise ValueError(f"an ensemble of {n} members needs {n} datas and configs, "
                             f"got {len(datas)} and {len(configs)}")
        self.field = field
        self.configs = list(configs)
        self.config = self.configs[0]  # the shared settings
        self.data = StackedData.stack(datas)
        self.n_members = n
        self.regularizer = regularizer
        self.generators = [torch.Generator().manual_seed(c.seed) for c in self.configs]
        self._solver = solver_options(self.config, datas[0])
        self.compiled = (CompiledLoss(self.config.method, self._solver["step_size"],
                                      torch_compile=torch_compiles(self.config, n))
                         if compiles(self.config, n) else None)
        self.step = 0
        self.states = [TrainState() for _ in range(n)]
        self.frozen: dict[int, str] = {}
        self._phase = phase_at(self.config, 0)
        self._loss_scales = [d.loss_scale for d in datas]  # each member's Adam eps, as its single fit's
        self.optimizer = self._make_optimizer(self._phase)
        self._grid_steps = set(self.config.grid_update_steps)
        self._extend_steps = {int(s): int(g) for s, g in self.config.grid_extend}

    @classmethod
    def single(cls, field: VectorField, data: FitData, config: FitConfig,
               regularizer: Regularizer | None = None) -> "Trainer":
        """A trainer of one member that trains ``field`` itself (any VectorField, stackable
        or not: :class:`kanode.one_member.OneMemberField`)."""
        from kanode.one_member import OneMemberField

        return cls(OneMemberField(field), [data], [config], regularizer)

    def _make_optimizer(self, phase: str) -> BatchedAdam | BatchedLBFGS:
        stacked = getattr(self.field, "member_axis", True)
        return make_optimizer(phase, self.field.named_parameters(), self.n_members if stacked else None,
                              self.config, self._loss_scales)

    # ---------------------------------------------------------- members
    @property
    def active(self) -> list[bool]:
        return [m not in self.frozen for m in range(self.n_members)]

    def _freeze(self, members: dict[int, str], snapshot: dict[str, Tensor]) -> None:
        """Freeze ``members`` (→ reason) at the parameters of ``snapshot``."""
        for m, reason in members.items():
            self.frozen[m] = reason
            self.field.load_member(m, self._member_of(snapshot, m))
        self._set_live()

    def _set_live(self) -> None:
        """The field's live mask: the members not frozen."""
        self.field.set_live(torch.tensor(self.active, dtype=self.field.out_scale.dtype,
                                         device=self.field.out_scale.device))

    def _member_of(self, state: dict[str, Tensor], m: int) -> dict[str, Tensor]:
        """Member m's part of a state dict of the field (a copy)."""
        if not getattr(self.field, "member_axis", True):
            return {k: v.clone() for k, v in state.items()}
        return {k: v[m].clone() for k, v in state.items()}

    @property
    def total_steps(self) -> int:
        return self.config.total_steps

    # ------------------------------------------------------- objective
    def _solve(self, y0: Tensor, t: Tensor, adjoint: bool) -> Tensor:
        try:
            return solve_ensemble(self.field, y0, t, adjoint=adjoint, allow_nonfinite=True, **self._solver)
        except SolverError as exc:
            raise _SharedSolverError(str(exc)) from exc

    def _losses(self, full: bool) -> Tensor:
        """(M,) training MSE of each member over its observed values (whole window, the step's
        curriculum windows (:mod:`kanode.horizons`), or its own random windows)."""
        c, d = self.config, self.data
        if points := (0 if full else window_points(c, d.n_train, self.step)):      # kanode.horizons
            y0, target, start = curriculum_windows(d.y_train, points)           # (M, batch, dim), ...
            t, index = window_times(d.t_train, start, points)
        elif full or not c.batch_time:
            y0 = self.field.initial_values(d.y_train[:, :, 0])                # (M, n_traj, dim)
            t, index = d.t_train, None
            target = d.y_train.permute(2, 0, 1, 3)                              # (n_train, M, n_traj, dim)
        else:
            windows = [sample_windows(d.y_train[m], c.batch_time, c.batch_size, self.generators[m])
                       for m in range(self.n_members)]
            y0 = torch.stack([w[0] for w in windows])                           # (M, batch, dim)
            target = torch.stack([w[1] for w in windows], dim=1)                # (batch_time, M, batch, dim)
            t, index = window_times(d.t_train, torch.stack([w[2] for w in windows]), c.batch_time)
        if self.compiled is not None and not c.adjoint and index is None and not points:
            losses = self.compiled(self.field, y0, t, target)
            if losses is not None:
                return losses
        return observed_mse(take_windows(self._solve(y0, t, c.adjoint), index), target, member_dim=1)

    def _penalty(self) -> Tensor | None:
        """(M,) each member's regulariser plus its ``l2`` penalty (None without either)."""
        total = None
        if self.regularizer is not None:
            total = self.regularizer(self.field).reshape(self.n_members)
        weights = [c.l2 for c in self.configs]
        if any(weights):  # each member's own penalty, as its single fit adds it
            weight = torch.tensor(weights, dtype=self.data.t.dtype, device=self.data.t.device)  # (M,)
            l2 = l2_penalty(self.field.net, weight, self.n_members)                   # (M,)
            total = l2 if total is None else total + l2
        return total

    def _loss_and_grad(self, counters: _Counters, full: bool) -> Tensor:
        """(M,) losses with the gradients set; +inf where a member's loss or gradient is
        not finite (raises _SharedSolverError when the solve fails as a whole)."""
        self.optimizer.zero_grad()
        self.field.reset_nfe()
        data_losses = self._losses(full)
        counters.forward += self.field.reset_nfe()
        losses = data_losses
        penalty = self._penalty()
        if penalty is not None:
            losses = data_losses + penalty
            if counters.first_regs is None:
                counters.first_regs = penalty.detach().tolist()
                counters.bad_regs = {m for m, v in enumerate(counters.first_regs) if not math.isfinite(v)}
        ok = torch.isfinite(losses) & torch.tensor(self.active, device=losses.device)
        try:
            backward_guarded(torch.where(ok, losses, torch.zeros_like(losses)).sum(), self.config.max_num_steps)
        except SolverError as exc:
            raise _SharedSolverError(str(exc)) from exc
        counters.backward += self.field.reset_nfe()
        grad = self.optimizer.params.flat_grad()                                 # (M, P)
        norms = torch.linalg.vector_norm(grad, dim=1)
        ok = ok & torch.isfinite(norms)
        self._clip(norms)
        if counters.first_losses is None:
            counters.first_losses = data_losses.detach().tolist()
            counters.grad_norms = norms.tolist()
        return torch.where(ok, losses.detach(), torch.full_like(losses, math.inf))

    def _clip(self, norms: Tensor) -> None:
        """Each member's ``grad_clip`` on its own gradient norm (torch's clip_grad_norm_ rule)."""
        clips = [c.grad_clip for c in self.configs]
        if not any(clips):
            return
        limit = torch.tensor([c or math.inf for c in clips], dtype=norms.dtype, device=norms.device)
        scale = (limit / (norms + 1e-6)).clamp(max=1.0)
        stacked = getattr(self.field, "member_axis", True)
        for g in self.optimizer.params.grads():
            g.mul_(scale.view((-1,) + (1,) * (g.ndim - 1)) if stacked else scale.reshape(()))

    def _trial(self, counters: _Counters, members: list[int] | None = None) -> Tensor:
        """The L-BFGS closure; a trial point whose shared solve fails is +inf for everyone.
        With ``members`` (a line search's, still searching) only they are live for this
        evaluation: the others' fields are 0 (the fused kernel skips them) and their values
        are not read."""
        first = counters.first_losses is None
        if members is not None:
            needed = torch.zeros(self.n_members, dtype=torch.bool)
            needed[members] = True
            self.field.set_live((needed & torch.tensor(self.active)).to(self.field.out_scale))
        try:
            return self._loss_and_grad(counters, full=True)
        except _SharedSolverError:
            if first:  # the step's own start: steps() freezes whoever fails alone
                raise
            return torch.full((self.n_members,), math.inf, dtype=self.data.y.dtype)
        finally:
            if members is not None:
                self._set_live()

    # ------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> list[Evaluation]:
        """Each member's whole-window training, held-out and extrapolation MSE over its
        observed values (inf for a member whose solve is not finite)."""
        saved = self.field.nfe
        try:
            return _evaluate(self.field, self.data, self._solver, self.compiled)
        except _SharedSolverError:
            return [self._evaluate_alone(m) for m in range(self.n_members)]
        finally:
            self.field.nfe = saved

    def _evaluate_alone(self, m: int) -> Evaluation:
        """Member m's evaluation in a solve of its own (inf where it fails)."""
        failed = Evaluation(math.inf, math.inf, math.inf)
        if self.n_members == 1:
            return failed
        alone = EnsembleVectorField.from_fields([self.field.member(m)])
        try:
            return _evaluate(alone, self.data.member(m), self._solver, self.compiled)[0]
        except _SharedSolverError:
            return failed

    def _evaluate_at(self, params: dict[str, Tensor]) -> list[Evaluation]:
        with state_swapped(self.field, params):
            return self.evaluate()

    # ------------------------------------------------------------ grids
    def _adapt_grid(self, step: int) -> bool:
        """Grid update / extension scheduled at ``step``; rebuilds the optimiser; whether it ran."""
        def visited() -> Tensor:
            y0 = self.field.initial_values(self.data.y_train[:, :, 0])
            pred = self._solve(y0, self.data.t_train, adjoint=False)
            states = pred.permute(1, 0, 2, 3).reshape(self.n_members, -1, pred.shape[-1])  # (M, N, dim)
            return self.field.normalize(states)

        if apply_grid_schedule(self.field.net, step, self._extend_steps, self._grid_steps, visited):
            self.optimizer = self._make_optimizer(self._phase)
            return True
        return False

    # ------------------------------------------------------------- loop
    def steps(self) -> Iterator[TrainStep]:
        """Run the remaining steps, yielding one :class:`TrainStep` per optimiser step
        (until every member is done or frozen)."""
        c = self.config
        while self.step < self.total_steps and len(self.frozen) < self.n_members:
            step = self.step
            start = time.perf_counter()
            phase = phase_at(c, step)
            if phase != self._phase:
                self._phase = phase
                self.optimizer = self._make_optimizer(phase)
            saved = snapshot(self.field)
            diverged: dict[int, str] = {}
            try:
                if self._adapt_grid(step):  # the step starts from the adapted grid
                    saved = snapshot(self.field)
            except _SharedSolverError as exc:
                diverged = self._culprits(f"solver failure in the grid update: {exc}")
                self._freeze(diverged, saved)
                yield TrainStep({}, diverged)
                continue
            lrs = [lr_at(cfg, step) for cfg in self.configs]
            counters = _Counters()
            rng = [g.get_state() for g in self.generators]
            try:
                if phase == "adam":
                    self._loss_and_grad(counters, full=False)
                else:
                    self.optimizer.step(lambda: self._trial(counters), lrs, self.active,
                                        subset=lambda members: self._trial(counters, members))
            except _SharedSolverError as exc:  # find who fails alone, freeze them, redo the step
                for g, state in zip(self.generators, rng):
                    g.set_state(state)
                self.field.load_state_dict(saved)
                diverged = self._culprits(f"solver failure: {exc}")
                self._freeze(diverged, saved)
                yield TrainStep({}, diverged)
                continue
            assert counters.first_losses is not None and counters.grad_norms is not None
            bad = self._diverged(counters)
            if phase == "adam":
                active = [a and m not in bad for m, a in enumerate(self.active)]
                self.optimizer.step(lrs, active)
            if bad:
                self._freeze(bad, saved)
            evaluate = (step + 1) % c.eval_every == 0 or step + 1 == self.total_steps
            evals = self._evaluate_at(saved) if evaluate and len(self.frozen) < self.n_members else None
            self.step += 1
            elapsed = time.perf_counter() - start
            records = {}
            for m in range(self.n_members):
                if m in self.frozen:
                    continue
                state = self.states[m]
                if state.first_loss is None:
                    state.first_loss = counters.first_losses[m]
                state.step = self.step
                state.wall_time += elapsed
                ev = evals[m] if evals else None
                whole = counters.first_losses[m] if self._fits_whole(phase, step) else (ev.train_loss if ev else None)
                if whole is not None:  # the best model is judged on whole-trajectory losses only
                    penalty = counters.first_regs[m] if counters.first_regs else 0.0
                    self._track_best(m, whole, whole + penalty, step, saved)
                records[m] = StepRecord(step=step + 1, phase=phase, train_loss=counters.first_losses[m],
                                        val_loss=ev.val_loss if ev else None,
                                        extrap_loss=ev.extrap_loss if ev else None, lr=lrs[m],
                                        nfe_forward=counters.forward, nfe_backward=counters.backward,
                                        wall_time=state.wall_time, grad_norm=counters.grad_norms[m],
                                        reg_loss=counters.first_regs[m] if counters.first_regs else None)
            yield TrainStep(records, bad, self._plateaus(phase, records, saved, evals))

    def _diverged(self, counters: _Counters) -> dict[int, str]:
        """Live members that diverged at this step (→ reason)."""
        assert counters.first_losses is not None and counters.grad_norms is not None
        bad = {}
        for m in range(self.n_members):
            if m in self.frozen:
                continue
            reason = divergence_reason(counters.first_losses[m], self.states[m].first_loss,
                                       self.configs[m].divergence_factor)
            if reason is None and m in counters.bad_regs:
                reason = f"non-finite regulariser ({counters.first_regs[m]})"
            if reason is None and not math.isfinite(counters.grad_norms[m]):
                reason = "non-finite gradient"
            if reason is not None:
                bad[m] = reason
        return bad

    def _plateaus(self, phase: str, records: dict[int, StepRecord], saved: dict[str, Tensor],
                  evals: list[Evaluation] | None) -> dict[int, Evaluation]:
        """Members the plateau rule (:mod:`kanode.plateau`) stops after this step, frozen at
        ``saved`` (the parameters of their last record), → their evaluation there."""
        window = self.config.plateau_steps
        if phase != "lbfgs" or not window:
            return {}
        done = []
        for m, record in records.items():
            kept = self.states[m].lbfgs_losses
            kept.append(record.train_loss)
            del kept[: -(window + 1)]
            if plateaued(kept, window, self.config.plateau_rtol) and self.step < self.total_steps:
                done.append(m)
        if not done:
            return {}
        evals = evals or self._evaluate_at(saved)
        self._freeze({m: "plateau" for m in done}, saved)
        return {m: evals[m] for m in done}

    def _culprits(self, reason: str) -> dict[int, str]:
        """Members whose own full-window solve fails (all active members if none does alone)."""
        failing = {}
        if self.n_members > 1:
            for m in range(self.n_members):
                if m not in self.frozen and not math.isfinite(self._evaluate_alone(m).train_loss):
                    failing[m] = reason
        return failing or {m: reason + (" (shared by the ensemble)" if self.n_members > 1 else "")
                           for m in range(self.n_members) if m not in self.frozen}

    def _fits_whole(self, phase: str, step: int) -> bool:
        """Whether step ``step``'s training loss is the whole training trajectory's (L-BFGS, or
        Adam with neither random windows nor a curriculum window): the losses the best model is
        chosen by. A window's MSE is not comparable with it (short windows fit better), so the
        other steps count through their evaluations (``eval_every``) only. With a penalty
        (``l2``, a regulariser) the best model is the one with the lowest objective, that MSE
        plus its penalty: the lowest MSE alone would prefer the least regularised model."""
        c = self.config
        return phase == "lbfgs" or (not c.batch_time and not window_points(c, self.data.n_train, step))

    def _track_best(self, m: int, loss: float, objective: float, step: int,
                    snapshot: dict[str, Tensor]) -> None:
        state = self.states[m]
        if objective < state.best_objective:
            state.best_loss, state.best_objective, state.best_step = loss, objective, step
            state.best_model = self._member_of(snapshot, m)

    # ------------------------------------------------------ persistence
    def member_state(self, m: int) -> dict[str, Any]:
        """Member m's training state: a run's checkpoint (``checkpoints/last.pt``), loadable
        with ``torch.load(weights_only=True)``."""
        state = self.states[m]
        return {"step": state.step, "wall_time": state.wall_time, "best_loss": state.best_loss,
                "best_step": state.best_step, "best_objective": state.best_objective,
                "first_loss": state.first_loss, "phase": self._phase,
                "lbfgs_losses": list(state.lbfgs_losses),
                "model": self.field.member_state_dict(m),
                "grid_size": getattr(self.field.net, "grid_size", None),
                "optimizer": self.optimizer.member_state(m),
                "generator": self.generators[m].get_state(), "torch_rng": torch.get_rng_state()}

    def load_member_states(self, states: Sequence[dict[str, Any]], frozen: dict[int, str] | None = None) -> None:
        """Restore every member from :meth:`member_state` s; the live ones saved at one step and
        phase (the field's grid must have the saved grid size). Members in ``frozen``
        (→ reason; diverged) get their parameters only and stay frozen."""
        frozen = dict(frozen or {})
        live = [s for m, s in enumerate(states) if m not in frozen] or [max(states, key=lambda s: s["step"])]
        steps = {int(s["step"]) for s in live}
        phases = {str(s["phase"]) for s in live}
        if len(steps) != 1 or len(phases) != 1:
            raise ValueError(f"the members' checkpoints are at steps {sorted(steps)} and phases "
                             f"{sorted(phases)}; an ensemble resumes members at one step (resume the "
                             "others as single fits)")
        self.step = steps.pop()
        self._phase = phases.pop()
        self.optimizer = self._make_optimizer(self._phase)
        for m, state in enumerate(states):
            self.field.load_member(m, state["model"])
            first = state.get("first_loss")
            self.states[m] = TrainState(step=int(state["step"]), wall_time=float(state["wall_time"]),
                                        best_loss=float(state["best_loss"]),
                                        best_step=int(state["best_step"]),
                                        # earlier checkpoints chose their best by best_loss alone
                                        best_objective=float(state.get("best_objective", state["best_loss"])),
                                        first_loss=None if first is None else float(first),
                                        lbfgs_losses=[float(v) for v in state.get("lbfgs_losses", [])])
            if m not in frozen:
                self.optimizer.load_member_state(m, state["optimizer"])
            self.generators[m].set_state(state["generator"])
        torch.set_rng_state(live[0]["torch_rng"])
        if frozen:
            self._freeze(frozen, self.field.state_dict())


def _evaluate(field: nn.Module, data: Any, solver: dict[str, Any],
              compiled: CompiledLoss | None = None) -> list[Evaluation]:
    """Each member's whole-window training, held-out and extrapolation MSE of ``field`` on
    ``data`` (:class:`kanode.ensemble.data.StackedData`), solved by the fused window kernel
    where ``compiled`` has it (:meth:`CompiledLoss.solution`), else by ``solver``'s solve;
    raises _SharedSolverError."""
    d, n_members = data, field.n_members

    def run(y0: Tensor, t: Tensor) -> Tensor:  # (n_traj, M, n_t, dim): a member's rows in single order
        y = compiled.solution(field, y0, t) if compiled is not None else None    # (n_t, M, B, dim)
        if y is not None:
            return y.permute(2, 1, 0, 3)
        try:
            y = solve_ensemble(field, y0, t, adjoint=False, allow_nonfinite=True, **solver)
        except SolverError as exc:
            raise _SharedSolverError(str(exc)) from exc
        return y.permute(2, 1, 0, 3)

    pred = run(field.initial_values(d.y[:, :, 0]), d.t)
    target = d.y.transpose(0, 1)
    n = d.n_train
    train = observed_mse(pred[:, :, :n], target[:, :, :n], member_dim=1).tolist()
    extrap = (observed_mse(pred[:, :, n:], target[:, :, n:], member_dim=1).tolist() if d.has_extrapolation
              else [None] * n_members)
    val: list[float | None] = [None] * n_members
    if d.y_held_out.shape[1]:
        held = run(d.y_held_out[:, :, 0], d.t_train)
        val = observed_mse(held, d.y_held_out[:, :, :n].transpose(0, 1), member_dim=1).tolist()
    clean = lambda v: v if v is None or math.isfinite(v) else math.inf  # noqa: E731
    return [Evaluation(clean(train[m]), clean(val[m]), clean(extrap[m])) for m in range(n_members)]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

