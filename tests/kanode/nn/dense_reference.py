"""Plain dense Cox–de Boor KAN layer: the test oracle and the benchmark baseline.

This is the textbook formulation (efficient-kan style): the full
``(batch, in, grid_size + spline_order)`` basis is built with the Cox–de Boor
recursion and every level is kept for autograd. It shares its constructor,
parameter and buffer names with :class:`kanode.nn.KANLayer`, so
``DenseKANLayer.load_state_dict(kan_layer.state_dict())`` gives the same
function, including outside the grid: the spline part is continued linearly
with its boundary value and slope (see ``KANLayer``).

Nothing here is optimised on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

_ACTIVATIONS = {
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "softplus": torch.nn.functional.softplus,
    "identity": lambda x: x,
}


def cox_de_boor(x: torch.Tensor, knots: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All B-spline bases and their first derivatives by Cox–de Boor.

    x: (batch, in), assumed inside ``[knots[:, order], knots[:, -order-1]]``;
    knots: (in, n_knots). Returns (values, derivatives), each
    (batch, in, n_knots - order - 1). The last interior interval is closed
    on the right so the right end of the range is covered.
    """
    t = knots.unsqueeze(0)  # (1, in, n_knots)
    xe = x.unsqueeze(-1)  # (batch, in, 1)
    n_knots = knots.shape[-1]
    last = n_knots - order - 2  # index of the last interior interval
    bases = ((xe >= t[..., :-1]) & (xe < t[..., 1:])).to(x.dtype)
    at_end = (x == knots[:, last + 1]).to(x.dtype)  # (batch, in)
    bases = bases * (1.0 - at_end).unsqueeze(-1)  # x == right end: only the last
    bases[..., last] = bases[..., last] + at_end  # interior interval is "on"
    lower = bases
    for p in range(1, order + 1):
        lower = bases
        left = (xe - t[..., : -(p + 1)]) / (t[..., p:-1] - t[..., : -(p + 1)])
        right = (t[..., p + 1 :] - xe) / (t[..., p + 1 :] - t[..., 1:-p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    # derivative of order-p bases from the order-(p-1) ones
    p = order
    d_left = p / (t[..., p:-1] - t[..., : -(p + 1)])
    d_right = p / (t[..., p + 1 :] - t[..., 1:-p])
    derivs = d_left * lower[..., :-1] - d_right * lower[..., 1:]
    return bases, derivs


class DenseKANLayer(nn.Module):
    """Dense reference KAN layer; same constructor and state as ``KANLayer``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        base_activation: str = "silu",
        **_unused,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order
        self.base_activation = base_activation
        lo, hi = float(grid_range[0]), float(grid_range[1])
        h = (hi - lo) / grid_size
        steps = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float64)
        knots = (lo + h * steps).to(torch.get_default_dtype()).expand(in_features, -1).contiguous()
        self.register_buffer("knots", knots)
        n_coef = grid_size + spline_order
        self.spline_coef = nn.Parameter(0.1 * torch.randn(out_features, in_features, n_coef))
        self.spline_scale = nn.Parameter(torch.ones(out_features, in_features))
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))

    def spline_bases(self, x: torch.Tensor) -> torch.Tensor:
        """Bases with linear continuation outside the grid. x: (batch, in) → (batch, in, n_coef)."""
        k = self.spline_order
        lo = self.knots[:, k]
        hi = self.knots[:, -k - 1]
        xc = torch.minimum(torch.maximum(x, lo), hi)
        values, derivs = cox_de_boor(xc, self.knots, k)
        return values + derivs * (x - xc).unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) → (..., out)."""
        shape = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        base = _ACTIVATIONS[self.base_activation](x) @ self.base_weight.T
        weight = self.spline_coef * self.spline_scale.unsqueeze(-1)  # (out, in, n_coef)
        spline = self.spline_bases(x).reshape(x.shape[0], -1) @ weight.reshape(self.out_features, -1).T
        return (base + spline).reshape(*shape, self.out_features)


class DenseKAN(nn.Module):
    """Stack of ``DenseKANLayer``; same constructor style as ``kanode.nn.KAN``."""

    def __init__(self, widths: Sequence[int] = (2, 10, 2), **layer_kwargs) -> None:
        super().__init__()
        widths = list(widths)
        self.widths = widths
        self.layers = nn.ModuleList(
            DenseKANLayer(a, b, **layer_kwargs) for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
