"""Sparsity penalty of the KAN paper on the edge scores, as a Trainer regulariser.

``penalty = λ · Σ_l (l1 · Σ_{o,i} s_l[o, i] + entropy · S_l) + coef_l1 · Σ_l mean |spline_coef_l|``
with ``s_l`` the std edge scores of :mod:`kanode.symbolic.scores` over a
fixed sample of training states and ``S_l = −Σ p log p``, ``p = s_l / Σ s_l``,
the entropy of layer ``l``'s score distribution (low when few edges carry
the layer). It is evaluated once per objective evaluation on that sample,
never inside the ODE solve.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from kanode.nn import KAN
from kanode.nn._edges import score_l1_entropy
from kanode.ode import VectorField

from .scores import edge_scores, training_inputs

__all__ = ["sparsity_penalty", "coefficient_l1", "sparsity_regularizer", "score_l1"]


def sparsity_penalty(kan: KAN, z: Tensor, l1: float = 1.0, entropy: float = 2.0) -> Tensor:
    """``Σ_l (l1 · Σ s_l + entropy · S_l)`` for network inputs z (n, widths[0]); a scalar."""
    total = z.new_zeros(())
    for s in edge_scores(kan, z, differentiable=True):
        mass, ent = score_l1_entropy(s)
        total = total + (l1 * mass + entropy * ent)
    return total


def score_l1(kan: KAN, z: Tensor) -> float:
    """``Σ_l Σ s_l`` (no gradient): the quantity the L1 term lowers."""
    return float(sum(s.sum() for s in edge_scores(kan, z)))


def coefficient_l1(kan: KAN) -> Tensor:
    """``Σ_l mean |spline_coef_l|`` over the B-spline layers (wrapped ones included)."""
    total = None
    for layer in kan.layers:
        coef = getattr(layer, "spline_coef", None)
        if coef is None and hasattr(layer, "spline"):
            coef = layer.spline.spline_coef
        if coef is not None:
            term = coef.abs().mean()
            total = term if total is None else total + term
    if total is None:
        raise TypeError("coefficient_l1 needs B-spline KAN layers")
    return total


def sparsity_regularizer(field: VectorField, y: Tensor, weight: float, l1: float = 1.0,
                         entropy: float = 2.0, coef_l1: float = 0.0, max_samples: int = 512,
                         seed: int = 0) -> Callable[[VectorField], Tensor]:
    """A ``Trainer`` regulariser: ``weight · sparsity_penalty + coef_l1 · coefficient_l1``.

    Parameters
    ----------
    field : the vector field whose normalisation maps ``y`` to network inputs.
    y : (..., dim) training states; at most ``max_samples`` of them (a fixed
        random subset drawn with ``seed``) are used, the same at every call,
        so the L-BFGS objective stays deterministic.
    """
    if not isinstance(field.net, KAN):
        raise TypeError("the sparsity penalty needs a KAN vector field")
    z = training_inputs(field, y)
    if z.shape[0] > max_samples:
        pick = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
        z = z[pick]

    def regularizer(f: VectorField) -> Tensor:
        penalty = weight * sparsity_penalty(f.net, z, l1=l1, entropy=entropy) if weight else z.new_zeros(())
        if coef_l1:
            penalty = penalty + coef_l1 * coefficient_l1(f.net)
        return penalty

    return regularizer
