"""What the ensemble KAN layers (B-spline and RSWAF) share: stacking single
layers, rebuilding a member, and the rare per-member grid operations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kanode.ensemble._members import (MemberState, check_ensemble_input, check_members, check_same,
                                      each_member, edge_l1_entropy, stack)
from kanode.nn.activations import check_activation

SHARED = ("in_features", "out_features", "grid_size", "spline_order", "base_activation")


class StackedLayer(MemberState, nn.Module):
    """Base of the ensemble KAN layers. A subclass sets ``single`` (the single
    layer class it stacks), calls :meth:`_stack` in ``__init__``, defines
    ``forward`` and ``edge_activations``, and may override
    :meth:`_member_kwargs` (per-member constructor settings) and
    :meth:`_grid_changed` (refresh what forward derives from the knots)."""

    single: type[nn.Module]

    def _stack(self, layers: Sequence[Any]) -> list[Any]:
        """Check ``layers`` (same ``SHARED`` settings, dtype, device) and stack their
        parameters ``spline_coef``, ``spline_scale``, ``base_weight`` and buffer
        ``knots`` on a leading member axis; return them as a list."""
        kind = self.single.__name__
        layers = check_members(kind, layers, self.single)
        check_same(kind, layers, SHARED)
        first = layers[0]
        self.n_members = len(layers)
        self.in_features, self.out_features = first.in_features, first.out_features
        self.grid_size, self.spline_order = first.grid_size, first.spline_order
        self.base_activation = check_activation(first.base_activation)
        for name in ("spline_coef", "spline_scale", "base_weight"):
            setattr(self, name, nn.Parameter(stack(kind, name, [getattr(la, name) for la in layers])))
        self.register_buffer("knots", stack(kind, "knots", [layer.knots for layer in layers]))
        return layers

    def _member_kwargs(self, m: int) -> dict[str, Any]:
        return {}

    def _grid_changed(self) -> None:
        pass

    def regularization(self, x: Tensor, l1: float = 1.0, entropy: float = 2.0) -> Tensor:
        """Per member, the single layer's ``regularization`` over x[m]. x: (M, ..., in) → (M,)."""
        return edge_l1_entropy(self.edge_activations(x), l1, entropy)

    def member(self, m: int) -> nn.Module:
        """Member ``m`` as a new single layer of class ``single`` (copies; same dtype and device)."""
        m = self._check_member(m)
        layer = self.single(self.in_features, self.out_features, grid_size=self.grid_size,
                            spline_order=self.spline_order, base_activation=self.base_activation,
                            **self._member_kwargs(m), generator=torch.Generator())
        layer = layer.to(device=self.spline_coef.device, dtype=self.spline_coef.dtype)
        layer.load_state_dict(self.member_state_dict(m))
        return layer

    @torch.no_grad()
    def update_grid(self, x: Tensor) -> None:
        """Each member's single-layer ``update_grid`` on its own samples x[m].

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
        """Every member's single-layer ``extend_grid``. Replaces ``spline_coef``
        (a new Parameter: rebuild optimisers) and ``knots``."""
        kind = self.single.__name__
        layers = [self.member(m) for m in range(self.n_members)]
        for layer in layers:
            layer.extend_grid(new_grid_size)
        self.spline_coef = nn.Parameter(stack(kind, "spline_coef", [la.spline_coef for la in layers]))
        self.knots = stack(kind, "knots", [layer.knots for layer in layers])
        self.grid_size = new_grid_size
        self._grid_changed()
