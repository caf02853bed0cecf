"""The B-spline layer with a member axis on any grids: one batched GEMM.

The member-axis layer's eager path (:mod:`kanode.nn._dispatch` sends member
layers here where neither the truncated powers nor the fused kernel apply:
non-uniform grids, torch.func transforms, no kernel), and the single layer's
tiny-batch "kept" path (run at M = 1). Without a member axis, larger batches
take :mod:`kanode.nn._spline_fn` instead, which keeps nothing of size
batch × in × n_coef for backward (members have no such path yet).

For member ``m`` and input ``i`` the features are the ``n_coef`` bases
``B_j(x_i)`` (dense, zeros off the support; with the linear continuation
outside the grid) followed by ``act(x_i)``; the weights are
``spline_scale · spline_coef`` followed by ``base_weight``. So::

    feats   (M, batch, in, n_coef + 1)
    weight  (M, out,   in, n_coef + 1)
    y = bmm(feats.view(M, batch, F), weight.view(M, out, F).T)     F = in (n_coef + 1)

which for member ``m`` is exactly the single layer's
``base_weight · act(x) + spline_scale · Σ_j spline_coef_j B_j(x)``.

The bases come from
:func:`kanode.nn.bspline.local_basis` on the inputs flattened to
``(batch, M · in)`` against the knots flattened to ``(M · in, n_knots)``:
every (member, input) pair is a column with its own knots, so members may
have different, non-uniform grids (closed form where uniform, local de Boor
otherwise) — then scattered into the dense layout.

:class:`MemberSplineFn` is one autograd node per layer call: forward keeps
the features and their x-derivatives, first-order backward is two batched
GEMMs (at batch 1 two broadcast products, far faster than BLAS's batched
GEMM with an inner dimension of 1). A backward that builds a graph (double
backward) recomputes them by differentiable ops from the saved inputs.
Old-style Function (cheaper to call), so under torch.func transforms the
layer runs :func:`spline_forward` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from kanode.nn.activations import ACTIVATIONS
from kanode.nn.bspline import local_basis

if TYPE_CHECKING:
    from kanode.nn.kan import KANLayer


class Grid(NamedTuple):
    """What the forward needs from the knots (all on the input's dtype/device)."""

    knots: Tensor  # (M · in, n_knots)  one row per (member, input)
    shift: Tensor  # (M · in,)  x * inv_h + shift = position in cells (uniform grids)
    inv_h: Tensor  # (M · in,)
    offsets: Tensor  # (k + 1,) int64  0 .. k
    order: int
    uniform: bool  # every row uniform: closed-form bases


def member_grid(layer: "KANLayer", dtype: torch.dtype) -> Grid:
    """The :class:`Grid` of a member-axis layer, on ``dtype``."""
    knots, shift, inv_h = layer.knots, layer._grid_shift, layer._grid_inv_h
    if knots.dtype != dtype:
        knots, shift, inv_h = knots.to(dtype), shift.to(dtype), inv_h.to(dtype)
    offsets = torch.arange(layer.spline_order + 1, device=knots.device)
    return Grid(knots.view(-1, knots.shape[-1]), shift, inv_h, offsets, layer.spline_order, layer.uniform)


def features(x: Tensor, grid: Grid, activation: str, derivative: bool,
             differentiable: bool = True) -> tuple[Tensor, Tensor | None]:
    """Bases and activation of each input, and optionally their x-derivatives.

    x: (M, batch, in) → feats (M, batch, in, n_coef + 1) and dfeats (same
    shape) or None. ``differentiable``: out-of-place torch ops that autograd
    can follow; otherwise (no graph wanted) the results are filled in place.
    """
    n_members, batch, n_in = x.shape
    act, dact = ACTIVATIONS[activation]
    k = grid.order
    n_coef = grid.knots.shape[-1] - k - 1
    flat = x.transpose(0, 1).reshape(batch, n_members * n_in)  # (batch, M·in) one column per (m, i)
    cell, values, derivs = local_basis(flat, grid.knots, k, grid.uniform, derivative=derivative,
                                       scale=(grid.shift, grid.inv_h))  # (batch, M·in), (batch, M·in, k+1)

    def per_member(t: Tensor) -> Tensor:  # (batch, M·in, k+1) → (M, batch, in, k+1)
        return t.view(batch, n_members, n_in, -1).transpose(0, 1)

    index = per_member(cell.unsqueeze(-1) + grid.offsets)

    def dense(local: Tensor, last: Tensor) -> Tensor:  # (M, batch, in, n_coef + 1)
        if differentiable:
            zeros = x.new_zeros(n_members, batch, n_in, n_coef)
            return torch.cat([zeros.scatter(-1, index, per_member(local)), last.unsqueeze(-1)], dim=-1)
        out = x.new_zeros(n_members, batch, n_in, n_coef + 1)
        out[..., :n_coef].scatter_(-1, index, per_member(local))
        out[..., n_coef] = last
        return out

    feats = dense(values, act(x))
    return feats, (dense(derivs, dact(x)) if derivative else None)


def weights(coef: Tensor, scale: Tensor, base_weight: Tensor) -> Tensor:
    """coef (M, out, in, n_coef), scale and base_weight (M, out, in) → (M, out, in, n_coef + 1)."""
    return torch.cat([coef * scale.unsqueeze(-1), base_weight.unsqueeze(-1)], dim=-1)


def spline_forward(x: Tensor, coef: Tensor, scale: Tensor, base_weight: Tensor, grid: Grid,
                   activation: str, differentiable: bool = True) -> Tensor:
    """The layer by plain ops. x: (M, batch, in) → (M, batch, out) (or the single
    layer's shapes, run at M = 1). ``differentiable``: False only where no graph is
    built (fills in place)."""
    if x.ndim == 2:
        return spline_forward(x[None], coef[None], scale[None], base_weight[None], grid, activation,
                              differentiable)[0]
    n_members, batch, _ = x.shape
    feats, _ = features(x, grid, activation, derivative=False, differentiable=differentiable)
    weight = weights(coef, scale, base_weight)
    return torch.bmm(feats.view(n_members, batch, -1), weight.view(n_members, coef.shape[1], -1).transpose(1, 2))


class MemberSplineFn(torch.autograd.Function):
    """:func:`spline_forward` as one autograd node (see the module docstring).

    Inputs: x (M, batch, in), coef (M, out, in, n_coef), scale, base_weight
    (M, out, in), grid (:class:`Grid`), activation name → y (M, batch, out);
    or the single layer's shapes without the member axis (run as M = 1: the
    "kept" path of :mod:`kanode.nn._dispatch`).
    """

    @staticmethod
    def forward(ctx, x, coef, scale, base_weight, grid, activation):
        ctx.save_for_backward(x, coef, scale, base_weight)
        ctx.single = x.ndim == 2
        if ctx.single:  # one layer: M = 1 (views; nothing is recorded inside a Function)
            x, coef, scale, base_weight = x[None], coef[None], scale[None], base_weight[None]
        n_members, batch, _ = x.shape
        feats, dfeats = features(x, grid, activation, derivative=ctx.needs_input_grad[0], differentiable=False)
        weight = weights(coef, scale, base_weight).view(n_members, coef.shape[1], -1)  # (M, out, F)
        ctx.kept = (feats, dfeats, weight, grid, activation)
        y = torch.bmm(feats.view(n_members, batch, -1), weight.transpose(1, 2))
        return y[0] if ctx.single else y

    @staticmethod
    def backward(ctx, grad):
        if ctx.single:
            return tuple(None if g is None else g[0] for g in MemberSplineFn._backward(ctx, grad[None]))
        return MemberSplineFn._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad):
        x, coef, scale, base_weight = (t.unsqueeze(0) if ctx.single else t for t in ctx.saved_tensors)
        feats, dfeats, weight, grid, activation = ctx.kept
        need_x, need_coef, need_scale, need_base = ctx.needs_input_grad[:4]
        n_members, batch, n_in = x.shape
        out_f, n_coef = coef.shape[1], coef.shape[-1]
        if torch.is_grad_enabled():  # double backward: recompute differentiably
            feats, dfeats = features(x, grid, activation, derivative=need_x)
            weight = weights(coef, scale, base_weight).view(n_members, out_f, -1)
        feats = feats.view(n_members, batch, -1)  # (M, batch, F)
        grad_t = grad.transpose(1, 2)  # (M, out, batch)
        g_x = g_coef = g_scale = g_base = None
        # at batch 1 (the neural-ODE case) broadcasting beats BLAS's batched GEMM with K = 1 by far
        if need_x:
            g_feats = (grad_t * weight).sum(1, keepdim=True) if batch == 1 else torch.bmm(grad, weight)
            g_x = (g_feats.view(n_members, batch, n_in, n_coef + 1) * dfeats).sum(-1)  # (M, batch, in)
        if need_coef or need_scale or need_base:
            g_weight = grad_t * feats if batch == 1 else torch.bmm(grad_t, feats)  # (M, out, F)
            g_weight = g_weight.view(n_members, out_f, n_in, n_coef + 1)
            g_table = g_weight[..., :n_coef]  # (M, out, in, n_coef), gradient of scale · coef
            g_coef = g_table * scale.unsqueeze(-1) if need_coef else None
            g_scale = (g_table * coef).sum(-1) if need_scale else None
            g_base = g_weight[..., n_coef] if need_base else None
        return g_x, g_coef, g_scale, g_base, None, None
