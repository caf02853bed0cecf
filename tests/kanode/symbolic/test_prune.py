"""Scores, attribution and pruning."""

from __future__ import annotations

import pytest
import torch

from kanode.nn import KAN
from kanode.symbolic import PRUNED, PruneWarning, attribution, connectivity, edge_scores, prune


def _kan_with_dead_parts() -> KAN:
    """[2, 6, 2]: hidden nodes 3..5 have constant inputs; edge (out 1, hidden 0) is constant."""
    torch.manual_seed(0)
    kan = KAN([2, 6, 2], grid_size=5).double()
    with torch.no_grad():
        first, second = kan.layers
        first.base_weight[3:] = 0.0
        first.spline_coef[3:] = 0.3          # constant splines (partition of unity): φ ≡ 0.3
        second.base_weight[1, 0] = 0.0
        second.spline_coef[1, 0] = -0.7      # a constant edge
    return kan


def test_scores_are_zero_exactly_where_edges_are_constant() -> None:
    kan = _kan_with_dead_parts()
    z = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    first, second = edge_scores(kan, z)
    assert first[3:].max() < 1e-12 and first[:3].min() > 1e-3
    assert second[1, 0] < 1e-12
    scores = attribution(kan, z)
    assert torch.allclose(scores.node[-1], torch.ones(2, dtype=torch.float64))
    assert scores.node[0].sum().item() == pytest.approx(2.0)          # one per output node
    assert scores.node[1][3:].max() < 1e-9


def test_prune_shrinks_widths_and_keeps_outputs_where_removed_scores_are_zero() -> None:
    kan = _kan_with_dead_parts()
    z = torch.rand(300, 2, dtype=torch.float64) * 2 - 1
    small = prune(kan, z, edge_threshold=1e-9, node_threshold=1e-9)
    assert small.widths == [2, 3, 2]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in kan.parameters())
    with torch.no_grad():
        assert torch.allclose(small(z), kan(z), atol=1e-12, rtol=0)
        fresh = torch.rand(50, 2, dtype=torch.float64) * 2 - 1
        assert torch.allclose(small(fresh), kan(fresh), atol=1e-12, rtol=0)
    second = small.layers[1]
    assert second.mode[1, 0] == PRUNED
    # pruned edges are exactly zero and frozen: no gradient reaches their parameters
    small(z).pow(2).sum().backward()
    assert second.spline.spline_coef.grad[1, 0].abs().max() == 0
    assert second.spline.base_weight.grad[1, 0] == 0
    assert connectivity(small).all()


def test_prune_says_so_when_an_input_is_cut_off() -> None:
    torch.manual_seed(1)
    kan = KAN([2, 3, 2], grid_size=3).double()
    with torch.no_grad():
        kan.layers[0].base_weight[:, 1] = 0.0
        kan.layers[0].spline_coef[:, 1] = 0.0          # input 1 reaches nothing
    z = torch.rand(100, 2, dtype=torch.float64) * 2 - 1
    with pytest.warns(PruneWarning, match="input 1"):
        small = prune(kan, z, edge_threshold=1e-6, node_threshold=1e-6)
    assert not connectivity(small)[1].any()


def test_prune_rejects_bad_thresholds() -> None:
    kan = KAN([2, 3, 2]).double()
    with pytest.raises(ValueError, match="thresholds"):
        prune(kan, torch.zeros(5, 2, dtype=torch.float64), edge_threshold=1.5)


def test_prune_refuses_to_empty_a_hidden_layer() -> None:
    from kanode.symbolic import PruneError

    kan = KAN([2, 3, 2]).double()
    z = torch.rand(30, 2, dtype=torch.float64) * 2 - 1
    with pytest.raises(PruneError, match="nothing is above the pruning thresholds"):
        prune(kan, z, edge_threshold=0.99, node_threshold=0.99)
