"""Member m of an ensemble network computes what single model m computes:
values and gradients to 1e-12 in float64; state round trips; grid changes."""

import pytest
import torch

from kanode.nn import _dispatch
from kanode.ensemble import (EnsembleKAN, EnsembleKANLayer, EnsembleMLP, flatten_members, stack_models,
                             unflatten_members)
from kanode.nn import KAN, MLP, RSWAF, KANLayer
from tests.kanode.ensemble.conftest import FAMILIES, N_MEMBERS, PATH_FAMILIES, WIDTHS, make_models

TOL = 1e-12


def inputs(batch, n_in=WIDTHS[0], seed=1):
    """(M, batch, in) states, some far outside the grid range [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(N_MEMBERS, batch, n_in, generator=gen)


def assert_close(a, b, tol=TOL):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("family", FAMILIES + PATH_FAMILIES)
@pytest.mark.parametrize("batch", [1, 6])
def test_member_equals_single_values_and_gradients(family, batch, monkeypatch):
    if family == "bspline-large-batch":  # uniform grids through the eager local bases, not the powers
        monkeypatch.setattr(_dispatch, "SMALL_ELEMENTS", 0)
    models = make_models(family)
    ensemble = stack_models(models)
    x = inputs(batch).requires_grad_(True)
    if family.startswith("bspline"):  # the code path this family is for
        path = ensemble.layers[0].contraction_for(batch, x)
        expected = {"bspline": "small", "bspline-large-batch": ("fused", "dense")}.get(family, ("dense", "kept"))
        assert path in expected
    y = ensemble(x)
    upstream = torch.randn_like(y)
    params = dict(ensemble.named_parameters())
    grads = torch.autograd.grad(y, [x, *params.values()], upstream)
    grad_x, grad_p = grads[0], dict(zip(params, grads[1:]))
    for m, model in enumerate(models):
        xm = x[m].detach().requires_grad_(True)
        ym = model(xm)
        assert_close(y[m], ym)
        single = dict(model.named_parameters())
        single_grads = torch.autograd.grad(ym, [xm, *single.values()], upstream[m])
        assert_close(grad_x[m], single_grads[0])
        assert set(single) == set(params)
        for name, g in zip(single, single_grads[1:]):
            assert_close(grad_p[name][m], g)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_grad_forward_and_leading_shapes(family):
    models = make_models(family)
    ensemble = stack_models(models)
    x = inputs(4)
    with_grad = ensemble(x)
    with torch.no_grad():
        assert_close(ensemble(x), with_grad)
    # (M, in) and (M, a, b, in) inputs: the middle axes are batch axes
    assert_close(ensemble(x[:, 0]), with_grad[:, 0])
    assert_close(ensemble(x.reshape(N_MEMBERS, 2, 2, -1)).reshape(with_grad.shape), with_grad)


@pytest.mark.parametrize("family", FAMILIES)
def test_member_round_trip_is_exact(family):
    models = make_models(family)
    ensemble = stack_models(models)
    for m, model in enumerate(models):
        back = ensemble.member(m)
        assert type(back) is type(model)
        mine, theirs = back.state_dict(), model.state_dict()
        assert list(mine) == list(theirs)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # knots included
        assert torch.equal(back(inputs(2)[m]), model(inputs(2)[m]))
    # load another model into member 1: only member 1 changes, in place
    other = make_models(family, n=1, seed=7)[0]
    params_before = [p for p in ensemble.parameters()]
    member0 = ensemble.member_state_dict(0)
    ensemble.load_member(1, other)
    assert [p for p in ensemble.parameters()] == params_before  # same Parameter objects
    assert all(torch.equal(ensemble.member_state_dict(1)[k], v) for k, v in other.state_dict().items())
    assert all(torch.equal(ensemble.member_state_dict(0)[k], v) for k, v in member0.items())
    assert_close(ensemble(inputs(3))[1], other(inputs(3)[1]))


@pytest.mark.parametrize("family", ["bspline", "bspline-nonuniform", "rswaf"])
def test_edge_activations_and_regularization_per_member(family):
    models = make_models(family)
    ensemble = stack_models(models)
    x = inputs(5)
    edges = ensemble.layers[0].edge_activations(x)
    reg = ensemble.regularization(x, l1=0.7, entropy=1.3)
    assert edges.shape == (N_MEMBERS, 5, WIDTHS[1], WIDTHS[0]) and reg.shape == (N_MEMBERS,)
    for m, model in enumerate(models):
        assert_close(edges[m], model.layers[0].edge_activations(x[m]))
        assert_close(reg[m], model.regularization(x[m], l1=0.7, entropy=1.3))


def test_subclass_members_come_back_as_their_class():
    models = [RSWAF(WIDTHS, grid_size=4, generator=torch.Generator().manual_seed(m)) for m in range(2)]
    ensemble = stack_models(models)
    back = ensemble.member(1)
    assert type(back) is RSWAF
    assert all(torch.equal(back.state_dict()[k], v) for k, v in models[1].state_dict().items())
    with pytest.raises(ValueError, match="member 1 has type='KAN' but member 0 has type='RSWAF'"):
        stack_models([models[0], KAN(WIDTHS, basis="rswaf", grid_size=4)])


@pytest.mark.parametrize("family", ["bspline", "rswaf", "mlp"])
def test_flat_member_vectors_are_the_single_parameter_vectors(family):
    models = make_models(family)
    ensemble = stack_models(models)
    params = list(ensemble.parameters())
    flat = flatten_members(params)
    for m, model in enumerate(models):
        assert torch.equal(flat[m], torch.nn.utils.parameters_to_vector(model.parameters()))
    back = unflatten_members(flat, params)
    assert all(torch.equal(a, b) for a, b in zip(back, params))
    with pytest.raises(ValueError, match="expected a"):
        unflatten_members(flat[:, 1:], params)


@pytest.mark.parametrize("family", ["bspline", "bspline-nonuniform", "rswaf", "mlp"])
def test_torch_func_jacobian_matches_single(family):
    models = make_models(family)
    ensemble = stack_models(models)
    x = inputs(1)[:, 0]  # (M, in)
    jac = torch.func.jacrev(ensemble)(x)  # (M, out, M, in)
    for m, model in enumerate(models):
        assert_close(jac[m, :, m], torch.func.jacrev(model)(x[m]))
        assert jac[m, :, (m + 1) % N_MEMBERS].abs().max() == 0  # members do not mix


@pytest.mark.parametrize("family", ["bspline", "bspline-nonuniform", "bspline-large-batch"])
def test_bspline_double_backward_matches_single(family, monkeypatch):
    if family == "bspline-large-batch":  # the fused kernel's (or the eager) path, not the powers
        monkeypatch.setattr(_dispatch, "SMALL_ELEMENTS", 0)
    models = make_models(family)
    ensemble = stack_models(models)
    x = inputs(2).requires_grad_(True)
    (g,) = torch.autograd.grad(ensemble(x).pow(2).sum(), x, create_graph=True)
    coef = ensemble.layers[0].spline_coef
    (hvp,) = torch.autograd.grad(g.sum(), coef)
    for m, model in enumerate(models):
        xm = x[m].detach().requires_grad_(True)
        (gm,) = torch.autograd.grad(model(xm).pow(2).sum(), xm, create_graph=True)
        assert_close(g[m], gm)
        (hm,) = torch.autograd.grad(gm.sum(), model.layers[0].spline_coef)
        assert_close(hvp[m], hm)


@pytest.mark.parametrize("family", ["bspline", "rswaf"])
def test_update_grid_equals_each_members_update(family):
    models = make_models(family)
    ensemble = stack_models(models)
    gen = torch.Generator().manual_seed(3)
    samples = torch.rand(N_MEMBERS, 50, WIDTHS[0], generator=gen) * torch.tensor([1.0, 2.0, 4.0])[:, None, None]
    ensemble.update_grid(samples)
    for m, model in enumerate(models):
        model.update_grid(samples[m])
        got = ensemble.member_state_dict(m)
        for key, value in model.state_dict().items():
            assert torch.equal(got[key], value), key
    knots = ensemble.layers[0].knots
    assert not torch.allclose(knots[0], knots[2])  # the members' grids now differ
    if family == "bspline":
        assert ensemble.layers[0].member_uniform == (False,) * N_MEMBERS
    x = inputs(4)
    for m, model in enumerate(models):
        assert_close(ensemble(x)[m], model(x[m]))


@pytest.mark.parametrize("family", ["bspline", "bspline-nonuniform", "rswaf"])
def test_extend_grid_equals_each_members_extension(family):
    models = make_models(family)
    ensemble = stack_models(models)
    ensemble.extend_grid(8)
    assert ensemble.grid_size == 8
    x = inputs(5)
    for m, model in enumerate(models):
        model.extend_grid(8)
        assert all(torch.equal(ensemble.member_state_dict(m)[k], v) for k, v in model.state_dict().items())
        assert_close(ensemble(x)[m], model(x[m]))


def test_update_grid_warnings_name_the_member():
    models = make_models("bspline")
    ensemble = stack_models(models)
    samples = torch.rand(N_MEMBERS, 40, WIDTHS[0])
    samples[2, :, 1] = 0.5  # member 2's second input has no spread
    with pytest.warns(RuntimeWarning, match="member 2: .*no spread"):
        ensemble.update_grid(samples)


def test_layer_level_ensemble_and_dtype_round_trip():
    layers = [KANLayer(3, 2, generator=torch.Generator().manual_seed(m)) for m in range(N_MEMBERS)]
    ensemble = EnsembleKANLayer(layers)
    assert ensemble.spline_coef.shape == (N_MEMBERS, 2, 3, 8) and ensemble.knots.shape == (N_MEMBERS, 3, 12)
    ensemble.float().double()
    for m, layer in enumerate(layers):
        layer.float().double()  # a uniform grid is rebuilt exactly in both
        assert torch.equal(ensemble.member(m).knots, layer.knots)
        assert_close(ensemble(inputs(2, 3))[m], layer(inputs(2, 3)[m]), tol=1e-6)


def test_bad_members_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="member 1 has widths"):
        EnsembleKAN([KAN([2, 5, 2]), KAN([2, 6, 2])])
    with pytest.raises(ValueError, match="grid_size"):
        EnsembleKAN([KAN([2, 5, 2], grid_size=5), KAN([2, 5, 2], grid_size=6)])
    with pytest.raises(ValueError, match="activation"):
        EnsembleMLP([MLP([2, 5, 2], activation="tanh"), MLP([2, 5, 2], activation="relu")])
    with pytest.raises(TypeError, match="no ensemble for Linear"):
        stack_models([torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="at least one"):
        stack_models([])
    ensemble = stack_models(make_models("bspline"))
    with pytest.raises(ValueError, match=r"\(3, \.\.\., 2\)"):
        ensemble(torch.randn(2, 5, 2))
    with pytest.raises(IndexError):
        ensemble.member(3)
    with pytest.raises(ValueError, match="shape"):
        ensemble.load_member(0, KAN(WIDTHS, grid_size=6))
