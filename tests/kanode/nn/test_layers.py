"""Constructors, shapes, parameter counts, errors, RSWAF and regularisers."""

import pytest
import torch

from kanode.nn import KAN, MLP, RSWAF, KANLayer, RSWAFLayer
from kanode.nn._dispatch import SMALL_ELEMENTS
from tests.kanode.nn.conftest import adam_losses
from kanode.nn.dense import DenseKAN, DenseKANLayer


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("widths", [[2, 50, 2], [3, 7], [4, 8, 8, 1]])
@pytest.mark.parametrize("activation", ["tanh", "silu", "relu", "gelu", "softplus"])
def test_mlp_parameter_count_and_shape(widths, activation):
    mlp = MLP(widths, activation=activation)
    assert n_params(mlp) == sum(b * (a + 1) for a, b in zip(widths[:-1], widths[1:]))
    assert mlp(torch.randn(5, 3, widths[0])).shape == (5, 3, widths[-1])


@pytest.mark.parametrize("widths", [[2, 10, 2], [3, 4], [5, 3, 3, 2]])
@pytest.mark.parametrize("grid_size, order", [(5, 3), (20, 2), (1, 1)])
def test_kan_parameter_count(widths, grid_size, order):
    kan = KAN(widths, grid_size=grid_size, spline_order=order)
    expected = sum(a * b * (grid_size + order + 2) for a, b in zip(widths[:-1], widths[1:]))
    assert n_params(kan) == expected
    assert n_params(DenseKAN(widths, grid_size=grid_size, spline_order=order)) == expected
    rswaf = RSWAF(widths, grid_size=max(grid_size, 2))
    assert n_params(rswaf) == sum(a * b * (max(grid_size, 2) + 2) for a, b in zip(widths[:-1], widths[1:]))


def test_rswaf_is_a_kan_class_of_rswaf_layers():
    torch.manual_seed(0)
    net = RSWAF([2, 6, 3], grid_size=4)
    assert isinstance(net, RSWAF) and isinstance(net, KAN) and net.basis == "rswaf"
    assert all(type(layer) is RSWAFLayer for layer in net.layers)
    twin = KAN([2, 6, 3], basis="rswaf", grid_size=4)
    twin.load_state_dict(net.state_dict())  # same parameters and buffers as the KAN spelling
    x = torch.randn(5, 2)
    assert torch.equal(net(x), twin(x))
    with pytest.raises(TypeError, match="basis='rswaf'"):
        RSWAF([2, 3], basis="bspline")
    with pytest.raises(ValueError, match="basis='wavelet' is not known; use one of"):
        KAN([2, 3], basis="wavelet")


def test_layer_parameter_shapes():
    layer = KANLayer(3, 4, grid_size=7, spline_order=2)
    assert layer.spline_coef.shape == (4, 3, 9)
    assert layer.base_weight.shape == (4, 3) and layer.spline_scale.shape == (4, 3)
    assert layer.knots.shape == (3, 7 + 2 * 2 + 1)
    assert torch.allclose(layer.knots[:, 2], torch.tensor(-1.0)) and torch.allclose(layer.knots[:, 9], torch.tensor(1.0))


@pytest.mark.parametrize("model", [KANLayer(3, 2), KAN([3, 4, 2]), MLP([3, 5, 2]), RSWAFLayer(3, 2)], ids=str)
def test_input_shapes(model):
    assert model(torch.randn(3)).shape == (2,)
    assert model(torch.randn(7, 3)).shape == (7, 2)
    assert model(torch.randn(2, 5, 3)).shape == (2, 5, 2)
    batch = torch.randn(4, 3)
    assert torch.allclose(model(batch)[1], model(batch[1]), atol=1e-6)


@pytest.mark.parametrize("model", [KANLayer(3, 2), KAN([3, 4, 2]), MLP([3, 5, 2]), RSWAFLayer(3, 2)], ids=str)
def test_wrong_input_width_names_expected_and_got(model):
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\).*\(5, 4\)"):
        model(torch.randn(5, 4))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"grid_size": 0}, ValueError, "grid_size"),
        ({"spline_order": 0}, ValueError, "spline_order"),
        ({"grid_size": 2.5}, TypeError, "grid_size"),
        ({"grid_range": (1.0, -1.0)}, ValueError, "grid_range"),
        ({"base_activation": "sigmoid"}, ValueError, "silu"),
        ({"contraction": "fast"}, ValueError, "fused"),
        ({"grid_eps": 2.0}, ValueError, "grid_eps"),
    ],
)
def test_bad_layer_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        KANLayer(2, 3, **kwargs)


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="tanh"):
        MLP([2, 3], activation="swish")
    with pytest.raises(ValueError, match="widths"):
        KAN([2])
    with pytest.raises(ValueError, match="rswaf"):
        KAN([2, 2], basis="chebyshev")
    with pytest.raises(ValueError, match="grid_size >= 2"):
        RSWAFLayer(2, 2, grid_size=1)


