"""Ensemble of B-spline KAN layers: M :class:`kanode.nn.KANLayer` s stacked on a member axis."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kanode.ensemble._members import check_ensemble_input
from kanode.ensemble._spline_fn import EnsembleSplineFn, Grid, features, spline_forward
from kanode.ensemble._stacked import StackedLayer
from kanode.nn import KANLayer
from kanode.nn._small import MIN_ORDER, power_constants
from kanode.nn.bspline import grid_scale, is_uniform
from kanode.nn.grid import extend_knots

# Truncated-power bases (every member's grid uniform, float64, order >= 2) while the
# (M, batch, in, n_coef, k+2) terms have at most this many elements: fewer ops than the
# local bases + scatter, but O(n_coef) work per input, so on the CPU the local bases win
# beyond (measured on 2 cores: crossover near 5e4 at M·in ≈ 2000, batch 1). On CUDA the
# powers' fewer kernel launches are taken at any size (not measured: no GPU here).
POWERS_MAX_TERMS = 32768


class EnsembleKANLayer(StackedLayer):
    """M B-spline KAN layers, (M, ..., in_features) → (M, ..., out_features).

    Built from single layers: ``EnsembleKANLayer([layer_0, ..., layer_{M-1}])``
    (same in/out features, grid size, spline order and base activation).
    Parameters ``spline_coef`` (M, out, in, n_coef), ``base_weight`` and
    ``spline_scale`` (M, out, in); buffer ``knots`` (M, in, n_knots), which may
    differ per member (non-uniform after :meth:`update_grid`). Member ``m``
    computes what ``self.member(m)`` computes, to rounding (see
    :mod:`kanode.ensemble._spline_fn`): truncated-power or closed-form local
    bases when every member's grid is uniform (``POWERS_MAX_TERMS`` picks),
    local de Boor otherwise, then one batched GEMM.

    ``grid_eps`` and ``contraction`` are kept per member only to rebuild the
    single layers (:meth:`member`, grid updates).
    """

    single = KANLayer

    def __init__(self, layers: Sequence[KANLayer]) -> None:
        super().__init__()
        layers = self._stack(layers)
        self.grid_eps = tuple(layer.grid_eps for layer in layers)
        self.contraction = tuple(layer.contraction for layer in layers)
        self._sync_grid()

    def extra_repr(self) -> str:
        return (f"{self.n_members} members, {self.in_features}, {self.out_features}, "
                f"grid_size={self.grid_size}, spline_order={self.spline_order}, uniform={self.uniform}")

    # ------------------------------------------------------------------ grid
    def _sync_grid(self, members: Sequence[int] | None = None) -> None:
        """Refresh what forward derives from the knots, after ``members``' knots
        changed (all when None). Host-side uniformity checks, one per member."""
        n_members, n_in, n_knots = self.knots.shape
        flags = list(getattr(self, "member_uniform", (False,) * n_members))
        for m in range(n_members) if members is None else members:
            flags[m] = is_uniform(self.knots[m])
        self.member_uniform = tuple(flags)
        self.uniform = all(flags)
        shift, inv_h = grid_scale(self.knots.reshape(n_members * n_in, n_knots), self.spline_order)
        self.register_buffer("_grid_shift", shift.contiguous(), persistent=False)  # (M·in,)
        self.register_buffer("_grid_inv_h", inv_h.contiguous(), persistent=False)  # (M·in,)
        offsets = torch.arange(self.spline_order + 1, device=self.knots.device)
        self.register_buffer("_offsets", offsets, persistent=False)  # (k+1,)
        self._powers = None  # truncated-power constants, built on first use per dtype/device

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._sync_grid()

    def _apply(self, fn, recurse=True):
        """As :meth:`KANLayer._apply`: after ``.to()``, ``.double()`` etc. every
        member's uniform grid stays exactly uniform in the new dtype."""
        was_uniform = getattr(self, "member_uniform", ())
        super()._apply(fn, recurse)
        if any(was_uniform):
            k, g = self.spline_order, self.grid_size
            n_members, n_in, _ = self.knots.shape
            lo, hi = self.knots[..., k : k + 1].double(), self.knots[..., g + k : g + k + 1].double()
            frac = torch.linspace(0, 1, g + 1, dtype=torch.float64, device=lo.device)
            rebuilt = extend_knots((lo + (hi - lo) * frac).reshape(n_members * n_in, g + 1), k)
            rebuilt = rebuilt.reshape(n_members, n_in, -1)
            with torch.no_grad():
                for m in (m for m, flag in enumerate(was_uniform) if flag):
                    self.knots[m].copy_(rebuilt[m])
        self._sync_grid()
        return self

    def _grid(self, x: Tensor) -> Grid:
        """The knots' data for input x (M, batch, in); picks the basis code path (host-side)."""
        dtype = x.dtype
        knots, shift, inv_h = self.knots, self._grid_shift, self._grid_inv_h
        if knots.dtype != dtype:
            knots, shift, inv_h = knots.to(dtype), shift.to(dtype), inv_h.to(dtype)
        powers = None
        n_terms = x.numel() * (self.grid_size + self.spline_order) * (self.spline_order + 2)
        if (self.uniform and dtype == torch.float64 and self.spline_order >= MIN_ORDER
                and (n_terms <= POWERS_MAX_TERMS or x.device.type == "cuda")):
            powers = self._powers
            if powers is None or powers.weight.device != knots.device:
                powers = self._powers = power_constants(self.grid_size, self.spline_order, dtype, knots.device)
        return Grid(knots.view(-1, knots.shape[-1]), shift, inv_h, self._offsets, self.spline_order,
                    self.uniform, powers)

    # --------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        """x: (M, ..., in) → (M, ..., out)."""
        check_ensemble_input(x, self.n_members, self.in_features)
        flat = x.reshape(self.n_members, -1, self.in_features)  # (M, batch, in)
        args = (flat, self.spline_coef, self.spline_scale, self.base_weight, self._grid(flat),
                self.base_activation)
        # under torch.func transforms (jacrev, vmap) plain differentiable ops; host-side type check
        wrapped = torch._C._functorch.is_functorch_wrapped_tensor(flat)
        if torch.is_grad_enabled() and not wrapped:
            out = EnsembleSplineFn.apply(*args)
        else:
            out = spline_forward(*args, differentiable=torch.is_grad_enabled() or wrapped)
        return out.reshape(*x.shape[:-1], self.out_features)

    def edge_activations(self, x: Tensor) -> Tensor:
        """Output of every edge. x: (M, ..., in) → (M, batch, out, in); differentiable."""
        check_ensemble_input(x, self.n_members, self.in_features)
        flat = x.reshape(self.n_members, -1, self.in_features)
        feats, _ = features(flat, self._grid(flat), self.base_activation, derivative=False)
        spline = torch.einsum("mbij,moij->mboi", feats[..., :-1], self.spline_coef)
        base = self.base_weight.unsqueeze(1) * feats[..., -1].unsqueeze(2)  # (M, batch, out, in)
        return base + self.spline_scale.unsqueeze(1) * spline

    def _member_kwargs(self, m: int) -> dict[str, object]:
        return {"grid_eps": self.grid_eps[m], "contraction": self.contraction[m]}

    def _grid_changed(self) -> None:
        self._sync_grid()
