"""Parameter formulas against sum(p.numel()) of every model kanode builds."""

from __future__ import annotations

import pytest
import torch

from kanode.analysis import config_params, kan_layer_params, kan_params, linear_params, mlp_params
from kanode.config import FitConfig
from kanode.data import load_data
from kanode.fit import build_field
from kanode.nn import KAN, MLP, RSWAF, DenseKANLayer, KANLayer


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_layer_formulas_by_hand():
    assert kan_layer_params(2, 10, grid_size=5, spline_order=3) == 200  # 2·10·(5 + 3 + 2)
    assert linear_params(2, 80) == 240
    assert kan_params([2, 10, 2], 5, 3) == 400 and mlp_params([2, 80, 2]) == 402  # Figure 2, 2-D
    assert kan_params([28, 8, 28], 5, 3) == 4480 and mlp_params([28, 78, 28]) == 4474  # Pleiades


@pytest.mark.parametrize("grid_size,order", [(3, 1), (5, 3), (20, 2)])
@pytest.mark.parametrize("in_out", [(1, 1), (3, 7), (28, 8)])
def test_layer_formulas_match_numel(grid_size, order, in_out):
    i, o = in_out
    assert numel(KANLayer(i, o, grid_size, order)) == kan_layer_params(i, o, grid_size, order)
    assert numel(DenseKANLayer(i, o, grid_size, order)) == kan_layer_params(i, o, grid_size, order)
    assert numel(torch.nn.Linear(i, o)) == linear_params(i, o)


@pytest.mark.parametrize("widths", [[2, 10, 2], [3, 5, 4, 3], [28, 8, 28]])
def test_network_formulas_match_numel(widths):
    assert numel(KAN(widths, grid_size=7, spline_order=2)) == kan_params(widths, 7, 2)
    assert numel(RSWAF(widths, grid_size=6)) == kan_params(widths, 6, basis="rswaf")
    assert numel(MLP(widths)) == mlp_params(widths)


@pytest.mark.parametrize("time_input", [False, True])
@pytest.mark.parametrize("model,widths", [("kan", []), ("kan", [2, 4, 6, 2]), ("rswaf", []), ("mlp", []),
                                          ("mlp", [2, 30, 30, 2])])
def test_vector_field_of_every_config(model, widths, time_input):
    widths = [widths[0] + int(time_input), *widths[1:]] if widths else []
    config = FitConfig(model=model, widths=widths, time_input=time_input, grid_size=4, train_fraction=0.1)
    field = build_field(config, load_data(config))
    assert numel(field) == config_params(config, 2)
    assert numel(field) > 0
