"""Eq. 1, the dense layer's closed form and the measured saved elements."""

from __future__ import annotations

import pytest
import torch

from kanode.analysis import (cost_row, cost_summary, dense_saved_elements, eq1_extra_elements, fc_saved_elements,
                             kanode_saved_elements, saved_elements)
from kanode.analysis.cost import COST_COLUMNS, LinearSiLU
from kanode.nn import DenseKANLayer, KANLayer


def test_eq1_by_hand():
    # I[2(G+S)B + (G+S+1)O − 1] − OB with I=2, O=3, B=4, G=5, S=3: 2·(64 + 27 − 1) − 12
    assert eq1_extra_elements(2, 3, 4, 5, 3) == 168


def test_closed_form_by_hand():
    # I=O=B=1, G=1, S=1: n=4 knots, C=2; 2 + 2 + 2 + 2·2 (denominators) + 3 (B_0) = 13
    assert dense_saved_elements(1, 1, 1, 1, 1) == 13
    assert dense_saved_elements(1, 1, 1, 1, 1, extrapolate=True) == 13 + 1 + 2


@pytest.mark.parametrize("grid", [3, 5, 100])
def test_cubic_closed_form(grid):
    b, i, o = 7, 3, 5
    assert dense_saved_elements(i, o, b, grid, 3) == b * i * (8 * grid + 34) + o * i * (grid + 3) + 6 * i * (grid + 4)


@pytest.mark.parametrize("extrapolate", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 2, 3, 4), (64, 8, 4, 10), (3, 1, 16, 50)])
def test_dense_layer_saves_exactly_the_closed_form(shape, order, extrapolate):
    batch, i, o, grid = shape
    torch.manual_seed(0)
    layer = DenseKANLayer(i, o, grid, order, extrapolate=extrapolate)
    x = (torch.rand(batch, i) * 2.4 - 1.2).requires_grad_()  # inside and outside the grid
    assert saved_elements(layer, x) == dense_saved_elements(i, o, batch, grid, order, extrapolate)


@pytest.mark.parametrize("shape", [(1, 2, 2), (256, 8, 16), (4096, 3, 5)])
def test_linear_silu_saves_input_and_preactivation(shape):
    batch, i, o = shape
    x = torch.randn(batch, i, requires_grad=True)
    assert saved_elements(LinearSiLU(i, o), x) == fc_saved_elements(i, o, batch)


@pytest.mark.parametrize("batch", [64, 2048])
def test_kanode_saved_elements_do_not_grow_with_grid(batch):
    from kanode.nn import _native

    counts = []
    for grid in (3, 10, 50, 100):
        x = torch.rand(batch, 8, requires_grad=True)
        counts.append(saved_elements(KANLayer(8, 8, grid), x))
    # the fused CPU path keeps x only; the PyTorch path x and its cell index
    assert counts == [kanode_saved_elements(8, batch, fused=_native.available())] * 4


def test_cost_rows_and_summary():
    rows = [cost_row(8, 8, b, g) for b in (1, 512) for g in (3, 100)]
    assert all(tuple(r) == COST_COLUMNS for r in rows)
    big = rows[-1]
    assert big["saved_dense_elements"] == dense_saved_elements(8, 8, 512, 100, 3)
    assert big["saved_kanode_elements"] * 100 <= big["saved_dense_elements"]
    assert big["params_kan"] == 8 * 8 * 105 and big["params_fc"] == 72
    summary = cost_summary(rows)
    assert summary["closed_form_mismatches"] == 0 and summary["kanode_grows_with_g"] == 0
    measured = big["params_kan"] + big["saved_dense_elements"] - big["params_fc"] - big["saved_fc_elements"]
    assert summary["eq1_rel_error_largest"] == pytest.approx((big["eq1_extra_elements"] - measured) / measured)
    assert summary["eq1_rel_error_largest"] < -0.5  # Eq. 1 misses most of what the recursion keeps
