"""The KAN layer as one autograd node around the fused CPU kernel (:mod:`kanode.nn._native`).

Forward and first-order backward are one C++ call each; the node saves the
input and the parameters only. A backward that builds a graph (double
backward, Hessian-vector products) recomputes the layer with the
differentiable eager Function (:class:`kanode.nn._spline_fn.SplineLayerFn`;
with a member axis :func:`kanode.nn._member_fn.spline_forward`) and
differentiates that, so derivatives of every order exist. Shapes as the
kernel's: the single layer's, or with a leading member axis M.

Old-style Function (``forward(ctx, ...)``): its ``apply`` costs ~10 µs against
~65 µs with ``setup_context``, which binds the arguments with ``inspect`` on
every call. It does not support torch.func, so the layer calls it only
outside transforms (the "fused" row of :mod:`kanode.nn._dispatch`).
"""

from __future__ import annotations

import torch

from kanode.nn import _native
from kanode.nn._member_fn import Grid, spline_forward
from kanode.nn._spline_fn import SplineLayerFn
from kanode.nn.bspline import value_slope_matrix


class FusedLayerFn(torch.autograd.Function):
    """(x ([M,] batch, in), coef ([M,] out, in, n_coef), scale, base_weight ([M,] out, in), knots,
    shift, inv_h ([M·] in,), order, activation, graph_mode) → y ([M,] batch, out), on a uniform grid.

    ``graph_mode``: the eager contraction ("dense" or "sparse") that a backward
    building a graph recomputes the layer with."""

    @staticmethod
    def forward(ctx, x, coef, scale, base_weight, knots, shift, inv_h, order, activation, graph_mode):
        ctx.save_for_backward(x, coef, scale, base_weight, knots, shift, inv_h)
        ctx.settings = (order, activation, graph_mode)
        return fused_forward(x, coef, scale, base_weight, shift, inv_h, order, activation)

    @staticmethod
    def backward(ctx, grad):
        x, coef, scale, base_weight, knots, shift, inv_h = ctx.saved_tensors
        order, activation, graph_mode = ctx.settings
        needs = ctx.needs_input_grad[:4]
        if torch.is_grad_enabled():  # a graph of the backward is wanted
            grads = _graph_backward(grad, (x, coef, scale, base_weight), needs, knots, shift, inv_h, order,
                                    activation, graph_mode)
        else:
            mat = value_slope_matrix(order, x.dtype, x.device)
            grads = _native.kernel().backward(grad, x, coef, scale, base_weight, shift, inv_h, mat,
                                              coef.shape[-1] - order, _native.ACTIVATION_CODES[activation],
                                              *needs)
        return (*grads, None, None, None, None, None, None)


def fused_forward(x, coef, scale, base_weight, shift, inv_h, order, activation):
    """Plain call of the kernel (no autograd node) → y (batch, out)."""
    mat = value_slope_matrix(order, x.dtype, x.device)
    return _native.kernel().forward(x, coef, scale, base_weight, shift, inv_h, mat, coef.shape[-1] - order,
                                    _native.ACTIVATION_CODES[activation])


def _graph_backward(grad, inputs, needs, knots, shift, inv_h, order, activation, mode):
    if inputs[0].ndim == 3:  # a member axis
        offsets = torch.arange(order + 1, device=knots.device)
        grid = Grid(knots.reshape(-1, knots.shape[-1]), shift, inv_h, offsets, order, True)
        y = spline_forward(*inputs, grid, activation)
    else:
        y = SplineLayerFn.apply(*inputs, knots, shift, inv_h, order, True, activation, mode)[0]
    wanted = [t for t, need in zip(inputs, needs) if need]
    found = iter(torch.autograd.grad(y, wanted, grad, create_graph=True, allow_unused=True))
    return tuple(next(found) if need else None for need in needs)
