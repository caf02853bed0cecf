"""Ensemble of RSWAF KAN layers: M :class:`kanode.nn.RSWAFLayer` s stacked on a member axis."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kanode.ensemble._activations import ACTIVATIONS, check_activation
from kanode.ensemble._members import (MemberState, check_ensemble_input, check_members, check_same,
                                      each_member, edge_l1_entropy, stack)
from kanode.nn import RSWAFLayer

_SHARED = ("in_features", "out_features", "grid_size", "spline_order", "base_activation")


def rswaf_basis(x: Tensor, centers: Tensor) -> Tensor:
    """x: (M, batch, in), centers: (M, in, G) uniformly spaced per row → (M, batch, in, G)."""
    h = (centers[..., -1:] - centers[..., :1]) / (centers.shape[-1] - 1)  # (M, in, 1)
    return 1 - torch.tanh((x.unsqueeze(-1) - centers.unsqueeze(1)) / h.unsqueeze(1)) ** 2


class EnsembleRSWAFLayer(MemberState, nn.Module):
    """M RSWAF KAN layers, (M, ..., in_features) → (M, ..., out_features).

    Built from single layers of equal shape. Parameters ``spline_coef``
    (M, out, in, grid_size), ``base_weight``, ``spline_scale`` (M, out, in);
    buffer ``knots`` (M, in, grid_size) holding each member's centres. Plain
    autograd ops: the bases, then two batched GEMMs.
    """

    def __init__(self, layers: Sequence[RSWAFLayer]) -> None:
        super().__init__()
        layers = check_members("RSWAFLayer", layers, RSWAFLayer)
        check_same("RSWAFLayer", layers, _SHARED)
        first = layers[0]
        self.n_members = len(layers)
        self.in_features, self.out_features = first.in_features, first.out_features
        self.grid_size, self.spline_order = first.grid_size, first.spline_order
        self.base_activation = check_activation(first.base_activation)
        for name in ("spline_coef", "spline_scale", "base_weight"):
            setattr(self, name, nn.Parameter(stack("RSWAFLayer", name, [getattr(la, name) for la in layers])))
        self.register_buffer("knots", stack("RSWAFLayer", "knots", [layer.knots for layer in layers]))

    def extra_repr(self) -> str:
        return f"{self.n_members} members, {self.in_features}, {self.out_features}, grid_size={self.grid_size}"

    def forward(self, x: Tensor) -> Tensor:
        """x: (M, ..., in) → (M, ..., out)."""
        check_ensemble_input(x, self.n_members, self.in_features)
        n_members = self.n_members
        flat = x.reshape(n_members, -1, self.in_features)  # (M, batch, in)
        basis = rswaf_basis(flat, self.knots.to(x.dtype))  # (M, batch, in, G)
        basis = basis.reshape(n_members, flat.shape[1], -1)  # (M, batch, in·G)
        table = (self.spline_coef * self.spline_scale.unsqueeze(-1)).reshape(n_members, self.out_features, -1)
        spline = torch.bmm(basis, table.transpose(1, 2))  # (M, batch, out)
        act = ACTIVATIONS[self.base_activation][0](flat)
        out = torch.baddbmm(spline, act, self.base_weight.transpose(1, 2))
        return out.reshape(*x.shape[:-1], self.out_features)

    def edge_activations(self, x: Tensor) -> Tensor:
        """Output of every edge. x: (M, ..., in) → (M, batch, out, in); differentiable."""
        check_ensemble_input(x, self.n_members, self.in_features)
        flat = x.reshape(self.n_members, -1, self.in_features)
        spline = torch.einsum("mbij,moij->mboi", rswaf_basis(flat, self.knots.to(x.dtype)), self.spline_coef)
        act = ACTIVATIONS[self.base_activation][0](flat)
        return self.base_weight.unsqueeze(1) * act.unsqueeze(2) + self.spline_scale.unsqueeze(1) * spline

    def regularization(self, x: Tensor, l1: float = 1.0, entropy: float = 2.0) -> Tensor:
        """Per member, :meth:`RSWAFLayer.regularization` over x[m]. x: (M, ..., in) → (M,)."""
        return edge_l1_entropy(self.edge_activations(x), l1, entropy)

    def member(self, m: int) -> RSWAFLayer:
        """Member ``m`` as a new single :class:`RSWAFLayer` (copies; same dtype and device)."""
        m = self._check_member(m)
        layer = RSWAFLayer(self.in_features, self.out_features, grid_size=self.grid_size,
                           spline_order=self.spline_order, base_activation=self.base_activation,
                           generator=torch.Generator())
        layer = layer.to(device=self.spline_coef.device, dtype=self.spline_coef.dtype)
        layer.load_state_dict(self.member_state_dict(m))
        return layer

    @torch.no_grad()
    def update_grid(self, x: Tensor) -> None:
        """Each member's :meth:`RSWAFLayer.update_grid` on x[m], x: (M, ..., in); in place."""
        check_ensemble_input(x, self.n_members, self.in_features)
        samples = x.reshape(self.n_members, -1, self.in_features)
        each_member(self, samples, lambda layer, xm: layer.update_grid(xm))

    @torch.no_grad()
    def extend_grid(self, new_grid_size: int) -> None:
        """Every member's :meth:`RSWAFLayer.extend_grid`; new ``spline_coef`` Parameter and ``knots``."""
        layers = [self.member(m) for m in range(self.n_members)]
        for layer in layers:
            layer.extend_grid(new_grid_size)
        self.spline_coef = nn.Parameter(stack("RSWAFLayer", "spline_coef", [la.spline_coef for la in layers]))
        self.knots = stack("RSWAFLayer", "knots", [layer.knots for layer in layers])
        self.grid_size = new_grid_size
