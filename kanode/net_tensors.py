"""A vector field's network as plain tensors with a member axis: what compiled code takes.

:func:`network_tensors` reads a single network (:mod:`kanode.nn`) or an
ensemble network (:mod:`kanode.ensemble`) into one ``(spec, tensors)`` pair
per layer, every tensor with the member axis first (M = 1 for a single
model; views, so gradients flow back to the module's parameters). The
compiled losses (:mod:`kanode.compiled`, :mod:`kanode.window`) are functions
of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

__all__ = ["KANSpec", "LinearSpec", "ActivationSpec", "network_tensors"]


@dataclass(frozen=True)
class KANSpec:
    """A B-spline KAN layer; tensors coef (M, out, in, n_coef), scale and base (M, out, in),
    knots (M, in, n_knots)."""

    order: int
    uniform: bool
    activation: str


@dataclass(frozen=True)
class LinearSpec:
    """A linear layer; tensors weight (M, out, in), bias (M, out)."""


@dataclass(frozen=True)
class ActivationSpec:
    """A parameter-free elementwise activation module; no tensors."""

    module: nn.Module


def network_tensors(net: nn.Module) -> list[tuple[Any, list[Tensor]]] | None:
    """The network as (spec, tensors) per layer, tensors with a member axis first, or None
    when it is not a B-spline KAN or an MLP."""
    from kanode.ensemble import EnsembleKANLayer
    from kanode.nn import KAN, MLP, KANLayer

    stacked = hasattr(net, "n_members") or getattr(net, "members", None) is not None  # parameters (M, ...)
    lift = (lambda tensor: tensor) if stacked else (lambda tensor: tensor.unsqueeze(0))
    if type(net).__name__ == "EnsembleKAN" or isinstance(net, KAN):
        out = []
        for layer in net.layers:
            if not isinstance(layer, (KANLayer, EnsembleKANLayer)):
                return None
            spec = KANSpec(layer.spline_order, bool(layer.uniform), layer.base_activation)
            out.append((spec, [lift(layer.spline_coef), lift(layer.spline_scale), lift(layer.base_weight),
                               lift(layer.knots)]))
        return out
    if type(net).__name__ == "EnsembleMLP" or isinstance(net, MLP):
        out = []
        for module in net.net:
            if isinstance(module, nn.Linear):  # kanode.nn.linear.Linear, with or without a member axis
                out.append((LinearSpec(), [lift(module.weight), lift(module.bias)]))
            else:
                out.append((ActivationSpec(module), []))
        return out
    return None
