"""Local-support B-spline evaluation.

A B-spline of order ``k`` has only ``k + 1`` non-zero bases at any input.
:func:`local_basis` returns those values (and their derivatives) together
with the index of the first one, the *cell*; the contraction with the
coefficients lives in :mod:`kanode.nn._contract` and the layer's autograd
Function in :mod:`kanode.nn._spline_fn`.

Knot layout, per input: ``n_knots = grid_size + 2 k + 1`` knots, the grid
range is ``[knots[k], knots[grid_size + k]]`` and basis ``B_j`` (``j`` in
``0 .. grid_size + k - 1``) is supported on ``[knots[j], knots[j + k + 1]]``.
On cell ``c`` (``knots[c + k] <= x < knots[c + k + 1]``) the non-zero bases
are ``B_c .. B_{c+k}``.

Outside the grid range the bases are continued linearly with their value and
slope at the nearest end (``B(x_c) + B'(x_c) (x - x_c)``, ``x_c`` the input
clamped to the range), so every spline is C¹ across the range ends, finite
and linear outside.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def _power_matrix_exact(order: int) -> tuple[tuple[Fraction, ...], ...]:
    """Rows p, columns j: coefficient of u**p in the j-th cardinal piece."""
    pieces = [[Fraction(1)]]  # polynomials in u, lowest power first

    def add(a, b):
        n = max(len(a), len(b))
        return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]

    def mul(a, b):
        out = [Fraction(0)] * (len(a) + len(b) - 1)
        for i, ai in enumerate(a):
            for j, bj in enumerate(b):
                out[i + j] += ai * bj
        return out

    for j in range(1, order + 1):  # uniform local de Boor, knot spacing 1
        left = lambda q: [Fraction(q - 1), Fraction(1)]  # u + q - 1  # noqa: E731
        right = lambda q: [Fraction(q), Fraction(-1)]  # q - u  # noqa: E731
        saved = [Fraction(0)]
        for r in range(j):
            temp = [c / j for c in pieces[r]]
            pieces[r] = add(saved, mul(right(r + 1), temp))
            saved = mul(left(j - r), temp)
        pieces.append(saved)
    return tuple(
        tuple(pieces[j][p] if p < len(pieces[j]) else Fraction(0) for j in range(order + 1))
        for p in range(order + 1)
    )


@lru_cache(maxsize=64)
def power_matrix(order: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cardinal B-spline pieces in the power basis.

    Returns ``M`` (k+1, k+1) and ``DM`` (k, k+1) with ``B_{c+j}(x) =
    sum_p u**p M[p, j]`` and ``h B'_{c+j}(x) = sum_p u**p DM[p, j]`` on a
    uniform grid, ``u = (x - knots[c + k]) / h`` in [0, 1].
    """
    exact = _power_matrix_exact(order)
    m = torch.tensor([[float(v) for v in row] for row in exact], dtype=torch.float64)
    dm = m[1:] * torch.arange(1, order + 1, dtype=torch.float64).unsqueeze(-1)
    return m.to(dtype=dtype, device=device), dm.to(dtype=dtype, device=device)


