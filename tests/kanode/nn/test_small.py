"""The tiny-batch fast path's autograd Function (kanode.nn._small.SmallLayerFn)."""

import pytest
import torch
from torch.func import functional_call

from kanode.nn import KANLayer
from kanode.nn.dense import DenseKANLayer

pytestmark = pytest.mark.usefixtures("float64")
PARAMS = ("spline_coef", "spline_scale", "base_weight")


def make_pair(order, activation="silu"):
    """A KANLayer (3 → 4, uniform grid, on the fast path) and its dense twin."""
    torch.manual_seed(order)
    layer = KANLayer(3, 4, grid_size=5, spline_order=order, base_activation=activation)
    with torch.no_grad():  # non-trivial scales
        layer.spline_scale.uniform_(0.5, 1.5)
    dense = DenseKANLayer(3, 4, grid_size=5, spline_order=order, base_activation=activation)
    dense.load_state_dict(layer.state_dict())
    return layer, dense


def make_input(batch):
    """(batch, 3) with points inside and outside [-1, 1] on both sides."""
    x = 2.5 * torch.rand(batch, 3, generator=torch.Generator().manual_seed(batch)) - 1.25
    x[0] = torch.tensor([0.13, -1.7, 2.3])  # inside, below, above
    return x.requires_grad_()


def is_fast(out):
    return type(out.grad_fn).__name__ == "SmallLayerFnBackward"


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("activation", ["silu", "tanh"])
def test_first_order_gradients_match_dense(batch, order, activation):
    layer, dense = make_pair(order, activation)
    x = make_input(batch)
    out = layer(x)
    assert is_fast(out)
    weight = torch.randn(batch, 4, generator=torch.Generator().manual_seed(1))
    got = torch.autograd.grad((out * weight).sum(), [x, *(getattr(layer, p) for p in PARAMS)])
    ref_out = dense(x)
    want = torch.autograd.grad((ref_out * weight).sum(), [x, *(getattr(dense, p) for p in PARAMS)])
    assert (out - ref_out).abs().max() <= 1e-12
    for name, a, b in zip(("x", *PARAMS), got, want):
        assert (a - b).abs().max() <= 1e-12, name


def layer_fn(layer):
    def f(x, *params):
        return functional_call(layer, dict(zip(PARAMS, params)), (x,))

    return f


@pytest.mark.parametrize("order", [2, 3])
def test_gradcheck_batch_one(order):
    layer, _ = make_pair(order)
    args = (make_input(1), *(getattr(layer, p) for p in PARAMS))
    assert is_fast(layer_fn(layer)(*args))
    assert torch.autograd.gradcheck(layer_fn(layer), args)


@pytest.mark.parametrize("activation", ["silu", "tanh"])
def test_gradgradcheck_batch_one(activation):
    layer, _ = make_pair(3, activation)
    args = (make_input(1), *(getattr(layer, p) for p in PARAMS))
    assert is_fast(layer_fn(layer)(*args))
    assert torch.autograd.gradgradcheck(layer_fn(layer), args)


def test_no_grad_matches_function():
    layer, _ = make_pair(3)
    x = make_input(7)
    with torch.no_grad():
        plain = layer(x)
    assert (layer(x) - plain).abs().max() <= 1e-13


def test_tiny_batch_node_keeps_nothing_parameter_sized():
    """A direct-backprop solve keeps one node per evaluation: the memory it adds
    per evaluation must be batch-sized, not the (out, in, n_coef) coefficient table."""
    from kanode.analysis import peak_bytes

    layer = KANLayer(28, 128).double()
    x = torch.randn(1, 28, dtype=torch.float64)
    assert layer.contraction_for(1, x) == "small"

    def evaluations(n):
        def step():
            total = sum(layer(x).sum() for _ in range(n))
            total.backward()
        return step

    per_eval = (peak_bytes(evaluations(60)) - peak_bytes(evaluations(10))) / 50
    table_bytes = layer.spline_coef.numel() * 8
    assert per_eval < table_bytes / 4, (per_eval, table_bytes)


def strided_inputs(batch):
    """(batch, 3) inputs that are not row-major: a transpose and a column slice (values of make_input)."""
    x = make_input(batch).detach()
    transposed = x.t().contiguous().t()  # strides (1, batch)
    sliced = torch.cat([x, x], dim=1)[:, ::2]  # strides (6, 2)
    sliced.copy_(x)
    return {"transposed": transposed, "sliced": sliced}


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
@pytest.mark.parametrize("batch", [2, 7])
def test_strided_input_matches_dense_with_and_without_graph(layout, batch):
    """Regression: a strided x (a symbolic layer's column slice, a transposed state) made the
    no-grad path's ``terms.view`` fail ("view size is not compatible with input tensor's
    size and stride"). Values and every gradient must equal the dense oracle's."""
    from kanode.nn._small import small_layer

    layer, dense = make_pair(3)
    x = strided_inputs(batch)[layout]
    assert not x.is_contiguous() and layer.contraction_for(batch, x, grad=False) == "small"
    with torch.no_grad():
        plain, ref = layer(x), dense(x)
    assert (plain - ref).abs().max() <= 1e-12
    weight = torch.randn(batch, 4, generator=torch.Generator().manual_seed(2))
    ref_x = x.detach().clone().requires_grad_()
    want = torch.autograd.grad((dense(ref_x) * weight).sum(), [ref_x, *(getattr(dense, p) for p in PARAMS)])
    for name, run in (("node", layer), ("plain ops", lambda z: small_layer(
            z, layer.spline_coef, layer.spline_scale, layer.base_weight, layer._small, layer._act))):
        xs = x.detach().requires_grad_()  # same strides as x
        out = run(xs)
        assert is_fast(out) == (name == "node")
        got = torch.autograd.grad((out * weight).sum(), [xs, *(getattr(layer, p) for p in PARAMS)])
        for what, a, b in zip(("x", *PARAMS), got, want):
            assert (a - b).abs().max() <= 1e-12, (name, what)


def test_strided_input_second_derivatives():
    layer, _ = make_pair(3)
    x = strided_inputs(3)["transposed"].requires_grad_()
    args = (x, *(getattr(layer, p) for p in PARAMS))
    assert not x.is_contiguous() and is_fast(layer_fn(layer)(*args))
    assert torch.autograd.gradgradcheck(layer_fn(layer), args)
