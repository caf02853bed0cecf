"""L-BFGS over M members at once: independent histories, one line search each.

Member m follows ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``'s
algorithm on its own parameters: the same two-loop recursion over its last
``history_size`` accepted curvature pairs, the same initial step (min(1,
1/|g|₁)·lr on its first iteration, lr after), the same strong-Wolfe search
(:mod:`kanode.optim.line_search`). The members share only the objective
evaluations: each round of the searches is one closure call.

Deliberate differences from torch: a trial point with a non-finite loss or
gradient shrinks the step instead of poisoning the search; a member whose
direction is not a descent direction restarts from steepest descent (torch
stops there and stays stuck); and a member whose search ended without moving
(step 0, after its first iteration) is not searched again in later steps.
That search would repeat exactly — same point, same gradient, an unchanged
history, so the same direction and the same trial steps — and torch repeats
it at every step for ~25 evaluations and the same result; in an ensemble
those rounds would hold up every other member too. The objective must be
deterministic for this (kanode's L-BFGS objective is the whole training
window); a new optimiser (phase change, grid update) starts afresh. A single
model is M = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kanode.native_build import Kernel
from kanode.nn import _native

from ._params import MemberOptimizer, MemberParams
from .line_search import search_members, strong_wolfe

__all__ = ["BatchedLBFGS"]

Closure = Callable[[], Tensor]   # sets gradients, returns the (M,) losses
SubsetClosure = Callable[[list[int]], Tensor]
"""As :data:`Closure` for the listed members; the others' losses and gradients may be anything
(e.g. kanode.train evaluates them with a zero field, which costs next to nothing)."""

# the two-loop recursion of every member in one C++ call (the loops of _two_loop_torch);
# ~100 host-side torch operations per history pair otherwise
TWO_LOOP = Kernel(Path(__file__).resolve().parents[1] / "csrc" / "lbfgs_cpu.cpp", "kanode_lbfgs",
                  "the L-BFGS CPU kernel", _native.enabled)


class BatchedLBFGS(MemberOptimizer):
    """Per-member L-BFGS with a strong-Wolfe line search.

    Parameters
    ----------
    named : ``module.named_parameters()``.
    n_members : M for an ensemble (parameters (M, ...)); None for a single model.
    history_size : curvature pairs kept per member.
    max_iter : iterations per :meth:`step` (torch's meaning).
    max_eval : objective evaluations per step and member before it stops iterating.
    tolerance_change : the line search's bracket tolerance (torch's 1e-9).
    """

    kind = "lbfgs"

    def __init__(self, named: Iterable[tuple[str, Tensor]], n_members: int | None = None,
                 history_size: int = 50, max_iter: int = 1, max_eval: int | None = None,
                 tolerance_change: float = 1e-9) -> None:
        self.params = MemberParams(named, n_members)
        self.history_size, self.max_iter = history_size, max_iter
        self.max_eval = max_eval if max_eval is not None else max_iter * 25
        self.tolerance_change = tolerance_change
        n, size = self.params.n_members, sum(self.params.sizes)
        like = dict(dtype=self.params.dtype, device=self.params.device)
        self.n_iter_ = [0] * n
        self.t_ = [0.0] * n
        self.direction_ = torch.zeros(n, size, **like)                      # (M, P)
        self.prev_grad_ = torch.zeros(n, size, **like)                      # (M, P)
        self.steps_hist_ = torch.zeros(n, history_size, size, **like)       # s pairs (M, H, P)
        self.grads_hist_ = torch.zeros(n, history_size, size, **like)       # y pairs (M, H, P)
        self.count_ = [0] * n      # valid pairs per member
        self.head_ = [0] * n       # ring position of the next pair
        self.h_diag_ = [1.0] * n
        self.stuck_ = [False] * n  # the last search did not move (it would repeat exactly)

    # ------------------------------------------------------------- algebra
    def _push(self, members: Sequence[int], s: Tensor, y: Tensor, ys: Sequence[float],
              yy: Sequence[float]) -> None:
        for m in members:
            self.steps_hist_[m, self.head_[m]] = s[m]
            self.grads_hist_[m, self.head_[m]] = y[m]
            self.head_[m] = (self.head_[m] + 1) % self.history_size
            self.count_[m] = min(self.count_[m] + 1, self.history_size)
            self.h_diag_[m] = ys[m] / yy[m]

    def _two_loop(self, grad: Tensor) -> Tensor:
        """(M, P) L-BFGS directions −H g from each member's history (newest pair first):
        the C++ kernel on the CPU where it is built, else :meth:`_two_loop_torch`."""
        kernel = TWO_LOOP.get() if grad.device.type == "cpu" else None
        if kernel is None:
            return self._two_loop_torch(grad)
        return kernel.two_loop(grad, self.steps_hist_, self.grads_hist_, torch.tensor(self.head_),
                               torch.tensor(self.count_), torch.tensor(self.h_diag_, dtype=grad.dtype))

    def _two_loop_torch(self, grad: Tensor) -> Tensor:
        """:meth:`_two_loop` by torch operations (any device; the kernel's reference)."""
        n = self.params.n_members
        rows = torch.arange(n, device=grad.device)
        q = grad.neg()
        depth = max(self.count_)
        alphas, pairs = [], []
        for j in range(depth):
            pos = torch.tensor([(self.head_[m] - 1 - j) % self.history_size for m in range(n)],
                               device=grad.device)
            valid = torch.tensor([j < self.count_[m] for m in range(n)], device=grad.device)
            s, y = self.steps_hist_[rows, pos], self.grads_hist_[rows, pos]   # (M, P)
            ro = torch.where(valid, 1.0 / (y * s).sum(dim=1), torch.zeros((), dtype=grad.dtype,
                                                                             device=grad.device))
            alpha = (s * q).sum(dim=1) * ro                                    # (M,)
            q = q - alpha[:, None] * y
            alphas.append(alpha)
            pairs.append((s, y, ro))
        r = q * torch.tensor(self.h_diag_, dtype=grad.dtype, device=grad.device)[:, None]
        for (s, y, ro), alpha in zip(reversed(pairs), reversed(alphas)):
            beta = (y * r).sum(dim=1) * ro
            r = r + s * (alpha - beta)[:, None]
        return r

    # ---------------------------------------------------------------- step
    def step(self, closure: Closure, lr: float | Sequence[float],
             active: Sequence[bool] | None = None, subset: SubsetClosure | None = None) -> Tensor:
        """``max_iter`` L-BFGS iterations for the active members.

        closure : zeroes and sets the gradients of all members' losses and
            returns the (M,) losses (non-finite entries allowed).
        lr : the step scale (torch's ``lr``), one or one per member.
        active : M host bools; inactive members keep their parameters and state.
        subset : the closure for the line searches' trial points, given the members still
            searching (default: ``closure``). The same steps either way; it only saves the
            work of the members that have found theirs.

        Returns the (M,) losses at the parameters the step started from.
        Members whose starting loss or gradient is not finite do not move.
        """
        n = self.params.n_members
        lrs = [float(lr)] * n if isinstance(lr, (int, float)) else [float(v) for v in lr]
        active = [True] * n if active is None else [bool(a) for a in active]
        x = self.params.flat()
        first_losses = closure().detach()
        losses, grad = first_losses.tolist(), self.params.flat_grad()
        finite = torch.isfinite(grad).all(dim=1).tolist()
        running = [m for m in range(n) if active[m] and finite[m] and math.isfinite(losses[m])
                   and not self.stuck_[m]]
        evals = {m: 1 for m in running}

        def evaluate(trial: Tensor, members: list[int]) -> tuple[list[float], Tensor]:
            self.params.set_flat(trial)
            losses = closure() if subset is None else subset(members)
            return losses.detach().tolist(), self.params.flat_grad()

        for _ in range(self.max_iter):
            l1 = grad.abs().sum(dim=1).tolist()
            running = [m for m in running if l1[m] > 0]  # a zero gradient: converged
            if not running:
                break
            self._update_history(running, grad)
            d = self._two_loop(grad)
            gtd = (grad * d).sum(dim=1).tolist()
            for m in running:
                if self.n_iter_[m] > 1 and not gtd[m] < 0:  # not a descent direction
                    self.count_[m], self.h_diag_[m], self.n_iter_[m] = 0, 1.0, 1
                    d[m] = grad[m].neg()
                    gtd[m] = -float((grad[m] * grad[m]).sum())
            mask = torch.zeros(n, dtype=torch.bool, device=x.device)
            mask[running] = True
            self.direction_ = torch.where(mask[:, None], d, self.direction_)
            self.prev_grad_ = torch.where(mask[:, None], grad, self.prev_grad_)
            d = self.direction_
            d_norm = d.abs().amax(dim=1).tolist()
            searches = {}
            for m in running:
                t0 = min(1.0, 1.0 / l1[m]) * lrs[m] if self.n_iter_[m] == 1 else lrs[m]
                searches[m] = strong_wolfe(t0, losses[m], grad[m], gtd[m], d_norm[m],
                                           tolerance_change=self.tolerance_change)
            found = search_members(evaluate, x, d, searches)
            steps = torch.zeros(n, dtype=x.dtype)
            new_grad = grad.clone()
            for m, (loss, g_row, t, used) in found.items():
                self.stuck_[m] = t == 0.0 and self.n_iter_[m] > 1
                steps[m], losses[m], self.t_[m] = t, loss, t
                new_grad[m] = g_row
                evals[m] += used
            x = x + steps.to(x.device)[:, None] * d
            grad = new_grad
            running = [m for m in running if evals[m] < self.max_eval and self.t_[m] * d_norm[m] > 0]
        self.params.set_flat(x)
        return first_losses

    def _update_history(self, running: list[int], grad: Tensor) -> None:
        """Count the iteration and store each running member's last (s, y) pair."""
        for m in running:
            self.n_iter_[m] += 1
        later = [m for m in running if self.n_iter_[m] > 1]
        if later:
            t = torch.tensor(self.t_, dtype=grad.dtype, device=grad.device)
            y = grad - self.prev_grad_
            s = self.direction_ * t[:, None]
            ys, yy = (y * s).sum(dim=1).tolist(), (y * y).sum(dim=1).tolist()
            self._push([m for m in later if ys[m] > 1e-10], s, y, ys, yy)

    # ---------------------------------------------------------- state
    def member_state(self, m: int) -> dict[str, Any]:
        """Member m's state in the single-model format (history oldest first)."""
        order = [(self.head_[m] - self.count_[m] + j) % self.history_size for j in range(self.count_[m])]
        return {"kind": self.kind, "n_iter": self.n_iter_[m], "t": self.t_[m], "stuck": self.stuck_[m],
                "h_diag": self.h_diag_[m], "direction": self.direction_[m].clone(),
                "prev_grad": self.prev_grad_[m].clone(),
                "s": self.steps_hist_[m, order].clone(), "y": self.grads_hist_[m, order].clone()}

    @torch.no_grad()
    def load_member_state(self, m: int, state: dict[str, Any]) -> None:
        """Load a :meth:`member_state` (or a legacy ``torch.optim.LBFGS`` state dict)."""
        state = _from_torch_lbfgs(state) if "kind" not in state else state
        if state["kind"] != self.kind:
            raise ValueError(f"an {state['kind']!r} optimiser state does not load into L-BFGS")
        size = self.direction_.shape[1]
        if int(state["n_iter"]) == 0:  # saved before the first iteration
            self._reset(m)
            return
        s, y = state["s"], state["y"]
        if s.ndim != 2 or s.shape != y.shape or (s.numel() and s.shape[1] != size):
            raise ValueError(f"the saved L-BFGS history has shape {tuple(s.shape)}; the model has "
                             f"{size} parameters")
        keep = min(s.shape[0], self.history_size)
        self.steps_hist_[m].zero_()
        self.grads_hist_[m].zero_()
        if keep:
            self.steps_hist_[m, :keep] = s[-keep:]
            self.grads_hist_[m, :keep] = y[-keep:]
        self.count_[m], self.head_[m] = keep, keep % self.history_size
        self.n_iter_[m], self.t_[m] = int(state["n_iter"]), float(state["t"])
        self.stuck_[m] = bool(state.get("stuck", False))
        self.h_diag_[m] = float(state["h_diag"])
        for name in ("direction", "prev_grad"):
            if state[name].shape != (size,):
                raise ValueError(f"the saved L-BFGS {name} has {state[name].numel()} entries; "
                                 f"the model has {size} parameters")
        self.direction_[m] = state["direction"]
        self.prev_grad_[m] = state["prev_grad"]

    def _reset(self, m: int) -> None:
        self.steps_hist_[m].zero_()
        self.grads_hist_[m].zero_()
        self.direction_[m].zero_()
        self.prev_grad_[m].zero_()
        self.count_[m] = self.head_[m] = self.n_iter_[m] = 0
        self.t_[m], self.h_diag_[m] = 0.0, 1.0
        self.stuck_[m] = False



def _from_torch_lbfgs(state: dict[str, Any]) -> dict[str, Any]:
    """A ``torch.optim.LBFGS`` state dict (checkpoints of earlier kanode versions) in
    :meth:`BatchedLBFGS.member_state`'s format."""
    saved = next(iter(state["state"].values()), None)
    if saved is None or "d" not in saved:  # saved before the first step
        return {"kind": "lbfgs", "n_iter": 0, "t": 0.0, "h_diag": 1.0, "direction": None,
                "prev_grad": None, "s": torch.zeros(0, 0), "y": torch.zeros(0, 0)}
    stack = lambda items: torch.stack(list(items)) if items else torch.zeros(0, saved["d"].numel())  # noqa: E731
    h_diag = saved["H_diag"]
    return {"kind": "lbfgs", "n_iter": int(saved["n_iter"]), "t": float(saved["t"]),
            "h_diag": float(h_diag) if not isinstance(h_diag, Tensor) else float(h_diag.item()),
            "direction": saved["d"], "prev_grad": saved["prev_flat_grad"],
            "s": stack(saved["old_stps"]), "y": stack(saved["old_dirs"])}
