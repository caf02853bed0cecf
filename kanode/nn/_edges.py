"""The KAN paper's regularisers, computed from a layer's edge outputs."""

from __future__ import annotations

import torch


def edge_entropy_l1(edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge outputs (batch, out, in) → (L1, entropy): ``Σ|φ|₁`` of the mean
    magnitudes (out, in) and the entropy of their normalised distribution."""
    magnitude = edges.abs().mean(dim=0)  # (out, in)
    total = magnitude.sum()
    p = magnitude / (total + 1e-12)
    return total, -(p * torch.log(p + 1e-12)).sum()
