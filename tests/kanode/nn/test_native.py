"""The fused CPU kernel (kanode.nn._native) against the eager contraction and the dense reference.

Where the kernel is switched off (KANODE_NATIVE=0) or cannot be built, the
comparisons run the eager path the layer falls back to, and the tests that
are about the kernel itself (what it saves, that it is chosen) skip.
"""

import os
import shutil

import pytest
import torch

from kanode.nn import KAN, KANLayer, _dispatch, _native
from tests.kanode.nn.conftest import adam_losses, nonuniform_state
from kanode.nn.dense import DenseKANLayer
from kanode.analysis.saved import saved_storages

PARAMS = ("spline_coef", "spline_scale", "base_weight")


def test_kernel_builds_on_this_machine():
    # CI machines have g++ and ninja: a failed build must fail here, not
    # silently leave every other test on the eager path.
    if not _native.enabled():
        pytest.skip("KANODE_NATIVE=0")
    if shutil.which("ninja") is None or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler or ninja on this machine: kanode runs its PyTorch path")
    assert _native.kernel() is not None


def probe(layer, n=3000, seed=0):
    """Random inputs inside and 3x outside the range, plus every knot and both range ends."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, layer.in_features, generator=gen, dtype=torch.float64) * 2 - 1) * 3
    knots = layer.knots.double().T  # (n_knots, in)
    return torch.cat([x, knots]).to(layer.knots.dtype)


def grads(layer, x, weight):
    x = x.clone().requires_grad_()
    y = layer(x)
    y.backward(weight)
    return [y.detach(), x.grad, *(getattr(layer, p).grad for p in PARAMS)]


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("grid_size", [1, 5, 37])
@pytest.mark.parametrize("activation", ["silu", "tanh"])
def test_fused_equals_dense_reference_float64(order, grid_size, activation, float64):
    torch.manual_seed(order * 100 + grid_size)
    layer = KANLayer(3, 4, grid_size=grid_size, spline_order=order, contraction="fused",
                     base_activation=activation, grid_range=(-2.0, 0.5))
    x = probe(layer)
    eager = _dispatch.eager_contraction(grid_size + order, x.numel())
    assert layer.contraction_for(x.shape[0], x) == ("fused" if _native.available() else eager)
    dense = DenseKANLayer(3, 4, grid_size=grid_size, spline_order=order, base_activation=activation,
                          grid_range=(-2.0, 0.5))
    dense.load_state_dict(layer.state_dict())
    weight = torch.randn(x.shape[0], 4)
    ours, ref = grads(layer, x, weight), grads(dense, x, weight)
    if order == 1:  # the slope jumps at knots: which side a knot falls on is rounding
        ours[1], ref[1] = ours[1][:-layer.knots.shape[1]], ref[1][:-layer.knots.shape[1]]
    for a, b in zip(ours, ref):
        assert (a - b).abs().max() <= 1e-12 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("size", [(2, 10, 1024, 5), (28, 64, 512, 20), (7, 3, 700, 100)])
def test_fused_equals_sparse_float32(size):
    n_in, n_out, batch, grid_size = size
    torch.manual_seed(1)
    fused = KANLayer(n_in, n_out, grid_size=grid_size, contraction="fused")
    sparse = KANLayer(n_in, n_out, grid_size=grid_size, contraction="sparse")
    sparse.load_state_dict(fused.state_dict())
    x = torch.randn(batch, n_in) * 1.5
    weight = torch.randn(batch, n_out)
    for a, b in zip(grads(fused, x, weight), grads(sparse, x, weight)):
        assert (a - b).abs().max() <= 2e-6 * b.abs().max()


def test_fused_results_do_not_depend_on_thread_count(float64):
    torch.manual_seed(2)
    layer = KANLayer(16, 32, grid_size=10, contraction="fused")
    x = torch.randn(5000, 16)
    weight = torch.randn(5000, 32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = grads(layer, x, weight)
        layer.zero_grad(set_to_none=True)
        torch.set_num_threads(max(2, threads))
        many = grads(layer, x, weight)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many):
        assert (a - b).abs().max() <= 1e-13 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("grid_size", [5, 50])
def test_fused_saves_only_the_input(grid_size, fused_kernel):
    layer = KANLayer(8, 16, grid_size=grid_size, contraction="fused")
    x = torch.randn(256, 8, requires_grad=True)
    saved = [nbytes for _, nbytes in saved_storages(layer, x)]
    assert saved == [256 * 8 * 4]  # x (float32), once; the cells are recomputed in backward


def test_double_backward_of_fused_layer_matches_dense(float64):
    torch.manual_seed(3)
    layer = KANLayer(2, 3, grid_size=7, contraction="fused")
    dense = DenseKANLayer(2, 3, grid_size=7)
    dense.load_state_dict(layer.state_dict())
    x = (torch.randn(500, 2) * 1.5).requires_grad_()
    vec = torch.randn(500, 2)
    results = []
    for model in (layer, dense):
        g = torch.autograd.grad(model(x).pow(2).sum(), x, create_graph=True)[0]
        results.append(torch.autograd.grad((g * vec).sum(), [x, *model.parameters()]))
    for a, b in zip(*results):
        assert (a - b).abs().max() <= 1e-10


def test_nonuniform_grid_and_other_dtypes_use_eager_path(float64, fused_kernel):
    layer = KANLayer(3, 2, grid_size=6, contraction="fused")
    assert layer.contraction_for(100) == "fused"
    assert layer.contraction_for(100, torch.zeros(1, 3, dtype=torch.float32)) != "fused"  # not the layer's dtype
    layer.load_state_dict(nonuniform_state(layer))
    assert not layer.uniform and layer.contraction_for(100) != "fused"


def test_non_finite_inputs_propagate_without_crashing():
    layer = KANLayer(2, 3, grid_size=5, contraction="fused")
    x = torch.tensor([[float("nan"), 0.1], [float("inf"), -float("inf")], [1e30, -1e30], [0.2, 0.3]])
    y = layer(x)
    assert torch.isnan(y[0]).all() and torch.isfinite(y[3]).all()
    assert not torch.isfinite(y[1]).all()


def test_kan_training_step_with_fused_layers_reduces_loss():
    torch.manual_seed(5)
    kan = KAN([2, 8, 2], grid_size=10)
    assert kan.layers[0].contraction_for(2048) == ("fused" if _native.available() else "dense")
    x = torch.rand(2048, 2) * 2 - 1
    target = torch.stack([torch.sin(3 * x[:, 0]) * x[:, 1], x[:, 0] ** 2], dim=-1)
    losses = adam_losses(kan, x, target, steps=150)
    assert losses[-1] < 0.05 * losses[0]


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setattr(_native, "_state", dict(_native._state))  # the cached switch, restored afterwards
    monkeypatch.setenv("KANODE_NATIVE", "off")
    assert not _native.refresh() and _native.kernel() is None
    layer = KANLayer(3, 2, contraction="fused")
    assert layer.contraction_for(4096) == "dense"
    assert os.environ["KANODE_NATIVE"] == "off"


@pytest.mark.parametrize("value, on", [("1", True), ("off", False), (" No ", False), ("FALSE", False), ("0", False)])
def test_switch_is_read_once(monkeypatch, value, on):
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("KANODE_NATIVE", value)
    assert _native.enabled() is on
    monkeypatch.setenv("KANODE_NATIVE", "0" if on else "1")
    assert _native.enabled() is on  # cached: not read again on every forward
    assert _native.refresh() is not on
    _native.set_enabled(on)
    assert _native.enabled() is on


def test_forward_does_not_read_the_environment(monkeypatch):
    class Watch(dict):
        def get(self, key, default=None):
            reads.append(key)
            return super().get(key, default)

    reads = []
    layer = KANLayer(3, 2, grid_size=6)
    layer(torch.randn(4096, 3))
    monkeypatch.setattr(os, "environ", Watch(os.environ))
    layer(torch.randn(4096, 3)).sum().backward()
    layer(torch.randn(1, 3))
    assert reads == []


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    def broken_build():
        raise RuntimeError("Error building extension 'kanode_spline': g++: error: not found")

    monkeypatch.setattr(_native, "_state", {"enabled": True})  # as if KANODE_NATIVE allowed it
    monkeypatch.setattr(_native, "_build", broken_build)
    layer = KANLayer(3, 2, grid_size=6)
    x = torch.randn(3000, 3)
    with pytest.warns(RuntimeWarning, match="could not be built.*g\\+\\+: error: not found"):
        assert layer.contraction_for(x.shape[0], x) == "dense"
    assert _native.kernel() is None  # cached: no second build attempt, no second warning
    reference = KANLayer(3, 2, grid_size=6, contraction="dense")
    reference.load_state_dict(layer.state_dict())
    assert torch.equal(layer(x), reference(x))
