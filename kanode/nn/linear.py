"""Linear layer with an optional member axis: :class:`torch.nn.Linear` for one model,
M independent linear layers in one ``baddbmm`` with ``members=M``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kanode.nn._checks import check_member_input, check_members_arg


class Linear(nn.Linear):
    """``y = x Wᵀ + b``. Without ``members`` exactly :class:`torch.nn.Linear`
    (same parameters, initialisation and state-dict keys). With ``members=M``:
    ``weight`` (M, out, in), ``bias`` (M, out), inputs (M, ..., in) → (M, ..., out),
    member m initialised as an ``nn.Linear`` would be (kaiming-uniform, a = √5)."""

    members: int | None = None  # no member axis (also for instances built without __init__, old pickles)

    def __init__(self, in_features: int, out_features: int, members: int | None = None) -> None:
        self.members = check_members_arg(members)
        if members is None:
            super().__init__(in_features, out_features)
            return
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))
        bound = 1.0 / math.sqrt(in_features)
        with torch.no_grad():
            for m in range(members):
                nn.init.kaiming_uniform_(self.weight[m], a=math.sqrt(5))
                nn.init.uniform_(self.bias[m], -bound, bound)

    def extra_repr(self) -> str:
        members = "" if self.members is None else f"members={self.members}, "
        return members + super().extra_repr()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ([M,] ..., in) → ([M,] ..., out)."""
        if self.members is None:
            return F.linear(x, self.weight, self.bias)
        check_member_input(x, self.members, self.in_features)
        flat = x.reshape(self.members, -1, self.in_features)  # (M, batch, in)
        out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))
        return out.reshape(*x.shape[:-1], self.out_features)
