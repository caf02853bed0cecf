"""First and second derivatives, torch.func, and saved memory of KANLayer."""

import pytest
import torch
from torch.func import functional_call, jacrev, vmap

from kanode.nn import KAN, KANLayer
from tests.kanode.nn.conftest import nonuniform_state
from kanode.nn.dense import DenseKAN, DenseKANLayer
from kanode.analysis.saved import saved_storages

pytestmark = pytest.mark.usefixtures("float64")
PARAMS = ("spline_coef", "spline_scale", "base_weight")


def layer_fn(layer):
    def f(x, *params):
        names = PARAMS if len(params) == 3 else PARAMS[-len(params) :] if params else ()
        return functional_call(layer, dict(zip(names, params)), (x,))

    return f


def make_layer(order, mode, uniform, activation="silu"):
    torch.manual_seed(order)
    layer = KANLayer(3, 2, grid_size=4, spline_order=order, contraction=mode, base_activation=activation)
    if not uniform:
        layer.load_state_dict(nonuniform_state(layer))
    return layer


def inputs(layer):
    # inside, outside on both sides; away from knots so finite differences are smooth
    x = torch.tensor([[0.13, -0.71, 0.52], [1.7, -2.3, 0.05], [-0.33, 0.91, -1.4]])
    return (x.requires_grad_(), *(getattr(layer, p) for p in PARAMS))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("mode", ["fused", "dense", "sparse", "auto"])  # auto: "small" path here
@pytest.mark.parametrize("uniform", [True, False])
def test_gradcheck(order, mode, uniform):
    layer = make_layer(order, mode, uniform)
    assert torch.autograd.gradcheck(layer_fn(layer), inputs(layer))


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("mode", ["fused", "dense", "sparse"])
@pytest.mark.parametrize("uniform", [True, False])
def test_gradgradcheck(order, mode, uniform):
    layer = make_layer(order, mode, uniform)
    # fast mode: random projections of the full second-derivative check
    assert torch.autograd.gradgradcheck(layer_fn(layer), inputs(layer), fast_mode=True)


def test_gradgradcheck_full():
    layer = make_layer(3, "sparse", False)
    assert torch.autograd.gradgradcheck(layer_fn(layer), inputs(layer))


@pytest.mark.parametrize("activation", ["silu", "tanh", "gelu", "softplus", "identity"])
def test_gradgradcheck_base_activations(activation):
    layer = make_layer(3, "dense", True, activation)
    assert torch.autograd.gradgradcheck(layer_fn(layer), inputs(layer)[:1] + inputs(layer)[3:])


@pytest.mark.parametrize("mode", ["fused", "dense", "sparse"])  # fused: eager under transforms
def test_jacrev_matches_autograd_and_dense(mode):
    torch.manual_seed(0)
    kan = KAN([2, 5, 3], grid_size=6, contraction=mode)
    dense = DenseKAN([2, 5, 3], grid_size=6)
    dense.load_state_dict(kan.state_dict())
    x = torch.tensor([0.3, -1.7])
    jac = jacrev(kan)(x)
    expected = torch.autograd.functional.jacobian(dense, x)
    assert jac.shape == (3, 2)
    assert (jac - expected).abs().max() <= 1e-12
    # per-sample Jacobians of a batch (vector-field Jacobians)
    xs = torch.randn(7, 2) * 1.5
    jacs = vmap(jacrev(kan))(xs)
    for n in range(7):
        assert (jacs[n] - torch.autograd.functional.jacobian(dense, xs[n])).abs().max() <= 1e-12


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_vmap_matches_batch(mode):
    torch.manual_seed(0)
    kan = KAN([3, 4, 2], grid_size=5, contraction=mode)
    xs = torch.randn(5, 6, 3)
    assert (vmap(kan)(xs) - kan(xs)).abs().max() <= 1e-13


def test_hessian_vector_product_matches_dense():
    torch.manual_seed(0)
    kan = KAN([2, 4, 1], grid_size=5)
    dense = DenseKAN([2, 4, 1], grid_size=5)
    dense.load_state_dict(kan.state_dict())
    x = torch.randn(16, 2)
    vec = [torch.randn_like(p) for p in kan.parameters()]

    def hvp(model):
        loss = model(x).pow(2).mean()
        grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vec))
        return torch.autograd.grad(dot, list(model.parameters()))

    for a, b in zip(hvp(kan), hvp(dense)):
        assert (a - b).abs().max() <= 1e-12


@pytest.mark.parametrize("mode", ["auto", "fused", "dense", "sparse"])
@pytest.mark.parametrize("batch", [20, 3000])  # auto: "small" path and the fused kernel
def test_first_and_second_derivatives_match_dense(mode, batch):
    torch.manual_seed(4)
    layer = KANLayer(2, 3, grid_size=7, contraction=mode)
    dense = DenseKANLayer(2, 3, grid_size=7)
    dense.load_state_dict(layer.state_dict())
    x = (torch.randn(batch, 2) * 1.5).requires_grad_()

    def grads(model, create_graph):
        loss = model(x).pow(2).sum()
        return torch.autograd.grad(loss, [x, *model.parameters()], create_graph=create_graph)

    for a, b in zip(grads(layer, False), grads(dense, False)):
        assert (a - b).abs().max() <= 1e-10
    vec = torch.randn(batch, 2)
    hvp = [torch.autograd.grad((g[0] * vec).sum(), [x, *m.parameters()])
           for m, g in ((layer, grads(layer, True)), (dense, grads(dense, True)))]
    for a, b in zip(*hvp):
        assert (a - b).abs().max() <= 1e-10


def test_input_hessian_with_double_jacrev():
    torch.manual_seed(0)
    kan = KAN([2, 3, 1], grid_size=5)
    dense = DenseKAN([2, 3, 1], grid_size=5)
    dense.load_state_dict(kan.state_dict())
    x = torch.tensor([0.2, -0.4])
    hess = jacrev(jacrev(lambda v: kan(v)[0]))(x)
    expected = torch.autograd.functional.hessian(lambda v: dense(v)[0], x)
    assert (hess - expected).abs().max() <= 1e-11


@pytest.mark.parametrize("grid_size", [5, 50])
@pytest.mark.parametrize("mode", ["dense", "sparse"])  # "fused": tests/kanode/nn/test_native.py
def test_saved_memory_is_input_sized(grid_size, mode):
    layer = KANLayer(8, 16, grid_size=grid_size, contraction=mode)
    x = torch.randn(256, 8, requires_grad=True)
    saved = dict(saved_storages(layer, x))  # unique storages; module state excluded
    x_bytes = x.numel() * x.element_size()
    index_bytes = x.numel() * 8  # int64 cells
    assert sum(saved.values()) == x_bytes + index_bytes
