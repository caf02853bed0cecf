"""Multilayer perceptron with the same constructor style as :class:`kanode.nn.KAN`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kanode.nn._checks import check_input, check_member_input, check_members_arg, check_widths
from kanode.nn.linear import Linear

_ACTIVATIONS = {
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}


class MLP(nn.Module):
    """``Linear → act → … → Linear``, (..., widths[0]) → (..., widths[-1]).

    No activation after the last layer. Parameter count Σ out · (in + 1).
    ``members=M``: M MLPs on a leading member axis (parameters and inputs (M, ...)).
    """

    members: int | None = None  # no member axis (also for instances built without __init__, old pickles)

    def __init__(self, widths: Sequence[int] = (2, 50, 2), activation: str = "tanh", *,
                 members: int | None = None) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not known; use one of {sorted(_ACTIVATIONS)}")
        self.widths = check_widths(widths)
        self.activation = activation
        self.members = check_members_arg(members)
        layers: list[nn.Module] = []
        for n, (a, b) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            if n:
                layers.append(_ACTIVATIONS[activation]())
            layers.append(Linear(a, b, members=members))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ([M,] ..., widths[0]) → ([M,] ..., widths[-1])."""
        if self.members is None:
            check_input(x, self.widths[0])
        else:
            check_member_input(x, self.members, self.widths[0])
        return self.net(x)
