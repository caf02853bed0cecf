"""Layers and networks built with ``members=M``: member m computes what a single
model with member m's parameters computes (values and gradients to 1e-12 in
float64; every code path), and grid changes act per member."""

import warnings

import pytest
import torch

from kanode.nn import KAN, MLP, KANLayer, RSWAFLayer, _dispatch
from kanode.nn.linear import Linear

M = 3


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def member_model(model, m, **kwargs):
    """A single model of ``model``'s class and settings holding member m's state."""
    single = type(model)(**kwargs)
    single.load_state_dict({k: v[m] for k, v in model.state_dict().items()})
    return single


def assert_members_match(model, singles, x):
    x = x.clone().requires_grad_(True)
    y = model(x)
    up = torch.randn_like(y)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(y, [x, *params.values()], up)
    for m, single in enumerate(singles):
        xm = x[m].detach().requires_grad_(True)
        ym = single(xm)
        sp = dict(single.named_parameters())
        sg = torch.autograd.grad(ym, [xm, *sp.values()], up[m])
        assert list(sp) == list(params)
        for got, want in zip([y[m], grads[0][m], *(g[m] for g in grads[1:])], [ym, *sg]):
            assert (got - want).abs().max() <= 1e-12 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("path", ["small", "fused", "eager", "nonuniform"])
def test_kan_layer_members_equal_single_layers(path, monkeypatch):
    if path != "small":
        monkeypatch.setattr(_dispatch, "SMALL_ELEMENTS", 0)
    kwargs = dict(in_features=3, out_features=4, grid_size=5)
    layer = KANLayer(**kwargs, members=M, generator=torch.Generator().manual_seed(0))
    assert layer.spline_coef.shape == (M, 4, 3, 8) and layer.knots.shape == (M, 3, 12)
    if path == "eager":
        layer.contraction = "dense"
    if path == "nonuniform":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            layer.update_grid(torch.rand(M, 40, 3) * torch.tensor([1.0, 2.0, 3.0])[:, None, None])
        assert layer.member_uniform == (False,) * M
    singles = [member_model(layer, m, **kwargs, contraction=layer.contraction) for m in range(M)]
    x = 2.0 * torch.randn(M, 6, 3, generator=torch.Generator().manual_seed(1))
    expected = {"small": "small", "fused": ("fused", "dense"), "eager": "dense", "nonuniform": ("kept", "dense")}
    assert layer.contraction_for(6, x) in expected[path]
    assert_members_match(layer, singles, x)


def test_member_grid_update_and_extension_equal_single_layers():
    kwargs = dict(in_features=2, out_features=3, grid_size=4)
    layer = KANLayer(**kwargs, members=M, generator=torch.Generator().manual_seed(0))
    singles = [member_model(layer, m, **kwargs) for m in range(M)]
    samples = torch.rand(M, 50, 2, generator=torch.Generator().manual_seed(2)) * 3 - 1
    layer.update_grid(samples)
    layer.extend_grid(7)
    for m, single in enumerate(singles):
        single.update_grid(samples[m])
        single.extend_grid(7)
        assert all(torch.equal(layer.state_dict()[k][m], v) for k, v in single.state_dict().items())


def test_rswaf_linear_and_networks_with_members():
    x = torch.randn(M, 5, 2, generator=torch.Generator().manual_seed(3))
    rswaf = RSWAFLayer(2, 3, grid_size=4, members=M)
    assert_members_match(rswaf, [member_model(rswaf, m, in_features=2, out_features=3, grid_size=4)
                                 for m in range(M)], x)
    linear = Linear(2, 3, members=M)
    assert linear.weight.shape == (M, 3, 2) and linear.bias.shape == (M, 3)
    assert_members_match(linear, [member_model(linear, m, in_features=2, out_features=3) for m in range(M)], x)
    mlp = MLP([2, 7, 2], members=M)
    assert_members_match(mlp, [member_model(mlp, m, widths=[2, 7, 2]) for m in range(M)], x)
    kan = KAN([2, 5, 2], members=M)
    assert kan.regularization(x).shape == (M,)
    singles = [member_model(kan, m, widths=[2, 5, 2]) for m in range(M)]
    assert_members_match(kan, singles, x)
    for m, single in enumerate(singles):
        assert (kan.regularization(x)[m] - single.regularization(x[m])).abs() <= 1e-12


def test_members_argument_and_inputs_are_checked():
    with pytest.raises(ValueError, match="members must be None"):
        KANLayer(2, 3, members=0)
    with pytest.raises(ValueError, match=r"\(3, \.\.\., 2\)"):
        KAN([2, 4, 1], members=3)(torch.randn(2, 5, 2))
