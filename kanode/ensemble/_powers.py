"""All B-spline bases of a uniform grid by truncated powers (no cell search).

On a uniform grid, with ``s`` the position in cells from the start of the
range, ``B_j(x) = N(s - j + k)`` for the cardinal B-spline ``N`` of order
``k`` on ``[0, k + 1]``, ``N(t) = Σ_i w_i (t - i)₊ᵏ``, ``w_i = (-1)ⁱ C(k+1, i) / k!``
(i = 0 .. k+1). Capping ``t - i`` at ``k + 1 - i`` (where ``N`` is 0) keeps
every term at most ``(k + 1)ᵏ`` and makes the cancellation exact in integers.
Outside the range ``s`` is clamped to ``sc`` and the bases continue linearly,
``N(t) + d N'(t)`` with ``d = s - sc``: per term ``r^(k-1) (r + k d)``,
``r = clamp(t - i, 0, k + 1 - i)``; the x-derivative is
``Σ_i k w_i r^(k-1) / h`` inside and outside. The same formulas as the single
layer's tiny-batch path (kanode.nn), evaluated here for every (member, input)
at once; needs ``k >= 2`` and is used in float64 (the cancellation costs
~10 ulp of the grid size: below 1e-13 there, too much in float32).

Ten or so elementwise ops replace the cell search, local de Boor and scatter
of :func:`kanode.nn.bspline.local_basis` when every member's grid is uniform.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

MIN_ORDER = 2


class PowerConstants(NamedTuple):
    """Constants of one layer's grids (shared by the members: same G and k)."""

    offset: Tensor  # (n_coef, k+2)  j - k + i: r = clamp(s - offset, floor, cap)
    floor: Tensor  # (n_coef, k+2)  zeros
    cap: Tensor  # (n_coef, k+2)  k + 1 - i
    weight: Tensor  # (k+2,)  w_i
    slope: Tensor  # (k+2,)  k w_i
    grid_size: int
    order: int


def power_constants(grid_size: int, order: int, dtype: torch.dtype, device) -> PowerConstants:
    """Constants for ``grid_size`` cells of spline ``order`` (>= 2)."""
    assert order >= MIN_ORDER
    like = dict(dtype=dtype, device=device)
    n_coef = grid_size + order
    j = torch.arange(n_coef, **like).unsqueeze(-1)  # (n_coef, 1)
    i = torch.arange(order + 2, **like)  # (k+2,)
    weight = torch.tensor([(-1) ** q * math.comb(order + 1, q) / math.factorial(order)
                           for q in range(order + 2)], **like)
    offset = j - order + i  # (n_coef, k+2)
    return PowerConstants(offset, torch.zeros_like(offset), (order + 1 - i).expand_as(offset).contiguous(),
                          weight, order * weight, grid_size, order)


def power_bases(x: Tensor, shift: Tensor, inv_h: Tensor, const: PowerConstants,
                derivative: bool) -> tuple[Tensor, Tensor | None]:
    """x: (M, batch, in); shift, inv_h: (M, 1, in) with ``x * inv_h + shift``
    the position in cells → bases (M, batch, in, n_coef) and, when
    ``derivative``, their x-derivatives (same shape), else None. Differentiable."""
    k = const.order
    s = torch.addcmul(shift, x, inv_h).unsqueeze(-1).unsqueeze(-1)  # (M, batch, in, 1, 1) in cells
    sc = s.clamp(0.0, const.grid_size)  # inside the range
    r = torch.clamp(sc - const.offset, const.floor, const.cap)  # (M, batch, in, n_coef, k+2)
    r_low = r.pow(k - 1)
    values = (r_low * torch.add(r, s - sc, alpha=k)) @ const.weight  # (M, batch, in, n_coef)
    if not derivative:
        return values, None
    return values, (r_low @ const.slope) * inv_h.unsqueeze(-1)
