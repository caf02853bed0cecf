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

from ._params import MemberOptimizer, MemberParams

__all__ = ["BatchedAdam"]


class BatchedAdam(MemberOptimizer):
    """Per-member Adam.

    Parameters
    ----------
    named : ``module.named_parameters()``.
    n_members : M for an ensemble (parameters (M, ...)); None for a single model.
    betas, eps : Adam's constants (torch's defaults), shared by all members; ``eps`` may
        instead be M values, one per member (a fit scales it with its data, see
        :func:`kanode.train.make_optimizer`).

    Attributes
    ----------
    steps_ : list of M ints, the Adam steps each member has taken.
    """

    kind = "adam"

    def __init__(self, named: Iterable[tuple[str, Tensor]], n_members: int | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float | Sequence[float] = 1e-8) -> None:
        self.params = MemberParams(named, n_members)
        self.betas, self.eps = betas, float(eps) if isinstance(eps, (int, float)) else eps
        if not isinstance(eps, (int, float)):
            if len(eps) != self.params.n_members:
                raise ValueError(f"eps needs one value per member ({self.params.n_members}), got {len(eps)}")
            self.eps = torch.tensor([float(e) for e in eps], dtype=self.params.dtype,
                                    device=self.params.device)                   # (M,)
        views = self.params.views()
        self.exp_avg = [torch.zeros_like(v) for v in views]        # (M, ...) each
        self.exp_avg_sq = [torch.zeros_like(v) for v in views]     # (M, ...) each
        self.steps_ = [0] * self.params.n_members

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
        like = dict(dtype=self.params.dtype, device=self.params.device)
        # per-member scalars, built once per step: (M,), viewed as (M, 1, ..., 1) per parameter
        neg_step = torch.tensor([-lrs[m] / (1 - beta1 ** steps[m]) for m in range(n)], **like)
        bias2_sqrt = torch.tensor([math.sqrt(1 - beta2 ** steps[m]) for m in range(n)], **like)
        frozen = torch.tensor([not a for a in active], device=self.params.device)
        everyone = all(active)
        for p, g, m1, m2 in zip(self.params.views(), self.params.grads(), self.exp_avg, self.exp_avg_sq):
            shape = (-1,) + (1,) * (p.ndim - 1)
            new_m1 = m1.lerp(g, 1 - beta1)
            new_m2 = (m2 * beta2).addcmul_(g, g, value=1 - beta2)
            eps = self.eps if isinstance(self.eps, float) else self.eps.view(shape)
            denom = (new_m2.sqrt() / bias2_sqrt.view(shape)).add_(eps)
            update = (new_m1 * neg_step.view(shape)) / denom
            if everyone:
                m1.copy_(new_m1)
                m2.copy_(new_m2)
                p.add_(update)
            else:
                keep = frozen.view(shape)
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
