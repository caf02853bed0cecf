"""KAN networks: a stack of KAN layers of one basis family.

``LAYERS`` is the one table of layer types, basis name → layer class; every
layer class takes ``(in_features, out_features, members=None, **layer_kwargs)``.
With ``members=M`` the network is M networks on a leading member axis
(inputs (M, ..., widths[0]); :mod:`kanode.ensemble` stacks single networks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kanode.nn._checks import check_input, check_member_input, check_members_arg, check_widths
from kanode.nn.kan import KANLayer
from kanode.nn.rswaf import RSWAFLayer

LAYERS: dict[str, type[nn.Module]] = {"bspline": KANLayer, "rswaf": RSWAFLayer}


class KAN(nn.Module):
    """Stack of KAN layers, (..., widths[0]) → (..., widths[-1]).

    ``basis`` names the layer type in ``LAYERS`` (``"bspline"``:
    :class:`KANLayer`, ``"rswaf"``: :class:`RSWAFLayer`); ``layer_kwargs`` go
    to every layer. ``members``: M networks on a leading member axis
    (parameters and inputs (M, ...)); ``regularization`` is then per member (M,).
    """

    members: int | None = None  # no member axis (also for instances built without __init__, old pickles)

    def __init__(self, widths: Sequence[int] = (2, 10, 2), basis: str = "bspline", *,
                 members: int | None = None, **layer_kwargs) -> None:
        super().__init__()
        if basis not in LAYERS:
            raise ValueError(f"basis={basis!r} is not known; use one of {sorted(LAYERS)}")
        self.widths = check_widths(widths)
        self.basis = basis
        self.members = check_members_arg(members)
        self.layers = nn.ModuleList(
            LAYERS[basis](a, b, members=members, **layer_kwargs) for a, b in zip(self.widths[:-1], self.widths[1:])
        )

    @property
    def grid_size(self) -> int:
        return self.layers[0].grid_size

    def _check(self, x: torch.Tensor) -> None:
        if self.members is None:
            check_input(x, self.widths[0])
        else:
            check_member_input(x, self.members, self.widths[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ([M,] ..., widths[0]) → ([M,] ..., widths[-1])."""
        if self.members is None:  # inline: a neural-ODE solve calls this hundreds of times per step
            check_input(x, self.widths[0])
        else:
            check_member_input(x, self.members, self.widths[0])
        for layer in self.layers:
            x = layer(x)
        return x

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor) -> None:
        """Update every layer's grid from the activations it sees for x ([M,] batch, widths[0])
        (per member: each on its own states x[m])."""
        self._check(x)
        for layer in self.layers:
            layer.update_grid(x)
            x = layer(x)

    def extend_grid(self, new_grid_size: int) -> None:
        """Extend every layer to ``new_grid_size`` (new Parameters: rebuild optimisers)."""
        for layer in self.layers:
            layer.extend_grid(new_grid_size)

    def regularization(self, x: torch.Tensor, l1: float = 1.0, entropy: float = 2.0) -> torch.Tensor:
        """Σ over layers of ``l1 · Σ|φ|₁ + entropy · S`` (KAN paper), x: ([M,] batch, widths[0]) → ([M],)."""
        self._check(x)
        lead = () if self.members is None else (self.members,)
        x = x.reshape(*lead, -1, self.widths[0])
        total = x.new_zeros(lead)
        for layer in self.layers:
            total = total + layer.regularization(x, l1=l1, entropy=entropy)
            x = layer(x)
        return total


class RSWAF(KAN):
    """KAN of :class:`RSWAFLayer` s: ``KAN(widths, basis="rswaf", **layer_kwargs)``
    as its own class, (..., widths[0]) → (..., widths[-1])."""

    def __init__(self, widths: Sequence[int] = (2, 10, 2), **layer_kwargs) -> None:
        if "basis" in layer_kwargs:
            raise TypeError("RSWAF always has basis='rswaf'; for another basis use KAN(widths, basis=...)")
        super().__init__(widths, basis="rswaf", **layer_kwargs)
