"""The KAN layer's code-path table (kanode.nn._dispatch): contraction_for reports what forward runs."""

import pytest
import torch

from kanode.nn import KANLayer, _dispatch
from tests.kanode.nn.conftest import nonuniform_state
from kanode.nn.dense import DenseKANLayer


def layer(dtype=torch.float64, grid_size=5, contraction="auto", nonuniform=False):
    torch.manual_seed(grid_size)
    out = KANLayer(3, 4, grid_size=grid_size, contraction=contraction).to(dtype)
    if nonuniform:
        out.load_state_dict(nonuniform_state(out))
    return out


def x_of(batch, dtype=torch.float64):
    return (torch.rand(batch, 3, generator=torch.Generator().manual_seed(batch), dtype=dtype) * 3 - 1.5)


# (case, layer kwargs, batch, grad) → expected path with the fused kernel, without it
CASES = [
    ("float64 batch 1 (an ODE step)", {}, 1, True, "small", "small"),
    ("float64 batch 1, no grad", {}, 1, False, "small", "small"),
    ("float64, batch x in = 900", {}, 300, True, "small", "small"),
    ("float64, batch x in > SMALL_ELEMENTS", {}, 400, True, "fused", "dense"),
    ("float64 above SMALL_ELEMENTS, no grad", {}, 400, False, "fused", "dense"),
    ("float32 batch 1", dict(dtype=torch.float32), 1, True, "fused", "kept"),
    ("float32 batch 1, no grad", dict(dtype=torch.float32), 1, False, "fused", "dense"),
    ("non-uniform batch 1", dict(nonuniform=True), 1, True, "kept", "kept"),
    ("non-uniform batch 1, no grad", dict(nonuniform=True), 1, False, "dense", "dense"),
    ("non-uniform large batch", dict(nonuniform=True), 4000, True, "dense", "dense"),
    ("n_coef 43 batch 1", dict(grid_size=40), 1, True, "fused", "kept"),
    ("n_coef 43 batch 8000", dict(grid_size=40), 8000, True, "fused", "sparse"),
    ("n_coef 23 batch 8000", dict(grid_size=20), 8000, True, "fused", "dense"),
    ('contraction="fused" batch 1', dict(contraction="fused"), 1, True, "fused", "dense"),
    ('contraction="sparse" batch 1', dict(contraction="sparse"), 1, True, "sparse", "sparse"),
    ('contraction="dense" large batch', dict(contraction="dense", grid_size=40), 8000, True, "dense", "dense"),
]


@pytest.fixture(params=["with kernel", "without kernel"])
def kernel(request):
    """Run with the fused kernel (skipped where it is unavailable) and without it."""
    if request.param == "with kernel":
        request.getfixturevalue("fused_kernel")
        return True
    request.getfixturevalue("native_off")
    return False


@pytest.fixture
def spy(monkeypatch):
    """Record the name of every PATHS entry forward runs."""
    taken = []
    for name, entry in list(_dispatch.PATHS.items()):
        def run(lay, x, graph, name=name, inner=entry.run):
            taken.append(name)
            return inner(lay, x, graph)
        monkeypatch.setitem(_dispatch.PATHS, name, entry._replace(run=run))
    return taken


@pytest.mark.parametrize("case, kwargs, batch, grad, with_kernel, without", CASES, ids=[c[0] for c in CASES])
def test_contraction_for_reports_the_path_forward_takes(case, kwargs, batch, grad, with_kernel, without,
                                                        kernel, spy):
    lay = layer(**kwargs)
    x = x_of(batch, lay.knots.dtype)
    expected = with_kernel if kernel else without
    assert lay.contraction_for(batch, x, grad=grad) == expected
    with torch.set_grad_enabled(grad):
        lay(x)
    assert spy == [expected]
    if x.dtype == lay.knots.dtype and not grad:  # default input: a CPU tensor of the layer's dtype
        with torch.no_grad():
            assert lay.contraction_for(batch) == expected


def path_of_node(y):
    """The path read off the output's autograd node (what the entry really ran)."""
    node = y.grad_fn
    kind = type(node).__name__
    if kind == "SplineLayerFnBackward":
        return node.settings[3]  # its contraction mode
    return {"SmallLayerFnBackward": "small", "FusedLayerFnBackward": "fused", "MemberSplineFnBackward": "kept"}[kind]


@pytest.mark.parametrize("case, kwargs, batch, grad, with_kernel, without",
                         [c for c in CASES if c[3]], ids=[c[0] for c in CASES if c[3]])
def test_each_path_runs_its_function_and_matches_the_dense_reference(case, kwargs, batch, grad, with_kernel,
                                                                      without, kernel):
    lay = layer(**kwargs)
    x = x_of(batch, lay.knots.dtype).requires_grad_()
    y = lay(x)
    assert path_of_node(y) == (with_kernel if kernel else without)
    dense = DenseKANLayer(3, 4, grid_size=lay.grid_size).to(lay.knots.dtype)
    dense.load_state_dict(lay.state_dict())
    ref = dense(x)
    tol = 1e-12 if x.dtype == torch.float64 else 3e-6
    assert (y - ref).abs().max() <= tol * max(1.0, ref.abs().max().item())
    g, g_ref = torch.autograd.grad(y.pow(2).sum(), x)[0], torch.autograd.grad(ref.pow(2).sum(), x)[0]
    assert (g - g_ref).abs().max() <= 10 * tol * max(1.0, g_ref.abs().max().item())


def test_under_vmap_the_eager_function_runs(kernel):
    lay = layer()
    x = x_of(5)
    seen = []

    def one(row):  # row: (3,), wrapped by vmap
        seen.append(lay.contraction_for(1, row.unsqueeze(0)))
        return lay(row)

    y = torch.func.vmap(one)(x)
    assert seen == ["dense"]  # no tiny-batch, fused or "kept" path for a wrapped input
    with torch.no_grad():
        assert (y - lay(x)).abs().max() <= 1e-13


@pytest.mark.parametrize("n_coef, elements, expected", [
    (16, 10**7, "dense"), (17, 65536, "dense"), (32, 65536, "dense"), (33, 1, "sparse"), (17, 65537, "sparse"),
])
def test_eager_contraction_thresholds(n_coef, elements, expected):
    assert _dispatch.eager_contraction(n_coef, elements) == expected


def test_every_contraction_name_and_path_is_in_the_table():
    assert set(_dispatch.PATHS) == {"small", "fused", "kept", "dense", "sparse"}
    assert set(_dispatch.CONTRACTIONS) - {"auto"} <= set(_dispatch.PATHS)
    with pytest.raises(ValueError, match="contraction='gpu' is not known"):
        KANLayer(2, 2, contraction="gpu")


@pytest.mark.parametrize("case, kwargs, batch, grad, with_kernel, without", CASES, ids=[c[0] for c in CASES])
def test_non_finite_inputs_propagate_on_every_path(case, kwargs, batch, grad, with_kernel, without, kernel):
    lay = layer(**kwargs)
    x = x_of(batch, lay.knots.dtype)
    x[0] = torch.tensor([float("nan"), 0.1, 0.2])
    with torch.set_grad_enabled(grad):
        y = lay(x)
    assert torch.isnan(y[0]).all()  # NaN reaches every output of its row, and nothing crashes
    assert torch.isfinite(y[1:]).all()
