"""Contraction of local bases with a coefficient table, and its two adjoints.

Notation: ``values`` (batch, in, k+1) are the non-zero bases of each input,
starting at coefficient ``cell`` (batch, in); ``table`` (in * n_coef, out)
holds the coefficients, row ``i * n_coef + m`` for input ``i`` and basis
``m``. The three maps are the partial derivatives of one trilinear form
``T(values, table, grad) = sum_{b,i,j,o} values[b,i,j] table[i n_coef +
cell[b,i] + j, o] grad[b,o]``:

* ``contract(values, table)`` → (batch, out)       = ∂T/∂grad
* ``gather(grad, table)``     → (batch, in, k+1)   = ∂T/∂values
* ``scatter(grad, values)``   → (in * n_coef, out) = ∂T/∂table

Each is an autograd Function whose backward is built from the other two, so
derivatives of every order exist. Each has two implementations with equal
results: ``"dense"`` scatters the bases into a (batch, in * n_coef) matrix
and uses one GEMM (fast for small grids), ``"sparse"`` touches only the
``k + 1`` non-zero entries (cost independent of the grid size).
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F

# The eager contraction that is faster for n_coef coefficients per input
# (measured with experiments/bench_layers.py, 2-core CPU): dense up to here.
DENSE_MAX_COEF = 16


@lru_cache(maxsize=256)
def _row_offsets(n_in: int, n_coef: int, order: int, device) -> torch.Tensor:
    """(in, k+1) table row of the first basis of cell 0, plus j."""
    rows = torch.arange(n_in, device=device).unsqueeze(-1) * n_coef
    return rows + torch.arange(order + 1, device=device)


def flat_index(cell: torch.Tensor, n_coef: int, order: int) -> torch.Tensor:
    """(batch, in) cells → (batch, in, k+1) table rows."""
    return cell.unsqueeze(-1) + _row_offsets(cell.shape[-1], n_coef, order, cell.device)


def _dense_matrix(values, cell, n_coef, idx=None):
    """Scatter (batch, in, k+1) values into a (batch, in * n_coef) matrix."""
    batch, n_in, width = values.shape
    if idx is None:
        idx = flat_index(cell, n_coef, width - 1).reshape(batch, -1)
    out = values.new_zeros(batch, n_in * n_coef)
    return out.scatter(1, idx, values.reshape(batch, -1))


def contract_impl(values, table, cell, mode):
    batch, n_in, width = values.shape
    n_coef = table.shape[0] // n_in
    if mode != "sparse":
        return _dense_matrix(values, cell, n_coef) @ table
    idx = flat_index(cell, n_coef, width - 1).reshape(batch, -1)
    weights = values.reshape(batch, -1).contiguous()
    return F.embedding_bag(idx, table.contiguous(), per_sample_weights=weights, mode="sum")


def gather_impl(grad, table, cell, order, mode, idx=None):
    batch, n_in = cell.shape
    n_coef = table.shape[0] // n_in
    if idx is None:
        idx = flat_index(cell, n_coef, order).reshape(batch, -1)  # (batch, in*(k+1))
    if mode != "sparse":
        return (grad @ table.T).gather(1, idx).reshape(batch, n_in, order + 1)
    # sampled dense-dense product at the sparsity pattern of the bases (CSR)
    grad = grad.contiguous()
    length = idx.shape[1]
    crow = torch.arange(0, batch * length + 1, length, device=grad.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(crow, idx.reshape(-1), grad.new_zeros(batch * length),
                                          (batch, table.shape[0]), check_invariants=False)
    out = torch.sparse.sampled_addmm(pattern, grad, table.T, beta=0.0).values()
    return out.reshape(batch, n_in, order + 1)


def scatter_impl(grad, values, cell, n_coef, mode, idx=None):
    batch, n_in, width = values.shape
    order = width - 1
    if mode != "sparse":
        return _dense_matrix(values, cell, n_coef, idx).T @ grad
    # sort (batch, in) entries by (input, cell); one bag per (j, input, cell)
    grad = grad.contiguous()  # it is embedding_bag's weight: strided rows are slow
    grid_size = n_coef - order
    n_bags = n_in * grid_size
    key = (cell + torch.arange(n_in, device=cell.device) * grid_size).reshape(-1).to(torch.int32)
    sorted_key, order_idx = torch.sort(key)  # int32 keys sort faster
    starts = torch.searchsorted(sorted_key, torch.arange(n_bags, device=cell.device, dtype=torch.int32))
    rows = order_idx // n_in  # batch row of each sorted entry
    columns = values.reshape(batch * n_in, width).T.contiguous()  # (k+1, batch*in)
    weights = torch.index_select(columns, 1, order_idx).reshape(-1)
    offsets = (starts + torch.arange(width, device=cell.device).unsqueeze(-1) * (batch * n_in)).reshape(-1)
    sums = F.embedding_bag(rows.expand(width, -1).reshape(-1), grad, offsets, per_sample_weights=weights, mode="sum")
    sums = sums.reshape(width, n_in, grid_size, -1)
    out = grad.new_zeros(n_in, n_coef, grad.shape[-1])
    for j in range(width):
        out[:, j : j + grid_size] += sums[j]
    return out.reshape(n_in * n_coef, -1)


def _move(x, bdim, size):
    """Batch dim to front (expanding when the argument is not batched)."""
    if bdim is None:
        return x.unsqueeze(0).expand(size, *x.shape)
    return x.movedim(bdim, 0)


class Contract(torch.autograd.Function):
    """(values (batch, in, k+1), table (in*n_coef, out), cell) → (batch, out)."""

    @staticmethod
    def forward(values, table, cell, mode):
        return contract_impl(values, table, cell, mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        values, table, cell, mode = inputs
        ctx.save_for_backward(values, table, cell)
        ctx.mode = mode

    @staticmethod
    def backward(ctx, grad):
        values, table, cell = ctx.saved_tensors
        g_values = g_table = None
        if ctx.needs_input_grad[0]:
            g_values = Gather.apply(grad, table, cell, values.shape[-1] - 1, ctx.mode)
        if ctx.needs_input_grad[1]:
            g_table = Scatter.apply(grad, values, cell, table.shape[0] // cell.shape[-1], ctx.mode)
        return g_values, g_table, None, None

    @staticmethod
    def vmap(info, in_dims, values, table, cell, mode):
        size = info.batch_size
        if in_dims[1] is None:  # shared table: fold the vmapped dim into the batch
            v = _move(values, in_dims[0], size)
            c = _move(cell, in_dims[2], size)
            out = Contract.apply(v.reshape(-1, *v.shape[2:]), table, c.reshape(-1, *c.shape[2:]), mode)
            return out.reshape(size, -1, out.shape[-1]), 0
        v, t, c = (_move(a, d, size) for a, d in zip((values, table, cell), in_dims[:3]))
        return torch.stack([Contract.apply(v[n], t[n], c[n], mode) for n in range(size)]), 0


class Gather(torch.autograd.Function):
    """(grad (batch, out), table (in*n_coef, out), cell) → (batch, in, k+1)."""

    @staticmethod
    def forward(grad, table, cell, order, mode):
        return gather_impl(grad, table, cell, order, mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad, table, cell, order, mode = inputs
        ctx.save_for_backward(grad, table, cell)
        ctx.mode = mode

    @staticmethod
    def backward(ctx, g_values):
        grad, table, cell = ctx.saved_tensors
        g_grad = g_table = None
        if ctx.needs_input_grad[0]:
            g_grad = Contract.apply(g_values, table, cell, ctx.mode)
        if ctx.needs_input_grad[1]:
            g_table = Scatter.apply(grad, g_values, cell, table.shape[0] // cell.shape[-1], ctx.mode)
        return g_grad, g_table, None, None, None

    @staticmethod
    def vmap(info, in_dims, grad, table, cell, order, mode):
        size = info.batch_size
        if in_dims[1] is None:
            g = _move(grad, in_dims[0], size)
            c = _move(cell, in_dims[2], size)
            out = Gather.apply(g.reshape(-1, g.shape[-1]), table, c.reshape(-1, c.shape[-1]), order, mode)
            return out.reshape(size, -1, *out.shape[1:]), 0
        g, t, c = (_move(a, d, size) for a, d in zip((grad, table, cell), in_dims[:3]))
        return torch.stack([Gather.apply(g[n], t[n], c[n], order, mode) for n in range(size)]), 0


class Scatter(torch.autograd.Function):
    """(grad (batch, out), values (batch, in, k+1), cell) → (in*n_coef, out)."""

    @staticmethod
    def forward(grad, values, cell, n_coef, mode):
        return scatter_impl(grad, values, cell, n_coef, mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad, values, cell, n_coef, mode = inputs
        ctx.save_for_backward(grad, values, cell)
        ctx.mode = mode

    @staticmethod
    def backward(ctx, g_table):
        grad, values, cell = ctx.saved_tensors
        g_grad = g_values = None
        if ctx.needs_input_grad[0]:
            g_grad = Contract.apply(values, g_table, cell, ctx.mode)
        if ctx.needs_input_grad[1]:
            g_values = Gather.apply(grad, g_table, cell, values.shape[-1] - 1, ctx.mode)
        return g_grad, g_values, None, None, None

    @staticmethod
    def vmap(info, in_dims, grad, values, cell, n_coef, mode):
        size = info.batch_size
        g, v, c = (_move(a, d, size) for a, d in zip((grad, values, cell), in_dims[:3]))
        return torch.stack([Scatter.apply(g[n], v[n], c[n], n_coef, mode) for n in range(size)]), 0
