"""Prune a KAN to the edges and hidden nodes the data needs.

``prune(kan, z, edge_threshold, node_threshold)`` scores the network on the
samples ``z`` (attribution of :mod:`kanode.symbolic.scores`) and returns a
new, genuinely smaller :class:`~kanode.nn.KAN` of
:class:`~kanode.symbolic.symbolic_layer.SymbolicKANLayer` s:

* an edge with attribution below ``edge_threshold`` is removed: it becomes
  ``PRUNED`` (exactly 0, out of every gradient) and its mean over the
  samples is added to its output node's ``bias``, so an edge that is
  constant on the data (score 0) is removed without changing the network
  there;
* a hidden node whose score is below ``node_threshold``, or that has no
  surviving incoming or no surviving outgoing edge, is deleted with all its
  edges (the means of its outgoing edges go to the next layer's biases), so
  the hidden widths shrink.

It never silently cuts an input off from every output, or an output from
every input: a :class:`PruneWarning` names each such input or output; and
it raises :class:`PruneError` rather than delete every node of a hidden layer.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from kanode.nn import KAN, KANLayer

from .scores import attribution, layer_inputs
from .symbolic_layer import PRUNED, SymbolicKANLayer, as_mixed, assemble

__all__ = ["prune", "PruneWarning", "PruneError", "connectivity"]


class PruneWarning(UserWarning):
    """Pruning disconnected an input from every output (or an output from every input)."""


class PruneError(ValueError):
    """Nothing is above the thresholds: a hidden layer would lose every node."""


def connectivity(kan: KAN) -> Tensor:
    """(widths[0], widths[-1]) bool: whether a path of live edges joins input i to output o."""
    reach = torch.eye(kan.widths[0], dtype=torch.bool)
    for layer in kan.layers:
        live = (layer.mode != PRUNED) if isinstance(layer, SymbolicKANLayer) else \
            torch.ones(layer.out_features, layer.in_features, dtype=torch.bool)
        reach = (reach.double() @ live.T.double()) > 0                         # (in0, out_l)
    return reach


@torch.no_grad()
def _sub_layer(layer: SymbolicKANLayer, rows: Tensor, cols: Tensor) -> SymbolicKANLayer:
    """The sub-layer of outputs ``rows`` and inputs ``cols``."""
    old = layer.spline
    new = KANLayer(len(cols), len(rows), grid_size=old.grid_size, spline_order=old.spline_order,
                   base_activation=old.base_activation, grid_eps=old.grid_eps,
                   contraction=old.contraction).to(dtype=old.spline_coef.dtype, device=old.spline_coef.device)
    new.spline_coef.copy_(old.spline_coef[rows][:, cols])
    new.base_weight.copy_(old.base_weight[rows][:, cols])
    new.spline_scale.copy_(old.spline_scale[rows][:, cols])
    new.knots = old.knots[cols].clone()
    new._sync_grid()
    out = SymbolicKANLayer(new)
    out.mode.copy_(layer.mode[rows][:, cols])
    out.function.copy_(layer.function[rows][:, cols])
    out.sym_params.copy_(layer.sym_params[rows][:, cols])
    out.bias.copy_(layer.bias[rows])
    return out


@torch.no_grad()
def prune(kan: KAN, z: Tensor, edge_threshold: float = 0.02, node_threshold: float = 0.02) -> KAN:
    """A smaller copy of ``kan`` without the edges and hidden nodes the samples z (n, widths[0]) do not use.

    Thresholds apply to the attributions of :func:`kanode.symbolic.attribution`
    (dimensionless; each output node has score 1). See the module docstring.
    """
    if not (0 <= edge_threshold < 1 and 0 <= node_threshold < 1):
        raise ValueError(f"thresholds must lie in [0, 1), got edge {edge_threshold}, node {node_threshold}")
    mixed = as_mixed(kan)
    scores = attribution(mixed, z)
    inputs = layer_inputs(mixed, z)
    n_layers = len(mixed.layers)
    live = [(a >= edge_threshold) & (layer.mode != PRUNED)
            for a, layer in zip(scores.attribution, mixed.layers)]
    keep = [torch.ones(w, dtype=torch.bool) for w in mixed.widths]
    for _ in range(len(mixed.widths)):   # deleting a node can strand its neighbours: iterate
        for l in range(1, n_layers):
            keep[l] = (scores.node[l] >= node_threshold) & live[l - 1].any(dim=1) & live[l].any(dim=0) & keep[l]
        for l in range(n_layers):
            live[l] = live[l] & keep[l + 1].unsqueeze(1) & keep[l].unsqueeze(0)
    empty = [l for l in range(1, n_layers) if not keep[l].any()]
    if empty:
        raise PruneError(f"nothing is above the pruning thresholds: hidden layer {empty[0]} would lose "
                         f"every node (edge_threshold={edge_threshold}, node_threshold={node_threshold}); "
                         "lower them")
    # fold the means of removed edges into the biases of the nodes that stay
    for l, layer in enumerate(mixed.layers):
        means = layer.edge_activations(inputs[l]).mean(dim=0)                # (out, in)
        removed = (~live[l]) & (layer.mode != PRUNED) & keep[l + 1].unsqueeze(1)
        layer.bias += (means * removed).sum(dim=1)
        layer.mode[~live[l]] = PRUNED
        for name in ("spline_coef", "base_weight", "spline_scale"):
            param = getattr(layer.spline, name)
            mask = live[l] if param.ndim == 2 else live[l].unsqueeze(-1)
            param.mul_(mask.to(param.dtype))
        layer.sym_params[~live[l]] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=layer.sym_params.dtype)
    # a deleted hidden node's outgoing means reach the next layer only through its bias, done above
    layers = [_sub_layer(layer, keep[l + 1].nonzero().flatten(), keep[l].nonzero().flatten())
              for l, layer in enumerate(mixed.layers)]
    pruned = assemble(layers)
    _warn_disconnected(pruned)
    return pruned


def _warn_disconnected(kan: KAN) -> None:
    reach = connectivity(kan)
    for i in (~reach.any(dim=1)).nonzero().flatten().tolist():
        warnings.warn(f"pruning removed every path from input {i} to the outputs; the pruned "
                      "model no longer depends on it (lower edge_threshold/node_threshold to keep it)",
                      PruneWarning, stacklevel=3)
    for o in (~reach.any(dim=0)).nonzero().flatten().tolist():
        warnings.warn(f"pruning removed every path to output {o}; it is now a constant "
                      "(lower edge_threshold/node_threshold to keep it)", PruneWarning, stacklevel=3)