@lru_cache(maxsize=64)
def value_slope_matrix(order: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``[M | DM; 0]`` (k+1, 2(k+1)): powers of u → (values, h · slopes) in one matmul."""
    m, dm = power_matrix(order, dtype, device)
    return torch.cat([m, torch.cat([dm, torch.zeros_like(dm[:1])])], dim=1)


def is_uniform(knots: torch.Tensor, rtol: float = 1e-6) -> bool:
    """Whether every row of ``knots`` (in, n_knots) is equally spaced, up to
    ``rtol`` of the spacing plus rounding in the knots' dtype (host check)."""
    eps = torch.finfo(knots.dtype).eps
    knots = knots.double()
    diffs = knots.diff(dim=-1)
    spacing = diffs.mean(dim=-1, keepdim=True)
    slack = rtol * spacing.abs() + 16 * eps * knots.abs().amax(dim=-1, keepdim=True)
    return bool(((diffs - spacing).abs() <= slack).all())


def grid_scale(knots: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform knots (in, n_knots) → (shift, inv_h), each (in,), with
    ``x * inv_h + shift`` the position in cells from the left end of the range."""
    grid_size = knots.shape[-1] - 2 * order - 1
    lo = knots[:, order]
    inv_h = grid_size / (knots[:, grid_size + order] - lo)
    return -lo * inv_h, inv_h


def find_cell(x: torch.Tensor, knots: torch.Tensor, order: int, uniform: bool) -> torch.Tensor:
    """Cell index of each input, clamped to the grid. x: (batch, in) → (batch, in) int64."""
    grid_size = knots.shape[-1] - 2 * order - 1
    if uniform:
        shift, inv_h = grid_scale(knots, order)
        # the second clamp sends NaN (cast to INT64_MIN) to a valid cell; its bases stay NaN
        return torch.addcmul(shift, x, inv_h).floor().clamp(0, grid_size - 1).long().clamp(0, grid_size - 1)
    inner = knots[:, order + 1 : grid_size + order].contiguous()  # (in, G - 1)
    cell = torch.searchsorted(inner, x.detach().T.contiguous(), right=True)  # (in, batch)
    return cell.T


def local_basis(
    x: torch.Tensor,
    knots: torch.Tensor,
    order: int,
    uniform: bool,
    cell: torch.Tensor | None = None,
    derivative: bool = False,
    scale: tuple[torch.Tensor, torch.Tensor] | None = None,
    matrix: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The ``order + 1`` non-zero bases at each input.

    x: (batch, in); knots: (in, n_knots). Returns ``cell`` (batch, in) int64,
    ``values`` (batch, in, order + 1) and, when ``derivative``, their
    x-derivatives (batch, in, order + 1), else None. Built from
    differentiable torch ops, so derivatives of any order follow by autograd.
    ``scale``: ``grid_scale(knots, order)`` when the caller has it cached;
    ``matrix``: ``value_slope_matrix(order, x.dtype, x.device)`` likewise (code traced by
    ``torch.compile`` passes it in).
    """
    if uniform:
        return _uniform_basis(x, knots, order, cell, derivative, scale, matrix)
    if cell is None:
        cell = find_cell(x, knots, order, uniform)
    return (cell, *_deboor_basis(x, knots, order, cell, derivative))


def _uniform_basis(x, knots, order, cell, derivative, scale, matrix=None):
    grid_size = knots.shape[-1] - 2 * order - 1
    shift, inv_h = grid_scale(knots, order) if scale is None else scale
    s = torch.addcmul(shift, x, inv_h)  # (batch, in) position in units of cells
    if cell is None:
        first = s.floor().clamp(0, grid_size - 1)  # zero gradient
        cell = first.long().clamp(0, grid_size - 1)  # NaN (cast to INT64_MIN) → a valid cell; values stay NaN
    else:
        first = cell.to(x.dtype)
    u = s - first  # in [0, 1) inside the grid
    uc = u.clamp(0.0, 1.0)
    # values and h · slopes of the k+1 pieces at uc by Horner: (batch, in, 2(k+1))
    mat = value_slope_matrix(order, x.dtype, x.device) if matrix is None else matrix  # (k+1, 2(k+1))
    ue = uc.unsqueeze(-1)
    both = mat[order].expand(*uc.shape, -1)
    for p in range(order - 1, -1, -1):
        both = torch.addcmul(mat[p], both, ue)
    slope = both[..., order + 1 :]  # h · dB/dx at uc
    values = torch.addcmul(both[..., : order + 1], (u - uc).unsqueeze(-1), slope)  # B(uc) + (u - uc) h B'(uc)
    derivs = slope * inv_h.unsqueeze(-1) if derivative else None
    return cell, values, derivs


def _deboor_basis(x, knots, order, cell, derivative):
    n_in, n_knots = knots.shape
    grid_size = n_knots - 2 * order - 1
    lo = knots[:, order]
    hi = knots[:, grid_size + order]
    xc = torch.minimum(torch.maximum(x, lo), hi)  # (batch, in)
    # local knots t[c + 1 .. c + 2k]: (batch, in, 2k)
    offsets = torch.arange(1, 2 * order + 1, device=x.device)
    rows = torch.arange(n_in, device=x.device) * n_knots  # (in,)
    t = knots.reshape(-1)[(rows + cell).unsqueeze(-1) + offsets]  # (batch, in, 2k)
    t = [t[..., r] for r in range(2 * order)]
    bases = [torch.ones_like(xc)]
    lower = bases
    for j in range(1, order + 1):  # local de Boor (NURBS book A2.2)
        lower = bases
        saved = torch.zeros_like(xc)
        new = []
        for r in range(j):
            right = t[order - 1 + r + 1] - xc
            left = xc - t[order - j + r]
            temp = bases[r] / (right + left)
            new.append(saved + right * temp)
            saved = left * temp
        new.append(saved)
        bases = new
    # B'_{c+r} = A[r-1] - A[r],  A[q] = k N_{k-1}[q] / (t[k+q] - t[q])
    a = [order * lower[q] / (t[order + q] - t[q]) for q in range(order)]
    zero = torch.zeros_like(xc)
    slopes = [(a[r - 1] if r > 0 else zero) - (a[r] if r < order else zero) for r in range(order + 1)]
    slope = torch.stack(slopes, dim=-1)  # (batch, in, k+1)
    values = torch.stack(bases, dim=-1) + (x - xc).unsqueeze(-1) * slope
    return values, (slope if derivative else None)


def dense_basis(x: torch.Tensor, knots: torch.Tensor, order: int, uniform: bool) -> torch.Tensor:
    """All ``grid_size + order`` bases (zeros off the support). x: (batch, in) → (batch, in, n_coef)."""
    cell, values, _ = local_basis(x, knots, order, uniform)
    n_coef = knots.shape[-1] - order - 1
    idx = cell.unsqueeze(-1) + torch.arange(order + 1, device=x.device)  # cell + k <= n_coef - 1
    return x.new_zeros(*x.shape, n_coef).scatter(-1, idx, values)
