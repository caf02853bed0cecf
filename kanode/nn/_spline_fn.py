"""The KAN layer's autograd Function: saves only the input (and its cells).

``y = act(x) @ base_weight.T + contract(B(x), table)`` with the local bases
``B(x)`` recomputed in backward. The backward is built from differentiable
ops and the Functions of :mod:`kanode.nn._contract`, so double backward
(Hessian-vector products) works, and ``torch.func`` transforms work through
``generate_vmap_rule`` (plus the contraction Functions' own vmap rules).

The tiny-batch variant that keeps its dense bases for backward (the "kept"
path of :mod:`kanode.nn._dispatch`) is :mod:`kanode.nn._member_fn`'s Function
at M = 1.
"""

from __future__ import annotations

import torch

from kanode.nn._contract import Contract, Gather, Scatter, contract_impl, flat_index, gather_impl, scatter_impl
from kanode.nn.activations import ACTIVATIONS
from kanode.nn.bspline import local_basis


def coef_table(coef: torch.Tensor, scale: torch.Tensor, rows: bool = True) -> torch.Tensor:
    """(out, in, n_coef) coefficients, (out, in) scales → (in * n_coef, out) table.

    ``rows``: make it row-major (embedding_bag and the sparse gathers are slow
    on the column-major view; a GEMM does not care).
    """
    out_f, n_in, n_coef = coef.shape
    table = (coef * scale.unsqueeze(-1)).reshape(out_f, n_in * n_coef).T
    return table.contiguous() if rows else table


def _functorch(t: torch.Tensor) -> bool:
    """Whether t is wrapped by a torch.func transform (a type check, no sync)."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def spline_layer(x, coef, scale, base_weight, knots, shift, inv_h, order, uniform, activation, mode):
    """The layer's forward computation → (y (batch, out), cell (batch, in)).

    x: (batch, in); coef: (out, in, n_coef); scale, base_weight: (out, in);
    knots: (in, n_knots); shift, inv_h: (in,) from ``grid_scale`` (used when
    ``uniform``). Plain ops: call directly when no gradient is
    needed, else through :class:`SplineLayerFn`.
    """
    table = coef_table(coef, scale, rows=mode == "sparse")
    cell, values, _ = local_basis(x, knots, order, uniform, scale=(shift, inv_h))
    # under vmap the Function's own batching rule avoids a per-sample loop
    contract = Contract.apply if _functorch(values) else contract_impl
    out = contract(values, table, cell, mode)
    return torch.addmm(out, ACTIVATIONS[activation][0](x), base_weight.T), cell


class SplineLayerFn(torch.autograd.Function):
    """KAN layer; see :func:`spline_layer`. Saves x and its cells only."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, coef, scale, base_weight, knots, shift, inv_h, order, uniform, activation, mode):
        return spline_layer(x, coef, scale, base_weight, knots, shift, inv_h, order, uniform, activation, mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, coef, scale, base_weight, knots, shift, inv_h, order, uniform, activation, mode = inputs
        ctx.save_for_backward(x, output[1], coef, scale, base_weight, knots, shift, inv_h)
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.settings = (order, uniform, activation, mode)

    @staticmethod
    def backward(ctx, grad, *_unused):
        x, cell, coef, scale, base_weight, knots, shift, inv_h = ctx.saved_tensors
        order, uniform, activation, mode = ctx.settings
        need_x, need_coef, need_scale, need_base = ctx.needs_input_grad[:4]
        if grad is None:
            return (None,) * 11
        grad = grad.contiguous()  # e.g. the expanded ones of y.sum(): strided kernels are slow
        graph = torch.is_grad_enabled() or _functorch(grad) or _functorch(x)
        _, values, derivs = local_basis(x, knots, order, uniform, cell=cell, derivative=need_x, scale=(shift, inv_h))
        out_f, n_in, n_coef = coef.shape
        # differentiable Functions only when a graph is being built (double backward)
        g_x = g_coef = g_scale = g_base = None
        idx = None if graph else flat_index(cell, n_coef, order).reshape(x.shape[0], -1)  # shared
        if need_x:
            table = coef_table(coef, scale, rows=mode == "sparse")
            g_values = (Gather.apply(grad, table, cell, order, mode) if graph
                        else gather_impl(grad, table, cell, order, mode, idx))
            g_x = torch.linalg.vecdot(g_values, derivs)
            if activation == "silu" and not graph:  # fused kernel, first order only
                g_x = g_x + torch.ops.aten.silu_backward(grad @ base_weight, x)
            else:
                g_x = g_x + (grad @ base_weight) * ACTIVATIONS[activation][1](x)
        if need_coef or need_scale:
            g_table = (Scatter.apply(grad, values, cell, n_coef, mode) if graph
                       else scatter_impl(grad, values, cell, n_coef, mode, idx))
            g_table = g_table.reshape(n_in, n_coef, out_f).permute(2, 0, 1)  # (out, in, n_coef)
            if need_coef:
                g_coef = g_table * scale.unsqueeze(-1)
            if need_scale:
                g_scale = (g_table * coef).sum(-1)
        if need_base:
            g_base = grad.T @ ACTIVATIONS[activation][0](x)
        return g_x, g_coef, g_scale, g_base, None, None, None, None, None, None, None
