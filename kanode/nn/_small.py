"""Tiny-batch fast path of the KAN layer on a uniform grid.

A neural-ODE solve calls the vector field at batch 1 hundreds of times per
step; there the layer's time is per-op and Python overhead, not memory. This
path is about fifteen plain autograd ops on constants that
:func:`small_constants` derives once from the knots (when they, their dtype
or device change), with no cell search, index arithmetic or scatter: every
basis is evaluated densely from truncated powers. With grad enabled the layer
runs as one autograd node (:class:`SmallLayerFn`) whose first-order backward
is a few matmuls on what forward kept; second derivatives come from autograd
through a differentiable recomputation in that backward.

On a uniform grid, with ``s`` the position in cells from the start of the
range, ``B_j(x) = N(s - j + k)`` for the cardinal B-spline ``N`` of order
``k`` on ``[0, k + 1]``, ``N(t) = Σ_i w_i (t - i)₊ᵏ`` with
``w_i = (-1)ⁱ C(k+1, i) / k!``. Capping ``t`` at ``k + 1`` (where ``N`` is 0)
keeps every term at most ``(k + 1)ᵏ`` and makes the cancellation exact in
integers, so values agree with de Boor to rounding. Outside the range
``s`` is clamped to ``sc`` and the bases continue linearly,
``N(t) + d N'(t)`` with ``d = s - sc``: per term ``r^(k-1) (r + k d)``,
``r = clamp(t - i, 0, k + 1 - i)``. Needs ``k >= 2`` (``N'`` continuous at
the knots, so the slope at a range end is unambiguous); the layer uses it in
float64 with at most ``DENSE_MAX_COEF`` coefficients, where the cancellation
error (~10 ulp of ``grid_size``) stays far below 1e-12.

**Member axis.** Every function takes the single layer's shapes — x (batch,
in), coef (out, in, n_coef), knots (in, n_knots) — or the same with a leading
member axis M (x (M, batch, in), coef (M, out, in, n_coef), knots (M, in,
n_knots): M independent layers, the ensembles of :mod:`kanode.ensemble`).
The code is the same for both; only the matrix products switch between
``mm`` and ``bmm`` (:func:`linear`), so a single layer pays nothing for the
member axis.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from kanode.nn._spline_fn import _functorch
from kanode.nn.activations import ACTIVATIONS
from kanode.nn.bspline import grid_scale

MIN_ORDER = 2


def linear(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ w.T (+ bias)``: a (batch, K), w (N, K) → (batch, N) by ``mm``, or
    with a member axis a (M, batch, K), w (M, N, K) → (M, batch, N) by ``bmm``."""
    if w.ndim == 2:
        return F.linear(a, w, bias)
    return torch.bmm(a, w.transpose(1, 2)) if bias is None else torch.baddbmm(bias, a, w.transpose(1, 2))


class PowerConstants(NamedTuple):
    """Constants of the truncated powers for ``grid_size`` cells of spline ``order``
    (no knots: shared by every input and member)."""

    offset: torch.Tensor  # (n_coef, k+2)  j - k + i: r = clamp(s - offset, 0, cap)
    floor: torch.Tensor  # (n_coef, k+2)  zeros
    cap: torch.Tensor  # (n_coef, k+2)  k + 1 - i
    weight: torch.Tensor  # (k+2,)  w_i = (-1)^i C(k+1, i) / k!
    slope: torch.Tensor  # (k+2,)  k w_i: dB/ds = Σ_i k w_i r^(k-1)
    grid_size: int
    order: int


def power_constants(grid_size: int, order: int, dtype: torch.dtype, device) -> PowerConstants:
    """Constants for ``grid_size`` cells of spline ``order`` (>= 2)."""
    assert order >= MIN_ORDER
    like = dict(dtype=dtype, device=device)
    j = torch.arange(grid_size + order, **like).unsqueeze(-1)  # (n_coef, 1)
    i = torch.arange(order + 2, **like)  # (k+2,)
    weight = torch.tensor([(-1) ** q * math.comb(order + 1, q) / math.factorial(order)
                           for q in range(order + 2)], **like)
    offset = j - order + i  # (n_coef, k+2)
    return PowerConstants(offset, torch.zeros_like(offset), (order + 1 - i).expand_as(offset).contiguous(),
                          weight, order * weight, grid_size, order)


