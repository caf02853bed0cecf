"""The KAN paper's regularisers, computed from a layer's edge outputs."""

from __future__ import annotations

import torch


def score_l1_entropy(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge scores (out, in), non-negative → (L1, entropy): ``Σ s`` and the entropy
    of the normalised distribution ``s / Σ s`` (low when few edges carry the mass)."""
    total = scores.sum()
    p = scores / (total + 1e-12)
    return total, -(p * torch.log(p + 1e-12)).sum()


def edge_entropy_l1(edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge outputs ([M,] batch, out, in) → (L1, entropy), each ([M],), of their mean
    magnitudes ([M,] out, in) (per member: :func:`score_l1_entropy`)."""
    scores = edges.abs().mean(dim=-3)
    if scores.ndim == 2:
        return score_l1_entropy(scores)
    total = scores.sum(dim=(-2, -1))
    p = scores / (total[:, None, None] + 1e-12)
    return total, -(p * torch.log(p + 1e-12)).sum(dim=(-2, -1))
