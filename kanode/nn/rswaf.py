"""RSWAF KAN layer: reflectional switch activation bases (FastKAN family).

``B_j(x) = 1 − tanh²((x − c_j) / h)`` on ``grid_size`` uniformly spaced
centres ``c_j`` with ``h`` their spacing. The layer has the interface of
:class:`kanode.nn.KANLayer` (parameters ``spline_coef`` (out, in, grid_size),
``base_weight``, ``spline_scale`` (out, in); buffer ``knots`` (in, grid_size)
holding the centres) and ``in · out · (grid_size + 2)`` parameters. The bases
have global support and decay to 0 away from the centres, so outside the grid
the layer tends to its base path (finite and smooth). The computation is
dense and uses plain autograd. ``members=M``: M layers on a leading member
axis (parameters, centres (M, in, grid_size) and inputs (M, ..., in)), by the
same code (matrix products by ``bmm`` instead of ``mm``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from kanode.nn import grid as _grid
from kanode.nn._checks import check_input, check_layer_args, check_member_input, check_members_arg
from kanode.nn._edges import edge_entropy_l1
from kanode.nn._small import linear
from kanode.nn.activations import ACTIVATIONS, check_activation


def rswaf_basis(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """x: ([M,] batch, in), centers: ([M,] in, G) with uniform spacing → ([M,] batch, in, G)."""
    h = (centers[..., -1:] - centers[..., :1]) / (centers.shape[-1] - 1)  # ([M,] in, 1)
    return 1 - torch.tanh((x.unsqueeze(-1) - centers.unsqueeze(-3)) / h.unsqueeze(-3)) ** 2


class RSWAFLayer(nn.Module):
    """RSWAF KAN layer, (..., in_features) → (..., out_features); needs grid_size >= 2.

    ``spline_order`` is accepted for interface compatibility and ignored.
    """

    members: int | None = None  # no member axis (also for instances built without __init__, old pickles)

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5,
                 spline_order: int = 3, grid_range: Sequence[float] = (-1.0, 1.0),
                 base_activation: str = "silu", coef_std: float = 0.1,
                 generator: torch.Generator | None = None, members: int | None = None, **_unused) -> None:
        super().__init__()
        check_layer_args(in_features, out_features, grid_size, spline_order, grid_range)
        self.members = check_members_arg(members)
        lead = () if members is None else (members,)
        if grid_size < 2:
            raise ValueError(f"RSWAFLayer needs grid_size >= 2 (two centres), got {grid_size}")
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        self.base_activation = check_activation(base_activation)
        centers = torch.linspace(float(grid_range[0]), float(grid_range[1]), grid_size)
        centers = centers.expand(*lead, in_features, -1)
        self.register_buffer("knots", centers.to(torch.get_default_dtype()).contiguous())
        coef = torch.randn(*lead, out_features, in_features, grid_size, generator=generator) * coef_std
        self.spline_coef = nn.Parameter(coef.to(torch.get_default_dtype()))
        self.spline_scale = nn.Parameter(torch.ones(*lead, out_features, in_features))
        bound = 1.0 / math.sqrt(in_features)
        weight = (torch.rand(*lead, out_features, in_features, generator=generator) * 2 - 1) * bound
        self.base_weight = nn.Parameter(weight.to(torch.get_default_dtype()))

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """Input ([M,] ..., in) → rows ([M,] batch, in) (checked)."""
        if self.members is None:
            check_input(x, self.in_features)
            return x.reshape(-1, self.in_features)
        check_member_input(x, self.members, self.in_features)
        return x.reshape(self.members, -1, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ([M,] ..., in) → ([M,] ..., out)."""
        flat = self._rows(x)
        basis = rswaf_basis(flat, self.knots.to(x.dtype)).flatten(-2)  # ([M,] batch, in*G)
        spline = linear(basis, (self.spline_coef * self.spline_scale.unsqueeze(-1)).flatten(-2))
        out = linear(ACTIVATIONS[self.base_activation][0](flat), self.base_weight, spline)
        return out.reshape(*x.shape[:-1], self.out_features)

    def edge_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Output of every edge. x: ([M,] batch, in) → ([M,] batch, out, in)."""
        x = self._rows(x)
        spline = torch.einsum("...bij,...oij->...boi", rswaf_basis(x, self.knots.to(x.dtype)), self.spline_coef)
        act = ACTIVATIONS[self.base_activation][0](x)
        return self.base_weight.unsqueeze(-3) * act.unsqueeze(-2) + self.spline_scale.unsqueeze(-3) * spline

    def regularization(self, x: torch.Tensor, l1: float = 1.0, entropy: float = 2.0) -> torch.Tensor:
        """``l1 · Σ|φ|₁ + entropy · S`` of the edges over x ([M,] batch, in) → ([M],)."""
        total, ent = edge_entropy_l1(self.edge_activations(x))
        return l1 * total + entropy * ent

    @torch.no_grad()
    def _refit(self, new_centers: torch.Tensor, samples: torch.Tensor) -> None:
        """Least-squares refit of the coefficients on samples (n, C), float64; centres
        (C, G_new); one column per input (and member: C = [M ·] in)."""
        out_f, n_coef = self.out_features, self.spline_coef.shape[-1]
        coef = self.spline_coef.double()
        if self.members is not None:
            coef = coef.transpose(0, 1).reshape(out_f, -1, n_coef)  # (out, C, G)
        old = rswaf_basis(samples, self.knots.double().reshape(-1, self.knots.shape[-1]))  # (n, C, G)
        target = torch.einsum("nig,oig->ion", old, coef).transpose(1, 2)
        design = rswaf_basis(samples, new_centers).transpose(0, 1)  # (C, n, G_new)
        coef = _grid.solve_per_layer(design, target, self.in_features).permute(2, 0, 1)  # (out, C, G_new)
        if self.members is not None:
            coef = coef.reshape(out_f, self.members, self.in_features, -1).transpose(0, 1)
            new_centers = new_centers.view(self.members, self.in_features, -1)
        self.spline_coef = nn.Parameter(coef.to(self.spline_coef).contiguous())
        self.knots = new_centers.to(self.knots).contiguous()
        self.grid_size = new_centers.shape[-1]

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor) -> None:
        """Move the (uniform) centres to span each input's sample range (per member on
        x[m]); refit by least squares."""
        samples = self._rows(x).detach().double()
        if not torch.isfinite(samples).all():
            raise ValueError("update_grid got non-finite samples; remove NaN/inf states first")
        if self.members is not None:  # members' inputs as columns (n, M·in)
            samples = samples.transpose(0, 1).reshape(samples.shape[1], -1)
        lo, hi = samples.min(0).values, samples.max(0).values
        keep = (hi - lo) <= 1e-9 * torch.clamp(hi.abs().maximum(lo.abs()), min=1.0)
        frac = torch.linspace(0, 1, self.grid_size, dtype=torch.float64)
        centers = lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * frac
        centers[keep] = self.knots.double().reshape(-1, self.grid_size)[keep]
        fit = torch.cat([samples, _grid.cell_points(centers, 4).T], dim=0)
        self._refit(centers, fit)

    @torch.no_grad()
    def extend_grid(self, new_grid_size: int) -> None:
        """Change the number of centres on the same range; least-squares refit."""
        check_layer_args(self.in_features, self.out_features, new_grid_size, 1, (0, 1))
        old = self.knots.double().reshape(-1, self.grid_size)
        frac = torch.linspace(0, 1, new_grid_size, dtype=torch.float64)
        centers = old[:, :1] + (old[:, -1:] - old[:, :1]) * frac
        self._refit(centers, _grid.cell_points(centers, 8).T)
