"""Training M neural ODEs in one solve per step, each member as its single fit would.

:class:`EnsembleTrainer` runs :class:`kanode.train.Trainer`'s schedule (Adam,
L-BFGS or Adam → L-BFGS, windows, grid updates, evaluation, best-model
tracking) on an :class:`~kanode.ensemble.EnsembleVectorField`:

* member m's loss is its own MSE against its own data; the backward of the
  sum of the members' losses gives each member exactly its own gradient;
* the optimisers are :mod:`kanode.optim`'s, which the single Trainer uses too
  (a single fit is an ensemble of one), with per-member learning rates and
  schedules (``lr_at`` of each member's config) and per-member clipping;
* member m draws its random windows from its own generator seeded with its
  seed, so it sees the windows of its single fit;
* a member whose loss breaks the divergence rule (:mod:`kanode.divergence`:
  not finite, or above ``divergence_factor`` × its first loss), whose gradient
  becomes non-finite, or whose solve fails, is frozen (its field is masked to zero, see ``set_live``) at its last
  finite parameters and recorded; the others go on. With a fixed-step method
  the others are unaffected; with an adaptive one they share the step, so a
  failing L-BFGS trial point of one member shrinks the others' trial step in
  that round too.

Per-member state (:meth:`member_state`) is the single Trainer's
``state_dict`` format, so a member's checkpoint resumes as a single fit, and
a set of single checkpoints at one step resumes as an ensemble.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from kanode.compiled import CompiledLoss, compiles, torch_compiles
from kanode.config import FitConfig
from kanode.data import FitData, observed_mse, sample_windows, take_windows, window_times
from kanode.divergence import divergence_reason
from kanode.ensemble.data import StackedData
from kanode.ensemble.field import EnsembleVectorField
from kanode.ensemble.packing import check_packable
from kanode.ensemble.solve import solve_ensemble
from kanode.horizons import curriculum_windows, window_points
from kanode.ode import SolverError, backward_guarded
from kanode.train import (Evaluation, StepRecord, Trainer, TrainState, apply_grid_schedule, l2_penalty, lr_at,
                          make_optimizer, phase_at, solver_options, state_swapped)

__all__ = ["EnsembleTrainer", "EnsembleStep"]


@dataclass(frozen=True)
class EnsembleStep:
    """One optimiser step of the ensemble: a record per member that took it, and the
    members that diverged at it (member → reason)."""

    records: dict[int, StepRecord]
    diverged: dict[int, str]


@dataclass
class _Counters:
    forward: int = 0
    backward: int = 0
    first_losses: list[float] | None = None
    grad_norms: list[float] | None = None
    first_regs: list[float] | None = None


class _SharedSolverError(RuntimeError):
    """The ensemble solve failed as a whole (an adaptive solve shares its steps)."""


class EnsembleTrainer:
    """Fits M members of ``field`` to their data following their configs.

    Parameters
    ----------
    field : the stacked vector fields (M members).
    datas : M members' data (one time grid and shape; values may differ).
    configs : M configs that :func:`kanode.ensemble.check_packable` accepts.
    """

    def __init__(self, field: EnsembleVectorField, datas: Sequence[FitData],
                 configs: Sequence[FitConfig]) -> None:
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
        self.optimizer = make_optimizer(self._phase, field.named_parameters(), n, self.config,
                                        self._loss_scales)
        self._grid_steps = set(self.config.grid_update_steps)
        self._extend_steps = {int(s): int(g) for s, g in self.config.grid_extend}

    # ---------------------------------------------------------- members
    @property
    def active(self) -> list[bool]:
        return [m not in self.frozen for m in range(self.n_members)]

    def _freeze(self, members: dict[int, str], snapshot: dict[str, Tensor]) -> None:
        """Freeze ``members`` (→ reason) at the parameters of ``snapshot``."""
        for m, reason in members.items():
            self.frozen[m] = reason
            self.field.load_member(m, {k: v[m] for k, v in snapshot.items()})
        live = torch.tensor(self.active, dtype=self.field.out_scale.dtype, device=self.field.out_scale.device)
        self.field.set_live(live)

    @property
    def total_steps(self) -> int:
        return self.config.total_steps

    # ------------------------------------------------------- objective
    def _solve(self, y0: Tensor, t: Tensor, adjoint: bool) -> Tensor:
        if self.compiled is not None and not torch.is_grad_enabled():  # evaluations: the fused kernel
            solution = self.compiled.solution(self.field, y0, t)
            if solution is not None:
                return solution
        try:
            return solve_ensemble(self.field, y0, t, adjoint=adjoint, allow_nonfinite=True, **self._solver)
        except SolverError as exc:
            raise _SharedSolverError(str(exc)) from exc

    def _losses(self, full: bool) -> Tensor:
        """(M,) training MSE of each member over its observed values (whole window, or its own
        random windows)."""
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

    def _loss_and_grad(self, counters: _Counters, full: bool) -> Tensor:
        """(M,) losses with the gradients set; +inf where a member's loss or gradient is
        not finite (raises _SharedSolverError when the solve fails as a whole)."""
        self.optimizer.zero_grad()
        self.field.reset_nfe()
        data_losses = self._losses(full)
        counters.forward += self.field.reset_nfe()
        losses = data_losses
        if self.config.l2:  # each member's own penalty, as its single fit adds it
            penalty = l2_penalty(self.field.net, self.config.l2, self.n_members)         # (M,)
            losses = data_losses + penalty
            if counters.first_regs is None:
                counters.first_regs = penalty.detach().tolist()
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
        for g in self.optimizer.params.grads():
            g.mul_(scale.view((-1,) + (1,) * (g.ndim - 1)))

    def _trial(self, counters: _Counters) -> Tensor:
        """The L-BFGS closure; a trial point whose shared solve fails is +inf for everyone."""
        first = counters.first_losses is None
        try:
            return self._loss_and_grad(counters, full=True)
        except _SharedSolverError:
            if first:  # the step's own start: steps() freezes whoever fails alone
                raise
            return torch.full((self.n_members,), math.inf, dtype=self.data.y.dtype)

    # ------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> list[Evaluation]:
        """Each member's whole-window training, held-out and extrapolation MSE over its
        observed values (inf for a member whose solve is not finite)."""
        d = self.data
        saved = self.field.nfe
        try:
            # (n_traj, M, n_t, dim): a member's row in the single evaluation's order
            y0 = self.field.initial_values(d.y[:, :, 0])
            pred = self._solve(y0, d.t, adjoint=False).permute(2, 1, 0, 3)
            target = d.y.transpose(0, 1)
            n = d.n_train
            train = observed_mse(pred[:, :, :n], target[:, :, :n], member_dim=1).tolist()
            extrap = (observed_mse(pred[:, :, n:], target[:, :, n:], member_dim=1).tolist() if d.has_extrapolation
                      else [None] * self.n_members)
            val: list[float | None] = [None] * self.n_members
            if d.y_held_out.shape[1]:
                held = self._solve(d.y_held_out[:, :, 0], d.t_train, adjoint=False).permute(2, 1, 0, 3)
                val = observed_mse(held, d.y_held_out[:, :, :n].transpose(0, 1), member_dim=1).tolist()
        except _SharedSolverError:
            return [self.member_trainer(m).evaluate() for m in range(self.n_members)]
        finally:
            self.field.nfe = saved
        clean = lambda v: v if v is None or math.isfinite(v) else math.inf  # noqa: E731
        return [Evaluation(clean(train[m]), clean(val[m]), clean(extrap[m])) for m in range(self.n_members)]

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
            self.optimizer = make_optimizer(self._phase, self.field.named_parameters(), self.n_members,
                                            self.config, self._loss_scales)
            return True
        return False

    # ------------------------------------------------------------- loop
    def steps(self) -> Iterator[EnsembleStep]:
        """Run the remaining steps, yielding one :class:`EnsembleStep` per optimiser step
        (until every member is done or frozen)."""
        c = self.config
        while self.step < self.total_steps and len(self.frozen) < self.n_members:
            step = self.step
            start = time.perf_counter()
            phase = phase_at(c, step)
            if phase != self._phase:
                self._phase = phase
                self.optimizer = make_optimizer(phase, self.field.named_parameters(), self.n_members, c,
                                                self._loss_scales)
            snapshot = copy.deepcopy(self.field.state_dict())
            diverged: dict[int, str] = {}
            try:
                if self._adapt_grid(step):  # the step starts from the adapted grid (as a single fit's)
                    snapshot = copy.deepcopy(self.field.state_dict())
            except _SharedSolverError as exc:
                diverged = self._culprits(f"solver failure in the grid update: {exc}")
                self._freeze(diverged, snapshot)
                yield EnsembleStep({}, diverged)
                continue
            lrs = [lr_at(cfg, step) for cfg in self.configs]
            counters = _Counters()
            rng = [g.get_state() for g in self.generators]
            try:
                if phase == "adam":
                    self._loss_and_grad(counters, full=False)
                else:
                    self.optimizer.step(lambda: self._trial(counters), lrs, self.active)
            except _SharedSolverError as exc:  # find who fails alone, freeze them, redo the step
                for g, state in zip(self.generators, rng):
                    g.set_state(state)
                self.field.load_state_dict(snapshot)
                diverged = self._culprits(f"solver failure: {exc}")
                self._freeze(diverged, snapshot)
                yield EnsembleStep({}, diverged)
                continue
            assert counters.first_losses is not None and counters.grad_norms is not None
            bad = self._diverged(counters)
            if phase == "adam":
                active = [a and m not in bad for m, a in enumerate(self.active)]
                self.optimizer.step(lrs, active)
            if bad:
                self._freeze(bad, snapshot)
            evaluate = (step + 1) % c.eval_every == 0 or step + 1 == self.total_steps
            evals = self._evaluate_at(snapshot) if evaluate else None
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
                self._track_best(m, counters.first_losses[m], step, snapshot)
                ev = evals[m] if evals else None
                records[m] = StepRecord(step=step + 1, phase=phase, train_loss=counters.first_losses[m],
                                        val_loss=ev.val_loss if ev else None,
                                        extrap_loss=ev.extrap_loss if ev else None, lr=lrs[m],
                                        nfe_forward=counters.forward, nfe_backward=counters.backward,
                                        wall_time=state.wall_time, grad_norm=counters.grad_norms[m],
                                        reg_loss=counters.first_regs[m] if counters.first_regs else None)
            yield EnsembleStep(records, bad)

    def _diverged(self, counters: _Counters) -> dict[int, str]:
        """Live members that diverged at this step (→ reason): the single fit's rule."""
        assert counters.first_losses is not None and counters.grad_norms is not None
        bad = {}
        for m in range(self.n_members):
            if m in self.frozen:
                continue
            reason = divergence_reason(counters.first_losses[m], self.states[m].first_loss,
                                       self.configs[m].divergence_factor)
            if reason is None and not math.isfinite(counters.grad_norms[m]):
                reason = "non-finite gradient"
            if reason is not None:
                bad[m] = reason
        return bad

    def _culprits(self, reason: str) -> dict[int, str]:
        """Members whose own full-window solve fails (all active members if none does alone)."""
        failing = {}
        for m in range(self.n_members):
            if m in self.frozen:
                continue
            loss = self.member_trainer(m).evaluate().train_loss
            if not math.isfinite(loss):
                failing[m] = reason
        return failing or {m: reason + " (shared by the ensemble)" for m in range(self.n_members)
                           if m not in self.frozen}

    def _track_best(self, m: int, loss: float, step: int, snapshot: dict[str, Tensor]) -> None:
        state = self.states[m]
        if loss < state.best_loss:
            state.best_loss, state.best_step = loss, step
            state.best_model = {k: v[m].clone() for k, v in snapshot.items()}

    # ------------------------------------------------------ persistence
    def member_state(self, m: int) -> dict[str, Any]:
        """Member m's training state in :meth:`kanode.train.Trainer.state_dict`'s format."""
        state = self.states[m]
        return {"step": state.step, "wall_time": state.wall_time, "best_loss": state.best_loss,
                "best_step": state.best_step, "first_loss": state.first_loss, "phase": self._phase,
                "model": self.field.member_state_dict(m),
                "grid_size": getattr(self.field.net, "grid_size", None),
                "optimizer": self.optimizer.member_state(m),
                "generator": self.generators[m].get_state(), "torch_rng": torch.get_rng_state()}

    def load_member_states(self, states: Sequence[dict[str, Any]], frozen: dict[int, str] | None = None) -> None:
        """Restore every member from single-format states; the live ones saved at one step and
        phase (the ensemble's grid must have the saved grid size). Members in ``frozen``
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
        self.optimizer = make_optimizer(self._phase, self.field.named_parameters(), self.n_members,
                                        self.config, self._loss_scales)
        for m, state in enumerate(states):
            self.field.load_member(m, state["model"])
            first = state.get("first_loss")
            self.states[m] = TrainState(step=int(state["step"]), wall_time=float(state["wall_time"]),
                                        best_loss=float(state["best_loss"]),
                                        best_step=int(state["best_step"]),
                                        first_loss=None if first is None else float(first))
            if m not in frozen:
                self.optimizer.load_member_state(m, state["optimizer"])
            self.generators[m].set_state(state["generator"])
        torch.set_rng_state(live[0]["torch_rng"])
        if frozen:
            self._freeze(frozen, self.field.state_dict())

    def member_trainer(self, m: int) -> Trainer:
        """A single :class:`kanode.train.Trainer` holding member m (copies) and its state:
        what the member's own fit would be at this point (summaries, plots, probes)."""
        trainer = Trainer(self.field.member(m), self.data.members[m], self.configs[m])
        trainer.load_state_dict(self.member_state(m))
        trainer.state.best_model = self.states[m].best_model
        return trainer

