"""Local B-spline values against the dense Cox–de Boor oracle."""

import pytest
import torch

from kanode.nn import KANLayer
from kanode.nn.bspline import is_uniform, power_matrix
from tests.kanode.nn.conftest import nonuniform_state
from kanode.nn.dense import DenseKANLayer, cox_de_boor

pytestmark = pytest.mark.usefixtures("float64")


def probe_points(layer, n_random=200, seed=0):
    """Knots, range ends, random points inside and well outside: (n, in)."""
    gen = torch.Generator().manual_seed(seed)
    knots = layer.knots  # (in, n_knots)
    order, grid_size = layer.spline_order, layer.grid_size
    lo, hi = knots[:, order], knots[:, grid_size + order]
    inside = lo + (hi - lo) * torch.rand(n_random, knots.shape[0], generator=gen)
    interior = knots[:, order : grid_size + order + 1].T  # exactly on the knots
    outside = torch.stack([lo - 10 * (hi - lo), hi + 10 * (hi - lo), lo - 1e-9, hi + 1e-9])
    return torch.cat([interior, inside, outside])


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("grid_size", [1, 4, 11])
def test_bases_match_cox_de_boor(order, uniform, grid_size):
    layer = KANLayer(3, 2, grid_size=grid_size, spline_order=order, grid_range=(-1.5, 2.0))
    if not uniform:
        layer.load_state_dict(nonuniform_state(layer))
    assert layer.uniform == uniform
    x = probe_points(layer)
    lo, hi = layer.knots[:, order], layer.knots[:, grid_size + order]
    xc = torch.minimum(torch.maximum(x, lo), hi)
    values, derivs = cox_de_boor(xc, layer.knots, order)
    expected = values + derivs * (x - xc).unsqueeze(-1)
    assert (layer.spline_bases(x) - expected).abs().max() <= 1e-12


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("uniform", [True, False])
def test_partition_of_unity(order, uniform):
    layer = KANLayer(4, 1, grid_size=7, spline_order=order)
    if not uniform:
        layer.load_state_dict(nonuniform_state(layer, seed=3))
    x = probe_points(layer)
    inside = (x >= -1) & (x <= 1)
    sums = layer.spline_bases(x).sum(-1)
    assert (sums[inside] - 1).abs().max() <= 1e-13


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("mode", ["fused", "dense", "sparse"])
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("n_random", [200, 2000])  # small and large batches take different paths
def test_layer_matches_dense_reference(order, mode, uniform, n_random):
    torch.manual_seed(1)
    layer = KANLayer(3, 5, grid_size=6, spline_order=order, contraction=mode)
    if not uniform:
        layer.load_state_dict(nonuniform_state(layer))
    dense = DenseKANLayer(3, 5, grid_size=6, spline_order=order)
    dense.load_state_dict(layer.state_dict())
    x = probe_points(layer, n_random=n_random)
    assert (layer(x) - dense(x)).abs().max() <= 1e-12


def test_power_matrix_is_cubic_cardinal_spline():
    m, dm = power_matrix(3, torch.float64, "cpu")
    u = torch.tensor(0.3, dtype=torch.float64)
    pieces = torch.stack([(1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3]) / 6
    powers = u ** torch.arange(4)
    assert torch.allclose(powers @ m, pieces, atol=1e-15)
    assert torch.allclose(powers[:3] @ dm, torch.func.jacrev(lambda v: (v ** torch.arange(4)) @ m)(u), atol=1e-14)


def test_is_uniform():
    knots = torch.linspace(-1, 1, 12).expand(3, -1)
    assert is_uniform(knots)
    bent = knots.clone()
    bent[1, 4] += 0.01
    assert not is_uniform(bent)


@pytest.mark.parametrize("mode", ["fused", "dense", "sparse"])
def test_float32_agrees_with_float64(mode):
    torch.manual_seed(2)
    layer = KANLayer(4, 3, grid_size=8, contraction=mode)
    x = torch.randn(64, 4) * 2
    y64 = layer(x)
    y32 = layer.float()(x.float())
    assert y32.dtype == torch.float32
    assert (y32.double() - y64).abs().max() <= 1e-5 * (1 + y64.abs().max())


@pytest.mark.parametrize("uniform", [True, False])
def test_out_of_range_finite_continuous_linear(uniform):
    torch.manual_seed(3)
    layer = KANLayer(2, 3, grid_size=5)
    if not uniform:
        layer.load_state_dict(nonuniform_state(layer))
    big = torch.linspace(-10, 10, 4001).unsqueeze(-1).expand(-1, 2)
    y = layer(big)
    assert torch.isfinite(y).all()
    step = (y[1:] - y[:-1]).abs().max()
    assert step <= 0.05  # no jumps on a 0.005 step
    # the spline part is exactly linear beyond the end: second differences vanish
    far = torch.tensor([[3.0, 3.0], [5.0, 5.0], [7.0, 7.0]])
    spline = layer.edge_activations(far) - layer.base_weight * torch.nn.functional.silu(far).unsqueeze(1)
    assert (spline[0] - 2 * spline[1] + spline[2]).abs().max() <= 1e-12
    # and C¹ across the range end
    eps = 1e-6
    at = lambda v: layer.edge_activations(torch.full((1, 2), v))  # noqa: E731
    left_slope = (at(1.0) - at(1.0 - eps)) / eps
    right_slope = (at(1.0 + eps) - at(1.0)) / eps
    assert (left_slope - right_slope).abs().max() <= 1e-4
