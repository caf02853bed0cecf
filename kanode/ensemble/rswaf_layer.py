"""Ensemble of RSWAF KAN layers: M :class:`kanode.nn.RSWAFLayer` s stacked on a member axis."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kanode.ensemble._members import check_ensemble_input
from kanode.ensemble._stacked import StackedLayer
from kanode.nn import RSWAFLayer
from kanode.nn.activations import ACTIVATIONS


def rswaf_basis(x: Tensor, centers: Tensor) -> Tensor:
    """x: (M, batch, in), centers: (M, in, G) uniformly spaced per row → (M, batch, in, G)."""
    h = (centers[..., -1:] - centers[..., :1]) / (centers.shape[-1] - 1)  # (M, in, 1)
    return 1 - torch.tanh((x.unsqueeze(-1) - centers.unsqueeze(1)) / h.unsqueeze(1)) ** 2


class EnsembleRSWAFLayer(StackedLayer):
    """M RSWAF KAN layers, (M, ..., in_features) → (M, ..., out_features).

    Built from single layers of equal shape. Parameters ``spline_coef``
    (M, out, in, grid_size), ``base_weight``, ``spline_scale`` (M, out, in);
    buffer ``knots`` (M, in, grid_size) holding each member's centres. Plain
    autograd ops: the bases, then two batched GEMMs.
    """

    single = RSWAFLayer

    def __init__(self, layers: Sequence[RSWAFLayer]) -> None:
        super().__init__()
        self._stack(layers)

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