def power_terms(s: torch.Tensor, const: "PowerConstants | SmallConstants") -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in cells s (..., 1, 1) → the terms ``(t-i)₊ᵏ + k d (t-i)₊ᵏ⁻¹``
    (..., n_coef, k+2), whose ``@ const.weight`` are the bases, and the powers
    ``r^(k-1)`` (same shape) of their s-derivatives.

    Per term ``d/ds [r^(k-1) (r + k d)] = k r^(k-1)`` both inside (d = 0) and
    outside (r constant) the range; the capped terms' slopes cancel exactly as
    their values do. Differentiable, so autograd gives second derivatives.
    """
    sc = s.clamp(0.0, const.grid_size)  # inside the range
    r = torch.clamp(sc - const.offset, const.floor, const.cap)  # (..., n_coef, k+2)
    r_low = r.pow(const.order - 1)
    return r_low * torch.add(r, s - sc, alpha=const.order), r_low  # d = s - sc


class SmallConstants(NamedTuple):
    """Per-layer constants of the fast path (uniform knots, spline_order >= 2);
    with a member axis ``shift``, ``inv_h`` are (M, 1, in, 1, 1) and ``slope``
    (M, 1, in, k+2, 1)."""

    shift: torch.Tensor  # (in, 1, 1)  x * inv_h + shift = s, position in cells from the range start
    inv_h: torch.Tensor  # (in, 1, 1)  1 / cell width
    offset: torch.Tensor  # (n_coef, k+2)  j - k + i: r = clamp(s - offset, 0, cap)
    floor: torch.Tensor  # (n_coef, k+2)  zeros
    cap: torch.Tensor  # (n_coef, k+2)  k + 1 - i
    weight: torch.Tensor  # (k+2,)  w_i = (-1)^i C(k+1, i) / k!
    slope: torch.Tensor  # (in, k+2, 1)  k w_i inv_h: dB/dx = Σ_i k w_i r^(k-1) inv_h
    grid_size: int
    order: int


def small_constants(knots: torch.Tensor, order: int) -> SmallConstants:
    """Constants for uniform ``knots`` ([M,] in, n_knots) of spline ``order`` (>= 2)."""
    grid_size = knots.shape[-1] - 2 * order - 1
    lead = knots.shape[:-2]  # () or (M,)
    shape = (*lead, 1, knots.shape[-2], 1, 1) if lead else (knots.shape[-2], 1, 1)
    shift, inv_h = grid_scale(knots.reshape(-1, knots.shape[-1]), order)  # ([M·] in,)
    powers = power_constants(grid_size, order, knots.dtype, knots.device)
    slope = (powers.slope * inv_h.reshape(-1, 1)).reshape(*shape[:-2], order + 2, 1)
    return SmallConstants(shift.reshape(shape).clone(), inv_h.reshape(shape).clone(), powers.offset,
                          powers.floor, powers.cap, powers.weight, slope.contiguous(), grid_size, order)


def small_basis(x: torch.Tensor, const: SmallConstants) -> tuple[torch.Tensor, torch.Tensor]:
    """All bases ([M,] batch, in, n_coef) and the powers ``r^(k-1)`` ([M,] batch, in, n_coef, k+2)
    of their x-derivatives (``r^(k-1) @ const.slope``) by plain ops from x ([M,] batch, in)
    of any strides; see :func:`power_terms`."""
    x = x.contiguous()  # strided x gives strided terms, which the callers' views cannot flatten
    s = torch.addcmul(const.shift, x.view(*x.shape, 1, 1), const.inv_h)  # ([M,] batch, in, 1, 1) in cells
    terms, r_low = power_terms(s, const)
    return terms @ const.weight, r_low


def small_layer(x: torch.Tensor, coef: torch.Tensor, scale: torch.Tensor, base_weight: torch.Tensor,
                const: SmallConstants, act) -> torch.Tensor:
    """KAN layer by plain autograd ops. x: ([M,] batch, in) → ([M,] batch, out).

    coef: ([M,] out, in, n_coef); scale, base_weight: ([M,] out, in); ``act`` the base
    activation. x may have any strides (a transposed or sliced input).
    """
    lead, out_f = x.shape[:-1], coef.shape[-3]
    x = x.contiguous()  # strided x gives strided terms, which terms.view cannot flatten
    s = torch.addcmul(const.shift, x.view(*x.shape, 1, 1), const.inv_h)  # ([M,] batch, in, 1, 1) in cells
    terms, _ = power_terms(s, const)  # ([M,] batch, in, n_coef, k+2)
    # Σ_i w_i terms, contracted with the table: weights ([M,] out, in·n_coef·(k+2))
    table = ((coef * scale.unsqueeze(-1)).unsqueeze(-1) * const.weight).view(*coef.shape[:-3], out_f, -1)
    spline = linear(terms.view(*lead, -1), table)  # ([M,] batch, out)
    return linear(act(x), base_weight, spline)


class SmallLayerFn(torch.autograd.Function):
    """:func:`small_layer` as one autograd node: forward keeps the dense bases
    (batch, in, n_coef), the powers ``r^(k-1)`` of their x-derivatives and
    act(x), all batch-sized; the first-order backward is a handful of matmuls
    on them. The scaled coefficient table is parameter-sized, so backward
    rebuilds it instead of keeping it: a direct-backprop solve keeps one node
    per evaluation, and a kept table made memory grow as evaluations ×
    parameters. A backward that builds a graph (double backward) recomputes them by
    plain differentiable ops from the saved inputs instead.

    Inputs: x ([M,] batch, in), coef ([M,] out, in, n_coef), scale, base_weight
    ([M,] out, in), const, activation name → y ([M,] batch, out). Old-style (``forward(ctx, ...)``):
    its ``apply`` costs ~10 µs against ~65 µs with ``setup_context``, but it
    does not support torch.func, so call it only outside transforms.
    """

    @staticmethod
    def forward(ctx, x, coef, scale, base_weight, const, activation):
        basis, r_low = small_basis(x, const)
        *lead, batch, _ = x.shape  # lead: [] or [M]
        table = (coef * scale.unsqueeze(-1)).view(*lead, coef.shape[-3], -1)  # ([M,] out, in·n_coef)
        act = ACTIVATIONS[activation][0](x)
        ctx.save_for_backward(x, coef, scale, base_weight)
        ctx.kept = (basis, r_low, act, const, activation)
        if not lead:  # no member axis: plain mm (the neural-ODE hot path)
            return F.linear(act, base_weight, F.linear(basis.view(batch, -1), table))  # (batch, out)
        return linear(act, base_weight, linear(basis.view(*lead, batch, -1), table))  # (M, batch, out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()  # e.g. the expanded ones of y.sum()
        x, coef, scale, base_weight = ctx.saved_tensors
        basis, r_low, act, const, activation = ctx.kept
        need_x, need_coef, need_scale, need_base = ctx.needs_input_grad[:4]
        *lead, batch, n_in = x.shape  # lead: [] or [M]
        out_f, n_coef = coef.shape[-3], coef.shape[-1]
        graph = torch.is_grad_enabled() or _functorch(grad) or _functorch(x)
        if graph:  # recompute differentiably (double backward, transforms)
            basis, r_low = small_basis(x, const)
            act = ACTIVATIONS[activation][0](x) if need_base else None
        table = (coef * scale.unsqueeze(-1)).view(*lead, out_f, -1) if need_x else None  # ([M,] out, in·n_coef)
        g_x = g_coef = g_scale = g_base = None
        if need_x:
            g_basis = (grad @ table).view(*lead, batch, n_in, 1, n_coef)
            g_x = (g_basis @ r_low @ const.slope).view(*lead, batch, n_in)  # Σ_c g_basis dB/dx
            if activation == "silu" and not graph:  # fused kernel, first order only
                g_x = g_x + torch.ops.aten.silu_backward(grad @ base_weight, x)
            else:
                g_x = g_x + (grad @ base_weight) * ACTIVATIONS[activation][1](x)
        grad_t = grad.transpose(1, 2) if lead else grad.t()  # ([M,] out, batch)
        if need_coef or need_scale:
            g_table = (grad_t @ basis.view(*lead, batch, -1)).view(*lead, out_f, n_in, n_coef)
            g_coef = g_table * scale.unsqueeze(-1) if need_coef else None
            g_scale = torch.linalg.vecdot(g_table, coef) if need_scale else None
        if need_base:
            g_base = grad_t @ act
        return g_x, g_coef, g_scale, g_base, None, None
