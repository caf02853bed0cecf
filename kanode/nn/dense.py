"""The textbook dense KAN layer: the test oracle and the cost baseline.

The full ``(batch, in, grid_size + spline_order)`` basis is built with the
Cox–de Boor recursion exactly as efficient-kan's ``KANLinear.b_splines``
does, and autograd keeps what every level of it needs. It shares its
constructor, parameter and buffer names with :class:`kanode.nn.KANLayer`, so
``DenseKANLayer.load_state_dict(kan_layer.state_dict())`` gives the same
function. Nothing here is optimised, on purpose.

``extrapolate=True`` (the default, the oracle for ``KANLayer``): outside the
grid range the spline part continues linearly with its boundary value and
slope, as ``KANLayer`` does. ``extrapolate=False``: efficient-kan verbatim —
the bases of the extended knot vector, zero beyond it; this is the layer
Eq. 1 of Pal & Das (2024) describes, and the one :mod:`kanode.analysis`
measures.

What ``forward`` saves for backward
-----------------------------------
For an input ``x`` (B, I) that requires grad (as a neural-ODE state or a
hidden layer's input does), with ``O`` outputs, grid size ``G``, order
``k ≥ 1``, ``n = G + 2k + 1`` knots and ``C = G + k`` coefficients, autograd
saves these tensors (module state — parameters, knots — not counted)::

    x                         B·I      (by SiLU; also by the clamp)
    SiLU(x)                   B·I      (by the base matmul, for base_weight's grad)
    level p = 1 … k of  B_p = (x − t_j)/(t_{j+p} − t_j) · B_{p−1}[:-1]
                             + (t_{j+p+1} − x)/(t_{j+p+1} − t_{j+1}) · B_{p−1}[1:]:
      two denominators        2·I·(n − p − 1)   (each level builds new ones)
      B_{p−1}                 B·I·(n − p)       (both products need it)
      the two quotients       2·B·I·(n − p − 1) (only for p ≥ 2: at p = 1,
                                                 B_0 is an indicator without grad)
    B_k (the bases)           B·I·C    (by the spline matmul, for the weights' grad)
    coef · scale              O·I·C    (by the spline matmul, for x's grad)

so, with ``extrapolate=False``,

    saved = 2BI + BI·C + OIC + 2I·Σ_{p=1..k}(n−p−1) + Σ_{p=1..k} BI(n−p)
            + 2BI·Σ_{p=2..k}(n−p−1)

(:func:`kanode.analysis.dense_saved_elements`); for cubic splines (k = 3)
``saved = BI(8G + 34) + OI(G + 3) + 6I(G + 4)``. The linear continuation
(``extrapolate=True``) adds the clamped input (B·I) and, for ``k ≥ 2``, the
two derivative factors ``p/(t_{j+p} − t_j)`` (2·I·C), the distance to the
grid (B·I) and the derivative bases (B·I·C); for ``k = 1`` the derivative
bases (B·I·C) only. ``tests/kanode/analysis`` checks the formula against
the measurement exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DenseKAN", "DenseKANLayer", "cox_de_boor", "cox_de_boor_bases"]

_ACTIVATIONS = {
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "softplus": torch.nn.functional.softplus,
    "identity": lambda x: x,
}


def _recursion(xe: torch.Tensor, t: torch.Tensor, bases: torch.Tensor,
               order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cox–de Boor from the order-0 indicators: (order-(k−1) bases, order-k bases).

    xe: (batch, in, 1); t: (1, in, n_knots); bases: (batch, in, n_knots − 1).
    """
    lower = bases
    for p in range(1, order + 1):
        lower = bases
        left = (xe - t[..., : -(p + 1)]) / (t[..., p:-1] - t[..., : -(p + 1)])  # (batch, in, n_knots-p-1)
        right = (t[..., p + 1 :] - xe) / (t[..., p + 1 :] - t[..., 1:-p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return lower, bases


def cox_de_boor_bases(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """efficient-kan's ``b_splines``: x (batch, in), knots (in, n_knots) →
    bases (batch, in, n_knots − order − 1); zero outside ``[knots[:, 0], knots[:, -1])``."""
    t = knots.unsqueeze(0)  # (1, in, n_knots)
    xe = x.unsqueeze(-1)  # (batch, in, 1)
    bases = ((xe >= t[..., :-1]) & (xe < t[..., 1:])).to(x.dtype)  # (batch, in, n_knots-1)
    return _recursion(xe, t, bases, order)[1].contiguous()


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
    lower, bases = _recursion(xe, t, bases, order)
    # derivative of order-p bases from the order-(p-1) ones
    p = order
    d_left = p / (t[..., p:-1] - t[..., : -(p + 1)])
    d_right = p / (t[..., p + 1 :] - t[..., 1:-p])
    derivs = d_left * lower[..., :-1] - d_right * lower[..., 1:]
    return bases, derivs


class DenseKANLayer(nn.Module):
    """Dense textbook KAN layer; same constructor and state as ``KANLayer``.

    ``extrapolate``: continue the spline linearly outside the grid range
    (as ``KANLayer``) or, if False, compute efficient-kan's bases verbatim.
    Extra keyword arguments of ``KANLayer`` (``contraction``, ...) are ignored.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        base_activation: str = "silu",
        extrapolate: bool = True,
        **_unused,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order
        self.base_activation = base_activation
        self.extrapolate = extrapolate
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
        """x: (batch, in) → (batch, in, n_coef), continued linearly outside the
        grid when ``extrapolate``."""
        k = self.spline_order
        if not self.extrapolate:
            return cox_de_boor_bases(x, self.knots, k)
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
