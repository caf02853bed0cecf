"""Knot placement and least-squares refits for grid update and extension.

All arithmetic is float64 and runs outside ``forward``; callers copy the
results into their parameters and buffers.
"""

from __future__ import annotations

import torch


def extend_knots(interior: torch.Tensor, order: int) -> torch.Tensor:
    """Add ``order`` knots on each side, spaced by the mean interior spacing.

    interior: (in, grid_size + 1) increasing → (in, grid_size + 2 order + 1).
    """
    grid_size = interior.shape[-1] - 1
    h = (interior[:, -1:] - interior[:, :1]) / grid_size  # (in, 1)
    steps = torch.arange(1, order + 1, dtype=interior.dtype, device=interior.device)
    left = interior[:, :1] - h * steps.flip(0)
    right = interior[:, -1:] + h * steps
    return torch.cat([left, interior, right], dim=-1)


def adaptive_interior(x: torch.Tensor, grid_size: int, grid_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Interior knots fitted to samples: ``grid_eps`` · uniform + (1 − grid_eps) · quantiles.

    x: (batch, in) float64 → (interior (in, grid_size + 1), constant (in,) bool).
    Knot gaps are kept above 1e-3 of the mean gap so no cell is empty of
    width; ``constant`` marks columns with (numerically) no spread, for which
    the interior is meaningless and the caller keeps its old grid.
    """
    xs = x.sort(dim=0).values.T  # (in, batch)
    lo, hi = xs[:, :1], xs[:, -1:]
    span = hi - lo
    constant = (span <= 1e-9 * torch.clamp(hi.abs().maximum(lo.abs()), min=1.0)).squeeze(-1)
    span = torch.where(span > 0, span, torch.ones_like(span))
    positions = torch.linspace(0, xs.shape[1] - 1, grid_size + 1, dtype=torch.float64, device=x.device)
    below = positions.floor().long()
    above = positions.ceil().long()
    frac = positions - below
    quantiles = xs[:, below] * (1 - frac) + xs[:, above] * frac  # (in, G+1)
    fractions = torch.linspace(0, 1, grid_size + 1, dtype=torch.float64, device=x.device)
    uniform = lo + span * fractions
    interior = grid_eps * uniform + (1 - grid_eps) * quantiles
    gaps = interior.diff(dim=-1).clamp_min(1e-3 * span / grid_size)
    gaps = gaps * (span / gaps.sum(dim=-1, keepdim=True))
    interior = torch.cat([lo, lo + gaps.cumsum(dim=-1)], dim=-1)
    interior[:, -1:] = lo + span
    return interior, constant


def refine_interior(interior: torch.Tensor, new_grid_size: int) -> torch.Tensor:
    """Piecewise-linear resampling of interior knots (in, G + 1) → (in, new_G + 1).

    An integer refinement factor subdivides every old cell evenly, so the old
    knots are kept and the new spline space contains the old one.
    """
    grid_size = interior.shape[-1] - 1
    pos = torch.linspace(0, grid_size, new_grid_size + 1, dtype=torch.float64, device=interior.device)
    below = pos.floor().long().clamp(max=grid_size - 1)
    frac = (pos - below).unsqueeze(0)
    return interior[:, below] * (1 - frac) + interior[:, below + 1] * frac


def cell_points(interior: torch.Tensor, per_cell: int) -> torch.Tensor:
    """``per_cell`` evenly placed points inside each cell. (in, G+1) → (in, G * per_cell)."""
    frac = (torch.arange(per_cell, dtype=torch.float64, device=interior.device) + 0.5) / per_cell
    left, width = interior[:, :-1, None], interior.diff(dim=-1).unsqueeze(-1)
    return (left + width * frac).reshape(interior.shape[0], -1)


def solve_least_squares(
    design: torch.Tensor,
    target: torch.Tensor,
    anchor_design: torch.Tensor | None = None,
    anchor_target: torch.Tensor | None = None,
    anchor_weight: float = 1e-6,
) -> torch.Tensor:
    """Min ‖design c − target‖² + w ‖anchor_design c − anchor_target‖² + ridge ‖c‖² per input.

    design: (in, batch, n_coef); target: (in, batch, out); anchors likewise
    with their own point count. Returns c (in, n_coef, out), float64. Solved
    as one stacked least-squares problem (SVD driver, no normal equations), so
    exact fits stay exact; the anchor term and a 1e-10 relative ridge keep it
    regular when the samples do not determine every coefficient.
    """
    rows, rhs = [design], [target]
    if anchor_design is not None:
        weight = (anchor_weight * design.shape[1] / anchor_design.shape[1]) ** 0.5
        rows.append(weight * anchor_design)
        rhs.append(weight * anchor_target)
    n_in, _, n_coef = design.shape
    scale = design.abs().amax(dim=(1, 2)).clamp_min(1e-300)  # (in,)
    eye = torch.eye(n_coef, dtype=design.dtype, device=design.device)
    rows.append(1e-10 * scale[:, None, None] * eye)
    rhs.append(target.new_zeros(n_in, n_coef, target.shape[-1]))
    a, b = torch.cat(rows, dim=1), torch.cat(rhs, dim=1)
    driver = "gelsd" if a.device.type == "cpu" else None
    return torch.linalg.lstsq(a, b, driver=driver).solution


def solve_per_layer(design: torch.Tensor, target: torch.Tensor, n_in: int) -> torch.Tensor:
    """:func:`solve_least_squares` on columns grouped by layer: design (C, batch, n_coef),
    target (C, batch, out) with C = [M ·] n_in → (C, n_coef, out). One stacked solve per
    member, exactly the single layer's call (a stacked LAPACK solve over more columns
    rounds differently)."""
    return torch.cat([solve_least_squares(d, t) for d, t in zip(design.split(n_in), target.split(n_in))])