def test_dense_reference_loads_layer_state(float64):
    layer = KANLayer(4, 3, grid_size=9)
    dense = DenseKANLayer(4, 3, grid_size=9)
    dense.load_state_dict(layer.state_dict())
    x = torch.randn(100, 4) * 3
    assert (layer(x) - dense(x)).abs().max() <= 1e-12


def test_rswaf_values_match_formula(float64):
    torch.manual_seed(0)
    layer = RSWAFLayer(2, 3, grid_size=5, grid_range=(-2.0, 2.0))
    x = torch.randn(20, 2) * 2
    centers = torch.linspace(-2, 2, 5)
    h = 1.0
    expected = torch.zeros(20, 3)
    for o in range(3):
        for i in range(2):
            basis = 1 - torch.tanh((x[:, i, None] - centers) / h) ** 2
            spline = basis @ layer.spline_coef[o, i]
            silu = x[:, i] * torch.sigmoid(x[:, i])
            expected[:, o] += layer.base_weight[o, i] * silu + layer.spline_scale[o, i] * spline
    assert (layer(x) - expected).abs().max() <= 1e-13
    assert torch.isfinite(layer(torch.full((1, 2), 1e4))).all()


def test_rswaf_gradcheck(float64):
    layer = RSWAFLayer(2, 2, grid_size=4)
    x = torch.randn(3, 2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, c: torch.func.functional_call(layer, {"spline_coef": c}, (v,)),
                                    (x, layer.spline_coef))


@pytest.mark.parametrize("basis", ["bspline", "rswaf"])
def test_edge_activations_sum_to_outputs(basis, float64):
    torch.manual_seed(1)
    layer = KAN([3, 2], basis=basis, grid_size=6).layers[0]
    x = torch.randn(30, 3) * 2
    edges = layer.edge_activations(x)
    assert edges.shape == (30, 2, 3)
    assert (edges.sum(-1) - layer(x)).abs().max() <= 1e-12


def test_regularization_matches_kan_paper_formula(float64):
    torch.manual_seed(2)
    kan = KAN([2, 3, 1], grid_size=5)
    x = torch.randn(50, 2)
    expected, h = 0.0, x
    for layer in kan.layers:
        magnitude = layer.edge_activations(h).abs().mean(0)  # (out, in)
        p = magnitude / magnitude.sum()
        expected = expected + 0.5 * magnitude.sum() + 3.0 * -(p * torch.log(p)).sum()
        h = layer(h)
    reg = kan.regularization(x, l1=0.5, entropy=3.0)
    assert reg.ndim == 0
    assert torch.allclose(reg, expected, atol=1e-10)
    reg.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in kan.parameters())


def test_generator_makes_init_reproducible():
    a = KANLayer(3, 4, generator=torch.Generator().manual_seed(5))
    b = KANLayer(3, 4, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_training_step_reduces_loss():
    torch.manual_seed(3)
    kan = KAN([1, 4, 1], grid_size=8)
    x = torch.linspace(-1, 1, 64).unsqueeze(-1)
    y = torch.sin(3 * x)
    losses = adam_losses(kan, x, y, steps=60)
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize("grid_size", [5, 100])
def test_dtype_conversion_keeps_uniform_grid(grid_size):
    layer = KANLayer(3, 2, grid_size=grid_size).float().double()
    assert layer.uniform and layer.knots.dtype == torch.float64
    dense = DenseKANLayer(3, 2, grid_size=grid_size).double()
    dense.load_state_dict(layer.state_dict())
    x = torch.randn(50, 3, dtype=torch.float64) * 2
    assert (layer(x) - dense(x)).abs().max() <= 1e-12


@pytest.mark.parametrize(
    "grid_size, batch, expected",
    [(5, 4096, "dense"), (20, 1024, "dense"), (20, 4096, "sparse"), (100, 16, "sparse")],
)
def test_auto_contraction_rule(grid_size, batch, expected, native_off):
    # without the fused kernel and without a graph: the eager rule
    layer = KANLayer(64, 8, grid_size=grid_size)
    assert layer.contraction_for(batch, grad=False) == expected
    assert KANLayer(64, 8, grid_size=grid_size, contraction="fused").contraction_for(batch) == expected
    assert KANLayer(64, 8, grid_size=grid_size, contraction="sparse").contraction_for(batch) == "sparse"
    # recording a graph, batch × in <= SMALL_ELEMENTS keeps the dense bases for backward
    assert layer.contraction_for(batch) == ("kept" if batch * 64 <= SMALL_ELEMENTS else expected)


@pytest.mark.parametrize("grid_size, batch", [(5, 4096), (20, 1024), (100, 16), (100, 1)])
def test_auto_takes_the_fused_kernel_where_it_is_available(grid_size, batch, fused_kernel):
    assert KANLayer(64, 8, grid_size=grid_size).contraction_for(batch) == "fused"  # CPU, uniform grid
