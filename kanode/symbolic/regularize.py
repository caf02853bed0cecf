"""Sparsity penalty of the KAN paper on the edge scores, as a Trainer regulariser.

``penalty = λ · Σ_l (l1 · Σ_{o,i} s_l[o, i] + entropy · S_l) + coef_l1 · Σ_l mean |spline_coef_l|``
with ``s_l`` the std edge scores of :mod:`kanode.symbolic.scores` over a
fixed sample of training states and ``S_l = −Σ p log p``, ``p = s_l / Σ s_l``,
the entropy of layer ``l``'s score distribution (low when few edges carry
the layer). It is evaluated once per objective evaluation on that sample,
never inside the ODE solve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from kanode.config import ConfigError
from kanode.nn import KAN
from kanode.nn._edges import score_l1_entropy
from kanode.ode import VectorField

from .scores import edge_scores, training_inputs

__all__ = ["sparsity_penalty", "coefficient_l1", "sparsity_regularizer", "member_sparsity_regularizer",
           "score_l1"]


def sparsity_penalty(kan: KAN, z: Tensor, l1: float = 1.0, entropy: float = 2.0) -> Tensor:
    """``Σ_l (l1 · Σ s_l + entropy · S_l)`` for network inputs z (n, widths[0]); a scalar.
    For an ensemble KAN (:class:`kanode.ensemble.EnsembleKAN`) and z (M, n, widths[0]): (M,),
    member m's its single KAN's penalty on z[m]."""
    members = getattr(kan, "n_members", None)
    total = None
    for s in edge_scores(kan, z, differentiable=True):
        if members is None:
            mass, ent = score_l1_entropy(s)
            term = l1 * mass + entropy * ent
        else:
            term = torch.stack([l1 * mass + entropy * ent for mass, ent in map(score_l1_entropy, s)])
        total = term if total is None else total + term
    assert total is not None, "a KAN has at least one layer"
    return total


def score_l1(kan: KAN, z: Tensor) -> float:
    """``Σ_l Σ s_l`` (no gradient): the quantity the L1 term lowers."""
    return float(sum(s.sum() for s in edge_scores(kan, z)))


def coefficient_l1(kan: KAN) -> Tensor:
    """``Σ_l mean |spline_coef_l|`` over the B-spline layers (wrapped ones included); a scalar,
    or (M,) for an ensemble KAN (each member's own mean)."""
    members = getattr(kan, "n_members", None)
    total = None
    for layer in kan.layers:
        coef = getattr(layer, "spline_coef", None)
        if coef is None and hasattr(layer, "spline"):
            coef = layer.spline.spline_coef
        if coef is not None:
            term = coef.abs().mean() if members is None else coef.abs().reshape(members, -1).mean(dim=1)
            total = term if total is None else total + term
    if total is None:
        raise TypeError("coefficient_l1 needs B-spline KAN layers")
    return total


def sparsity_regularizer(field: VectorField, y: Tensor, weight: float, l1: float = 1.0,
                         entropy: float = 2.0, coef_l1: float = 0.0, max_samples: int = 512,
                         seed: int = 0) -> Callable[[nn.Module], Tensor]:
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
    return _regularizer(_samples(field, y, max_samples, seed), weight, l1, entropy, coef_l1)


def member_sparsity_regularizer(fields: Sequence[VectorField], states: Sequence[Tensor], weight: float,
                                l1: float = 1.0, entropy: float = 2.0, coef_l1: float = 0.0,
                                seeds: Sequence[int] = (0,),
                                max_samples: int = 512) -> Callable[[nn.Module], Tensor]:
    """:func:`sparsity_regularizer` of every member of an ensemble: the regulariser of the
    ensemble of ``fields`` (:class:`kanode.ensemble.EnsembleVectorField`), returning (M,),
    member m's penalty that of its single fit (its own states ``states[m]`` (N, dim),
    normalised by ``fields[m]``, subset drawn with ``seeds[m]``)."""
    if not all(isinstance(f.net, KAN) for f in fields):
        raise TypeError("the sparsity penalty needs KAN vector fields")
    z = [_samples(f, y, max_samples, s) for f, y, s in zip(fields, states, seeds, strict=True)]
    if len({x.shape for x in z}) != 1:
        raise ConfigError("the members observe different numbers of whole training states "
                          f"({sorted({x.shape[0] for x in z})}), so their sparsity penalties cannot "
                          "share an ensemble; fit them separately")
    return _regularizer(torch.stack(z), weight, l1, entropy, coef_l1)


def _samples(field: VectorField, y: Tensor, max_samples: int, seed: int) -> Tensor:
    """The network inputs of at most ``max_samples`` of the states y (a fixed subset): (n, dim)."""
    z = training_inputs(field, y)
    if z.shape[0] > max_samples:
        pick = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
        z = z[pick]
    return z


def _regularizer(z: Tensor, weight: float, l1: float, entropy: float,
                 coef_l1: float) -> Callable[[nn.Module], Tensor]:
    """The penalty of a field's network on the fixed inputs z ((n, dim), or (M, n, dim))."""
    def regularizer(f: nn.Module) -> Tensor:
        penalty = (weight * sparsity_penalty(f.net, z, l1=l1, entropy=entropy) if weight
                   else z.new_zeros(z.shape[:-2]))
        if coef_l1:
            penalty = penalty + coef_l1 * coefficient_l1(f.net)
        return penalty

    return regularizer
