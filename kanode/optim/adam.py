"""Adam over M members at once, each with its own learning rate and step count.

Member m's update is ``torch.optim.Adam``'s (default settings: no weight
decay, no AMSGrad) on member m's parameters, operation for operation, so a
single model (M = 1) gets bitwise ``torch.optim.Adam``'s parameters. A member
that is not ``active`` at a step keeps its parameters, moments and step count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._params import MemberParams

__all__ = ["BatchedAdam"]


class BatchedAdam:
    """Per-member Adam.

    Parameters
    ----------
    named : ``module.named_parameters()``.
    n_members : M for an ensemble (parameters (M, ...)); None for a single model.
    betas, eps : Adam's constants (torch's defaults), shared by all members.

    Attributes
    ----------
    steps_ : list of M ints, the Adam steps each member has taken.
    """

    kind = "adam"

    def __init__(self, named: Iterable[tuple[str, Tensor]], n_members: int | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = MemberParams(named, n_members)
        self.betas, self.eps = betas, eps
        views = self.params.views()
        self.exp_avg = [torch.zeros_like(v) for v in views]        # (M, ...) each
        self.exp_avg_sq = [torch.zeros_like(v) for v in views]     # (M, ...) each
        self.steps_ = [0] * self.params.n_members

    def zero_grad(self) -> None:
        self.params.zero_grad()

    def _per_member(self, values: Sequence[float], like: Tensor) -> Tensor:
        """(M, 1, ..., 1) tensor of per-member scalars broadcasting against ``like`` (M, ...)."""
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(
            (-1,) + (1,) * (like.ndim - 1))

    @torch.no_grad()
    def step(self, lr: float | Sequence[float], active: Sequence[bool] | None = None) -> None:
        """One Adam step with the current gradients.

        lr : one learning rate, or M (one per member).
        active : M bools (host side); inactive members are left unchanged.
        """
        n = self.params.n_members
        lrs = [float(lr)] * n if isinstance(lr, (int, float)) else [float(v) for v in lr]
        active = [True] * n if active is None else [bool(a) for a in active]
        if len(lrs) != n or len(active) != n:
            raise ValueError(f"lr and active need {n} entries (one per member)")
        if not any(active):
            return
        beta1, beta2 = self.betas
        for m in range(n):
            self.steps_[m] += active[m]
        steps = [max(s, 1) for s in self.steps_]
        step_size = [lrs[m] / (1 - beta1 ** steps[m]) for m in range(n)]
        bias2_sqrt = [math.sqrt(1 - beta2 ** steps[m]) for m in range(n)]
        everyone = all(active)
        for p, g, m1, m2 in zip(self.params.views(), self.params.grads(), self.exp_avg, self.exp_avg_sq):
            new_m1 = m1.lerp(g, 1 - beta1)
            new_m2 = (m2 * beta2).addcmul_(g, g, value=1 - beta2)
            denom = (new_m2.sqrt() / self._per_member(bias2_sqrt, p)).add_(self.eps)
            update = (new_m1 * self._per_member([-s for s in step_size], p)) / denom
            if everyone:
                m1.copy_(new_m1)
                m2.copy_(new_m2)
                p.add_(update)
            else:
                keep = self._per_member([0.0 if a else 1.0 for a in active], p).bool()
                m1.copy_(torch.where(keep, m1, new_m1))
                m2.copy_(torch.where(keep, m2, new_m2))
                p.add_(torch.where(keep, torch.zeros_like(update), update))

    # ---------------------------------------------------------- state
    def member_state(self, m: int) -> dict[str, Any]:
        """Member m's state in the single-model format (cloned tensors, keyed by parameter name)."""
        names = self.params.names
        return {"kind": self.kind, "step": self.steps_[m],
                "exp_avg": {k: t[m].clone() for k, t in zip(names, self.exp_avg)},
                "exp_avg_sq": {k: t[m].clone() for k, t in zip(names, self.exp_avg_sq)}}

    @torch.no_grad()
    def load_member_state(self, m: int, state: dict[str, Any]) -> None:
        """Load a :meth:`member_state` (or a legacy ``torch.optim.Adam`` state dict) into member m."""
        state = _from_torch_adam(state, self.params.names) if "kind" not in state else state
        if state["kind"] != self.kind:
            raise ValueError(f"an {state['kind']!r} optimiser state does not load into Adam")
        for key, tensors in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            saved = state[key]
            if not saved and int(state["step"]) == 0:  # a state saved before the first step
                for tensor in tensors:
                    tensor[m].zero_()
                continue
            if sorted(saved) != sorted(self.params.names):
                raise ValueError(f"the saved Adam state has parameters {sorted(saved)[:4]}..., "
                                 f"the model {sorted(self.params.names)[:4]}...")
            for name, tensor in zip(self.params.names, tensors):
                tensor[m].copy_(saved[name])
        self.steps_[m] = int(state["step"])

    def state_dict(self) -> dict[str, Any]:
        """A single model's state (M = 1 only; ensembles save per member)."""
        if self.params.n_members != 1:
            raise ValueError("an ensemble's optimiser state is saved per member (member_state)")
        return self.member_state(0)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_member_state(0, state)


def _from_torch_adam(state: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A ``torch.optim.Adam`` state dict (checkpoints of earlier kanode versions) in
    :meth:`BatchedAdam.member_state`'s format."""
    per_param = state["state"]
    order = state["param_groups"][0]["params"]
    if len(order) != len(names):
        raise ValueError(f"the saved Adam state has {len(order)} parameters, the model {len(names)}")
    if not per_param:  # saved before the first step
        return {"kind": "adam", "step": 0, "exp_avg": {}, "exp_avg_sq": {}}
    step = int(float(per_param[order[0]]["step"]))
    return {"kind": "adam", "step": step,
            "exp_avg": {n: per_param[i]["exp_avg"] for n, i in zip(names, order)},
            "exp_avg_sq": {n: per_param[i]["exp_avg_sq"] for n, i in zip(names, order)}}
