"""Ensemble of B-spline KAN layers: M :class:`kanode.nn.KANLayer` s stacked on a member axis."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kanode.ensemble._activations import check_activation
from kanode.ensemble._members import (MemberState, check_ensemble_input, check_members, check_same,
                                      each_member, edge_l1_entropy, stack)
from kanode.ensemble._powers import MIN_ORDER, power_constants
from kanode.ensemble._spline_fn import EnsembleSplineFn, Grid, features, spline_forward
from kanode.nn import KANLayer
from kanode.nn.bspline import grid_scale, is_uniform
from kanode.nn.grid import extend_knots

_SHARED = ("in_features", "out_features", "grid_size", "spline_order", "base_activation")
# Truncated-power bases (every member's grid uniform, float64, order >= 2) while the
# (M, batch, in, n_coef, k+2) terms have at most this many elements: fewer ops than the
# local bases + scatter, but O(n_coef) work per input, so on the CPU the local bases win
# beyond (measured on 2 cores: crossover near 5e4 at M·in ≈ 2000, batch 1). On CUDA the
# powers' fewer kernel launches are taken at any size (not measured: no GPU here).
POWERS_MAX_TERMS = 32768


class EnsembleKANLayer(MemberState, nn.Module):
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

    def __init__(self, layers: Sequence[KANLayer]) -> None:
        super().__init__()
        layers = check_members("KANLayer", layers, KANLayer)
        check_same("KANLayer", layers, _SHARED)
        first = layers[0]
        self.n_members = len(layers)
        self.in_features, self.out_features = first.in_features, first.out_features
        self.grid_size, self.spline_order = first.grid_size, first.spline_order
        self.base_activation = check_activation(first.base_activation)
        self.grid_eps = tuple(layer.grid_eps for layer in layers)
        self.contraction = tuple(layer.contraction for layer in layers)
        for name in ("spline_coef", "spline_scale", "base_weight"):
            setattr(self, name, nn.Parameter(stack("KANLayer", name, [getattr(la, name) for la in layers])))
        self.register_buffer("knots", stack("KANLayer", "knots", [layer.knots for layer in layers]))
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

    def regularization(self, x: Tensor, l1: float = 1.0, entropy: float = 2.0) -> Tensor:
        """Per member, :meth:`KANLayer.regularization` over x[m]. x: (M, ..., in) → (M,)."""
        return edge_l1_entropy(self.edge_activations(x), l1, entropy)

    # --------------------------------------------------------------- members
    def member(self, m: int) -> KANLayer:
        """Member ``m`` as a new single :class:`KANLayer` (copies; same dtype and device)."""
        m = self._check_member(m)
        layer = KANLayer(self.in_features, self.out_features, grid_size=self.grid_size,
                         spline_order=self.spline_order, base_activation=self.base_activation,
                         grid_eps=self.grid_eps[m], contraction=self.contraction[m],
                         generator=torch.Generator())
        layer = layer.to(device=self.spline_coef.device, dtype=self.spline_coef.dtype)
        layer.load_state_dict(self.member_state_dict(m))
        return layer

    @torch.no_grad()
    def update_grid(self, x: Tensor) -> None:
        """Each member's :meth:`KANLayer.update_grid` on its own samples x[m].

        x: (M, ..., in). Runs the single layer's algorithm member by member (a
        host-side loop; grid updates are rare), so the knots may then differ
        per member. Parameters are updated in place. The single layer's
        warnings are re-issued with the member index.
        """
        check_ensemble_input(x, self.n_members, self.in_features)
        samples = x.reshape(self.n_members, -1, self.in_features)
        each_member(self, samples, lambda layer, xm: layer.update_grid(xm))

    @torch.no_grad()
    def extend_grid(self, new_grid_size: int) -> None:
        """Every member's :meth:`KANLayer.extend_grid`. Replaces ``spline_coef``
        (a new Parameter: rebuild optimisers) and ``knots``."""
        layers = [self.member(m) for m in range(self.n_members)]
        for layer in layers:
            layer.extend_grid(new_grid_size)
        self.spline_coef = nn.Parameter(stack("KANLayer", "spline_coef", [la.spline_coef for la in layers]))
        self.knots = stack("KANLayer", "knots", [layer.knots for layer in layers])
        self.grid_size = new_grid_size
        self._sync_grid()
