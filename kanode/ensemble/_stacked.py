"""Stacking single layers (KAN, RSWAF, linear) into the member-axis layers of :mod:`kanode.nn`.

The ensemble layers are the single layers' own classes with ``members=M``
(one implementation of each layer: :class:`kanode.nn.KANLayer`,
:class:`kanode.nn.RSWAFLayer`); this module only builds them from single
layers (``EnsembleKANLayer([layer_0, ...])``) and gives members back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from kanode.ensemble._members import MemberState, check_members, check_same, stack
from kanode.nn import KANLayer, RSWAFLayer
from kanode.nn.linear import Linear

SHARED = ("in_features", "out_features", "grid_size", "spline_order", "base_activation")
# per layer class: the settings its members must share beyond SHARED (constructor arguments)
SETTINGS: dict[type, tuple[str, ...]] = {KANLayer: ("grid_eps", "contraction"), RSWAFLayer: ()}


def layer_settings(layer: nn.Module, single: type) -> dict[str, Any]:
    """The constructor arguments that rebuild ``layer``'s shape and settings (no RNG use)."""
    return {name: getattr(layer, name) for name in SHARED[2:] + SETTINGS[single]}


def stack_layers(layers: Sequence[nn.Module], single: type, target: nn.Module | None = None) -> nn.Module:
    """Single layers of class ``single`` (same shape, settings, dtype, device) → one
    ``single(..., members=M)`` layer whose member m is layers[m]; into ``target`` (an
    instance being constructed) when given."""
    kind = single.__name__
    layers = check_members(kind, layers, single)
    check_same(kind, layers, SHARED + SETTINGS[single])
    first = layers[0]
    settings = layer_settings(first, single)
    if target is None:
        target = single.__new__(single)
    single.__init__(target, first.in_features, first.out_features, members=len(layers),
                    generator=torch.Generator(), **settings)
    for name in ("spline_coef", "spline_scale", "base_weight"):
        setattr(target, name, nn.Parameter(stack(kind, name, [getattr(layer, name) for layer in layers])))
    target.knots = stack(kind, "knots", [layer.knots for layer in layers])
    sync = getattr(target, "_sync_grid", None)
    if sync is not None:
        sync()
    return target


def member_layer(layer: nn.Module, m: int, single: type) -> nn.Module:
    """Member ``m`` of a member-axis layer as a new single layer (copies; same dtype and device)."""
    out = single(layer.in_features, layer.out_features, generator=torch.Generator(), **layer_settings(layer, single))
    out = out.to(device=layer.spline_coef.device, dtype=layer.spline_coef.dtype)
    out.load_state_dict({key: value[m].clone() for key, value in layer.state_dict().items()})
    return out


class EnsembleKANLayer(MemberState, KANLayer):
    """M :class:`kanode.nn.KANLayer` s stacked: a ``KANLayer(..., members=M)``
    built from single layers; :meth:`member` gives one back."""

    def __init__(self, layers: Sequence[KANLayer]) -> None:
        stack_layers(layers, KANLayer, self)
        self.n_members = self.members

    def member(self, m: int) -> KANLayer:
        """Member ``m`` as a new single :class:`kanode.nn.KANLayer`."""
        return member_layer(self, self._check_member(m), KANLayer)


class EnsembleRSWAFLayer(MemberState, RSWAFLayer):
    """M :class:`kanode.nn.RSWAFLayer` s stacked: a ``RSWAFLayer(..., members=M)``
    built from single layers; :meth:`member` gives one back."""

    def __init__(self, layers: Sequence[RSWAFLayer]) -> None:
        stack_layers(layers, RSWAFLayer, self)
        self.n_members = self.members

    def member(self, m: int) -> RSWAFLayer:
        """Member ``m`` as a new single :class:`kanode.nn.RSWAFLayer`."""
        return member_layer(self, self._check_member(m), RSWAFLayer)


class EnsembleLinear(MemberState, Linear):
    """M :class:`torch.nn.Linear` s (with bias) stacked: a :class:`kanode.nn.linear.Linear`
    with ``members=M``; :meth:`member` gives one back."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        layers = check_members("Linear", layers, nn.Linear)
        check_same("Linear", layers, ("in_features", "out_features"))
        for m, layer in enumerate(layers):
            if layer.bias is None:
                raise ValueError(f"member {m} is a Linear without bias; EnsembleLinear needs biases")
        with torch.device("meta"):  # no RNG use: the parameters are replaced below
            Linear.__init__(self, layers[0].in_features, layers[0].out_features, members=len(layers))
        self.n_members = self.members
        self.weight = nn.Parameter(stack("Linear", "weight", [layer.weight for layer in layers]))
        self.bias = nn.Parameter(stack("Linear", "bias", [layer.bias for layer in layers]))

    def member(self, m: int) -> nn.Linear:
        """Member ``m`` as a new :class:`torch.nn.Linear` (copies; same dtype and device)."""
        m = self._check_member(m)
        layer = nn.Linear(self.in_features, self.out_features, device="meta")
        layer = layer.to_empty(device=self.weight.device).to(self.weight.dtype)
        layer.load_state_dict(self.member_state_dict(m))
        return layer
