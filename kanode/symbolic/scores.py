"""Edge and node scores on the states the data visits.

A neural-ODE solve calls the vector field one state at a time, so scores are
not taken per right-hand-side call: they are computed from the **layer
inputs produced by a set of samples**, normally the normalised training
states ``z = in_weight · y + in_bias`` of every observed point of the
training window (:func:`training_inputs`).

Definitions, for layer ``l`` with inputs ``x`` (n, in_l) over the samples:

* edge score ``s[o, i] = std_n φ_{o,i}(x_{n,i})``: how much the edge's output
  varies over the visited inputs (an edge that is constant on the data is a
  bias, and :func:`kanode.symbolic.prune` folds its mean into its node);
* attribution, from the outputs backwards (as pykan's ``attribute``):
  every output node has score 1; edge attribution
  ``A[o, i] = N_{l+1}[o] · s[o, i] / Σ_{i'} s[o, i']`` (its share of the
  variation that reaches node ``o``, times that node's own score) and node
  score ``N_l[i] = Σ_o A[o, i]``. Attributions are dimensionless, so one
  threshold fits every layer: ``Σ_i N_0[i]`` equals the number of outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kanode.nn import KAN

__all__ = ["Scores", "layer_inputs", "edge_scores", "attribution", "training_inputs"]

EPS = 1e-30


@dataclass(frozen=True)
class Scores:
    """``edge[l]`` (out_l, in_l) std scores, ``attribution[l]`` (out_l, in_l),
    ``node[l]`` (widths[l],) node attributions (``node[-1]`` is all ones)."""

    edge: list[Tensor]
    attribution: list[Tensor]
    node: list[Tensor]


def training_inputs(field, y: Tensor) -> Tensor:
    """Network inputs of observed states. y: (..., dim) → (n, dim) = normalised states."""
    with torch.no_grad():
        return field.normalize(y.reshape(-1, y.shape[-1]))


def layer_inputs(kan: KAN, z: Tensor) -> list[Tensor]:
    """Inputs of every layer for network inputs z (n, widths[0]): list of (n, widths[l]);
    for an ensemble KAN (:class:`kanode.ensemble.EnsembleKAN`) z (M, n, widths[0]) → (M, n, widths[l])."""
    members = getattr(kan, "n_members", None)
    inputs = [z.reshape(-1, kan.widths[0]) if members is None else z.reshape(members, -1, kan.widths[0])]
    for layer in kan.layers[:-1]:
        inputs.append(layer(inputs[-1]))
    return inputs


def edge_scores(kan: KAN, z: Tensor, differentiable: bool = False) -> list[Tensor]:
    """``std`` over the samples of every edge's output: list of (out_l, in_l) (for an ensemble
    KAN and z (M, n, in), (M, out_l, in_l): each member's over its own samples).

    With ``differentiable`` the result carries gradients (for the sparsity
    penalty); the std is then ``sqrt(var + 1e-12)`` so that its gradient is
    finite at 0.
    """
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        scores = []
        for layer, x in zip(kan.layers, layer_inputs(kan, z)):
            phi = layer.edge_activations(x)                                   # ([M,] n, out, in)
            var = phi.var(dim=-3, unbiased=False)
            scores.append(torch.sqrt(var + 1e-12) if differentiable else var.sqrt())
    return scores


def attribution(kan: KAN, z: Tensor) -> Scores:
    """Edge scores plus backward attribution (see the module docstring)."""
    edge = [s.detach() for s in edge_scores(kan, z)]
    node = [torch.ones(kan.widths[-1], dtype=edge[-1].dtype)]
    attr: list[Tensor] = []
    for s in reversed(edge):
        share = s / (s.sum(dim=1, keepdim=True) + EPS)                        # (out, in)
        a = node[0].unsqueeze(1) * share
        attr.insert(0, a)
        node.insert(0, a.sum(dim=0))
    return Scores(edge=edge, attribution=attr, node=node)
