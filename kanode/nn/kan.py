"""B-spline KAN layer.

Edge ``(o, i)`` computes ``base_weight[o, i] · act(x_i) + spline_scale[o, i] ·
Σ_j spline_coef[o, i, j] B_j(x_i)`` and output ``o`` sums its edges. Only the
``spline_order + 1`` non-zero bases of each input are evaluated (closed form
on a uniform grid, local de Boor otherwise). On the CPU with a uniform grid
the forward and the first-order backward are one fused C++ call each
(:mod:`kanode.nn._fused_fn`, :mod:`kanode.nn._native`) and the autograd node
saves only the input; elsewhere the PyTorch Function of
:mod:`kanode.nn._spline_fn` saves the input and its cell index, and tiny
batches (a neural-ODE solve evaluates at batch 1) take plain-op paths. Which
path runs is decided in one place, the table of :mod:`kanode.nn._dispatch`;
:meth:`KANLayer.contraction_for` reports it.

**Member axis.** ``KANLayer(..., members=M)`` is M independent layers in one
module: parameters (M, out, in, ...), knots (M, in, n_knots) (per member,
may differ after :meth:`update_grid`), inputs (M, ..., in). Every code path
takes the member axis (the truncated powers and the fused kernel directly;
non-uniform grids :mod:`kanode.nn._member_fn`), so a single layer
(``members=None``, no member axis) and member ``m`` of a member layer run
the same code and agree to rounding; :mod:`kanode.ensemble` stacks single
layers into member layers.

**Outside the grid** the spline part continues linearly with its value and
slope at the nearest end of the grid range (C¹, finite, linear growth); the
base path continues as ``act``. Neural-ODE states that leave the training
range therefore see a smooth, extrapolating vector field, never a zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from kanode.nn import grid as _grid
from kanode.nn._checks import check_input, check_layer_args, check_member_input, check_members_arg
from kanode.nn._dispatch import CONTRACTIONS, PATHS, choose_path, small_constants_for
from kanode.nn._edges import edge_entropy_l1
from kanode.nn.activations import ACTIVATIONS, check_activation
from kanode.nn.bspline import dense_basis, grid_scale, is_uniform

_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # a type check, no sync


class KANLayer(nn.Module):
    """B-spline KAN layer, (..., in_features) → (..., out_features).

    Parameters: ``spline_coef`` (out, in, grid_size + spline_order),
    ``base_weight`` (out, in), ``spline_scale`` (out, in); buffer ``knots``
    (in, grid_size + 2 spline_order + 1), uniform over ``grid_range`` at
    construction. ``contraction`` picks the coefficient contraction:
    ``"fused"`` (one C++ pass over the k+1 non-zero bases, CPU, uniform grid;
    see :mod:`kanode.nn._native`), ``"dense"`` (scatter + GEMM), ``"sparse"``
    (gather of the k+1 non-zero bases) or ``"auto"`` (the fastest that
    applies: the table of :mod:`kanode.nn._dispatch`). ``grid_eps`` weighs
    uniform against quantile knots in :meth:`update_grid`. Outside the grid range the spline continues linearly
    (value and slope at the nearest end), see the module docstring. ``members``:
    M layers on a leading member axis (every shape above gains it, inputs
    (M, ..., in)); ``uniform`` is then whether every member's grid is uniform,
    ``member_uniform`` the per-member flags.
    """

    members: int | None = None  # no member axis (also for instances built without __init__, old pickles)

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5,
                 spline_order: int = 3, grid_range: Sequence[float] = (-1.0, 1.0),
                 base_activation: str = "silu", grid_eps: float = 0.02,
                 coef_std: float = 0.1, contraction: str = "auto",
                 generator: torch.Generator | None = None, members: int | None = None) -> None:
        super().__init__()
        check_layer_args(in_features, out_features, grid_size, spline_order, grid_range)
        self.members = check_members_arg(members)
        lead = () if members is None else (members,)
        if contraction not in CONTRACTIONS:
            raise ValueError(f"contraction={contraction!r} is not known; use one of {CONTRACTIONS}")
        if not 0.0 <= grid_eps <= 1.0:
            raise ValueError(f"grid_eps must lie in [0, 1], got {grid_eps}")
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        self.base_activation = check_activation(base_activation)
        self.grid_eps, self.contraction = grid_eps, contraction
        lo, hi = float(grid_range[0]), float(grid_range[1])
        interior = torch.linspace(lo, hi, grid_size + 1, dtype=torch.float64).expand(in_features, -1)
        knots = _grid.extend_knots(interior, spline_order).expand(*lead, -1, -1)
        self.register_buffer("knots", knots.to(torch.get_default_dtype()).contiguous())
        self._sync_grid()
        n_coef = grid_size + spline_order
        coef = torch.randn(*lead, out_features, in_features, n_coef, generator=generator) * coef_std
        self.spline_coef = nn.Parameter(coef.to(torch.get_default_dtype()))
        self.spline_scale = nn.Parameter(torch.ones(*lead, out_features, in_features))
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform(a=√5), as nn.Linear
        weight = (torch.rand(*lead, out_features, in_features, generator=generator) * 2 - 1) * bound
        self.base_weight = nn.Parameter(weight.to(torch.get_default_dtype()))

    def extra_repr(self) -> str:
        members = "" if self.members is None else f"members={self.members}, "
        return (f"{members}{self.in_features}, {self.out_features}, grid_size={self.grid_size}, "
                f"spline_order={self.spline_order}, uniform={self.uniform}")

    def _sync_grid(self, changed: Sequence[int] | None = None) -> None:
        """Refresh what forward derives from the knots, after a change to them
        (with a member axis: to the knots of members ``changed``, all when None)."""
        if self.members is None:
            self.uniform = is_uniform(self.knots)
        else:
            flags = list(getattr(self, "member_uniform", (False,) * self.members))
            for m in range(self.members) if changed is None else changed:
                flags[m] = is_uniform(self.knots[m])
            self.member_uniform = tuple(flags)
            self.uniform = all(flags)
        shift, inv_h = grid_scale(self.knots.reshape(-1, self.knots.shape[-1]), self.spline_order)
        self.register_buffer("_grid_shift", shift.contiguous(), persistent=False)  # ([M·] in,)
        self.register_buffer("_grid_inv_h", inv_h.contiguous(), persistent=False)  # ([M·] in,)
        self._small = small_constants_for(self)  # the "small" path's constants, or None
        self._act = ACTIVATIONS[self.base_activation][0]

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._sync_grid()

    def _apply(self, fn, recurse=True):
        """After ``.to()``, ``.double()`` etc.: a uniform grid stays exactly uniform
        in the new dtype (rebuilt in float64 from its end knots), and the
        derived buffers are refreshed."""
        if self.members is None:
            was_uniform = [getattr(self, "uniform", False)]
        else:
            was_uniform = list(getattr(self, "member_uniform", ()))
        super()._apply(fn, recurse)
        if any(was_uniform):
            k, g = self.spline_order, self.grid_size
            lo, hi = self.knots[..., k : k + 1].double(), self.knots[..., g + k : g + k + 1].double()
            frac = torch.linspace(0, 1, g + 1, dtype=torch.float64, device=lo.device)
            rebuilt = _grid.extend_knots((lo + (hi - lo) * frac).reshape(-1, g + 1), k).view(self.knots.shape)
            with torch.no_grad():
                if self.members is None:
                    self.knots.copy_(rebuilt)
                for m in (m for m, flag in enumerate(was_uniform) if flag and self.members is not None):
                    self.knots[m].copy_(rebuilt[m])
        self._sync_grid()
        return self

    def contraction_for(self, batch: int, x: torch.Tensor | None = None, grad: bool | None = None) -> str:
        """Name of the code path ``forward`` takes for ``batch`` rows of input x
        (default: an input of the knots' dtype and device), with autograd recording when
        ``grad`` (default: ``torch.is_grad_enabled()``): "small", "fused", "kept",
        "dense" or "sparse", see :mod:`kanode.nn._dispatch`. With a member axis
        ``batch`` counts each member's rows. Host-side checks only."""
        if x is None:
            x = self.knots.new_empty(0, self.in_features)
        rows = batch if self.members is None else batch * self.members
        return choose_path(self, rows, x, torch.is_grad_enabled() if grad is None else grad, _is_wrapped(x))

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """Input ([M,] ..., in) → rows ([M,] batch, in) (checked)."""
        if self.members is None:
            check_input(x, self.in_features)
            return x if x.ndim == 2 else x.reshape(-1, self.in_features)
        check_member_input(x, self.members, self.in_features)
        return x if x.ndim == 3 else x.reshape(self.members, -1, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ([M,] ..., in) → ([M,] ..., out)."""
        if self.members is None:  # inline: a neural-ODE solve calls this hundreds of times per step
            check_input(x, self.in_features)
            flat = x if x.ndim == 2 else x.reshape(-1, self.in_features)
            rows = flat.shape[0]
        else:
            flat = self._rows(x)
            rows = flat.shape[0] * flat.shape[1]
        wrapped, graph = _is_wrapped(x), torch.is_grad_enabled()
        out = PATHS[choose_path(self, rows, flat, graph, wrapped)].run(self, flat, graph or wrapped)
        return out if x.ndim == flat.ndim else out.reshape(*x.shape[:-1], self.out_features)

    def spline_bases(self, x: torch.Tensor) -> torch.Tensor:
        """All bases (with the linear continuation). x: ([M,] batch, in) → ([M,] batch, in, n_coef)."""
        knots = self.knots.to(x.dtype)
        if self.members is None:
            return dense_basis(x, knots, self.spline_order, self.uniform)
        n_members, batch, n_in = x.shape  # members' inputs as columns with their own knots
        columns = x.transpose(0, 1).reshape(batch, n_members * n_in)
        bases = dense_basis(columns, knots.reshape(n_members * n_in, -1), self.spline_order, self.uniform)
        return bases.view(batch, n_members, n_in, -1).transpose(0, 1)

    def edge_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Output of every edge. x: ([M,] batch, in) → ([M,] batch, out, in); differentiable."""
        x = self._rows(x)
        act = ACTIVATIONS[self.base_activation][0]
        spline = torch.einsum("...bij,...oij->...boi", self.spline_bases(x), self.spline_coef)
        return self.base_weight.unsqueeze(-3) * act(x).unsqueeze(-2) + self.spline_scale.unsqueeze(-3) * spline

    def regularization(self, x: torch.Tensor, l1: float = 1.0, entropy: float = 2.0) -> torch.Tensor:
        """``l1 · Σ|φ|₁ + entropy · S`` of this layer's edges over the batch x ([M,] batch, in) → ([M],)."""
        total, ent = edge_entropy_l1(self.edge_activations(x))
        return l1 * total + entropy * ent

    def _spline_values(self, x: torch.Tensor, knots: torch.Tensor, uniform: bool,
                       coef: torch.Tensor, column: int) -> torch.Tensor:
        """Unscaled spline of input ``column`` at x (n,) float64 → (n, out); knots
        (columns, n_knots), coef (out, columns, n_coef) as :meth:`_columns` gives them."""
        basis = dense_basis(x.unsqueeze(-1), knots[column : column + 1], self.spline_order, uniform)
        return basis[:, 0] @ coef[:, column].T

    def _columns(self) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """Knots (C, n_knots) and coefficients (out, C, n_coef), float64, and each column's
        uniformity: one column per input, and per member (C = [M ·] in)."""
        n_knots = self.knots.shape[-1]
        knots = self.knots.double().reshape(-1, n_knots)
        coef = self.spline_coef.double()
        if self.members is None:
            return knots, coef, [self.uniform] * self.in_features
        coef = coef.transpose(0, 1).reshape(self.out_features, -1, coef.shape[-1])
        return knots, coef, [flag for flag in self.member_uniform for _ in range(self.in_features)]

    def _set_columns(self, knots: torch.Tensor, coef: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse of :meth:`_columns`: knots (C, n_knots), coef (out, C, n_coef) → the layer's shapes."""
        if self.members is None:
            return knots, coef
        n_coef = coef.shape[-1]
        coef = coef.view(self.out_features, self.members, self.in_features, n_coef).transpose(0, 1)
        return knots.view(self.members, self.in_features, -1), coef.contiguous()

    def _column_uniform(self, knots: torch.Tensor) -> list[bool]:
        """Per column (C,) whether its layer (single) or member has uniform ``knots`` (C, n_knots)."""
        n_in = self.in_features
        if self.members is None:
            return [is_uniform(knots)] * n_in
        return [is_uniform(knots[m * n_in : (m + 1) * n_in]) for m in range(self.members) for _ in range(n_in)]

    def _warn(self, columns: list[int], text: str) -> None:
        """One RuntimeWarning "inputs [...] {text}" (per member, "member m: ..." with a member axis)."""
        n_in = self.in_features
        groups = {None: columns} if self.members is None else {}
        if self.members is not None:
            for c in columns:
                groups.setdefault(c // n_in, []).append(c % n_in)
        for m, cols in groups.items():
            prefix = "" if m is None else f"member {m}: "
            warnings.warn(f"{prefix}update_grid: inputs {cols} {text}", RuntimeWarning, stacklevel=3)

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor) -> None:
        """Fit the knots to samples x ([M,] ..., in) and refit coefficients (per member
        on its own samples x[m] with a member axis).

        Knots: ``grid_eps`` · uniform + (1 − grid_eps) · quantiles over each
        input's sample range. Coefficients: least squares on the samples
        (float64), lightly anchored (weight 1e-6) to the old spline on the new
        range so that cells without samples stay sensible. Columns without
        spread keep their old grid; both fallbacks warn.
        """
        samples = self._rows(x).detach().to(torch.float64)
        if not torch.isfinite(samples).all():
            raise ValueError("update_grid got non-finite samples; remove NaN/inf states first")
        if self.members is not None:  # members' inputs as columns (n, M·in)
            samples = samples.transpose(0, 1).reshape(samples.shape[1], -1)
        order, n_coef = self.spline_order, self.grid_size + self.spline_order
        old_knots, old_coef, old_uniform = self._columns()
        interior, constant = _grid.adaptive_interior(samples, self.grid_size, self.grid_eps)
        if constant.any():
            self._warn(constant.nonzero().flatten().tolist(),
                       "have no spread in the samples; their grids are left unchanged")
        new_knots = _grid.extend_knots(interior, order)
        new_knots[constant] = old_knots[constant]
        new_uniform = self._column_uniform(new_knots)
        new_coef = old_coef.clone()
        short = []
        anchors = _grid.cell_points(new_knots[:, order : self.grid_size + order + 1], 4)
        for i in range(samples.shape[1]):
            if constant[i]:
                continue
            if samples[:, i].unique().numel() < n_coef:
                short.append(i)
            xi, ai = samples[:, i], anchors[i]
            design = dense_basis(xi.unsqueeze(-1), new_knots[i : i + 1], order, new_uniform[i])[:, 0]
            anchor = dense_basis(ai.unsqueeze(-1), new_knots[i : i + 1], order, new_uniform[i])[:, 0]
            fitted = _grid.solve_least_squares(
                design.unsqueeze(0), self._spline_values(xi, old_knots, old_uniform[i], old_coef, i).unsqueeze(0),
                anchor.unsqueeze(0), self._spline_values(ai, old_knots, old_uniform[i], old_coef, i).unsqueeze(0),
            )[0]  # (n_coef, out)
            new_coef[:, i] = fitted.T
        if short:
            self._warn(short, f"have fewer distinct samples than the {n_coef} coefficients; the fit is "
                       "regularised towards the previous spline")
        new_knots, new_coef = self._set_columns(new_knots, new_coef)
        self.knots.copy_(new_knots.to(self.knots.dtype))
        self.spline_coef.copy_(new_coef.to(self.spline_coef.dtype))
        self._sync_grid()

    @torch.no_grad()
    def extend_grid(self, new_grid_size: int) -> None:
        """Change the grid size (of every member), refitting coefficients by least squares.

        Interior knots are resampled piecewise-linearly, so an integer factor
        subdivides each cell (knot insertion) and the refit is exact up to
        rounding; otherwise it is the least-squares projection on 2(k+1)
        points per new cell. Replaces ``spline_coef`` (a new Parameter: rebuild
        optimisers) and ``knots``.
        """
        check_layer_args(self.in_features, self.out_features, new_grid_size, self.spline_order, (0, 1))
        order = self.spline_order
        old_knots, old_coef, old_uniform = self._columns()
        interior = _grid.refine_interior(old_knots[:, order : self.grid_size + order + 1], new_grid_size)
        new_knots = _grid.extend_knots(interior, order)
        new_uniform = [old and new for old, new in zip(old_uniform, self._column_uniform(new_knots))]
        points = _grid.cell_points(interior, 2 * (order + 1))  # (C, n)
        columns = range(new_knots.shape[0])
        design = torch.stack([dense_basis(points[i].unsqueeze(-1), new_knots[i : i + 1], order, new_uniform[i])[:, 0]
                              for i in columns])
        target = torch.stack([self._spline_values(points[i], old_knots, old_uniform[i], old_coef, i)
                              for i in columns])
        new_coef = _grid.solve_per_layer(design, target, self.in_features).permute(2, 0, 1)  # (out, C, n_coef)
        new_knots, new_coef = self._set_columns(new_knots, new_coef)
        dtype, device = self.spline_coef.dtype, self.spline_coef.device
        self.spline_coef = nn.Parameter(new_coef.to(dtype=dtype, device=device).contiguous())
        self.knots = new_knots.to(dtype=self.knots.dtype, device=self.knots.device).contiguous()
        self.grid_size = new_grid_size
        self._sync_grid()
