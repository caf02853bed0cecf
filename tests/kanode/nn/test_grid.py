"""Grid update and extension."""

import warnings

import pytest
import torch

from kanode.nn import KAN, KANLayer, RSWAFLayer
from tests.kanode.nn.conftest import nonuniform_state

pytestmark = pytest.mark.usefixtures("float64")


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def smooth_splines(layer, seed=0):
    """Coefficients sampling smooth functions at the Greville abscissae.

    A spline can only be carried to new knots exactly when it is smooth on
    the scale of the new cells; white-noise coefficients are not (their
    kinks sit on the old knots).
    """
    gen = torch.Generator().manual_seed(seed)
    k = layer.spline_order
    knots = layer.knots  # (in, n_knots)
    greville = torch.stack([knots[:, j + 1 : j + k + 1].mean(-1) for j in range(layer.spline_coef.shape[-1])], -1)
    freq = 1.5 * torch.rand(layer.out_features, layer.in_features, 1, generator=gen)
    phase = 3.0 * torch.rand(layer.out_features, layer.in_features, 1, generator=gen)
    with torch.no_grad():
        layer.spline_coef.copy_(torch.sin(freq * greville + phase))
    return layer


@pytest.mark.parametrize("grid_eps", [0.0, 0.02, 1.0])
@pytest.mark.parametrize(
    "order, inside, tolerance",
    # Beyond the old range the old spline is its linear continuation, whose
    # curvature jump at the old range end no new knot sits on: 1e-2 there.
    [(3, True, 1e-3), (3, False, 1e-2), (2, True, 5e-3)],
)
def test_update_grid_preserves_outputs(grid_eps, order, inside, tolerance):
    torch.manual_seed(0)
    layer = smooth_splines(KANLayer(3, 4, grid_size=10, spline_order=order, grid_eps=grid_eps))
    x = torch.randn(500, 3) * torch.tensor([0.3, 0.5, 0.7]) + torch.tensor([0.2, -0.3, 0.0])
    if inside:
        x = x.clamp(-1.0, 1.0)
    before = layer(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer.update_grid(x)
    assert layer.uniform == (grid_eps == 1.0)
    assert relative_error(layer(x), before) <= tolerance
    # knots now follow the samples
    k = layer.spline_order
    assert torch.allclose(layer.knots[:, k], x.min(0).values)
    assert torch.allclose(layer.knots[:, layer.grid_size + k], x.max(0).values)


def test_kan_update_grid_preserves_outputs():
    torch.manual_seed(1)
    kan = KAN([2, 5, 2], grid_size=10)
    for n, layer in enumerate(kan.layers):
        smooth_splines(layer, seed=n)
    x = (torch.randn(400, 2) * 0.6).clamp(-1, 1)
    before = kan(x)
    kan.update_grid(x)
    # layer 2 sees activations partly beyond its old range: see the 1e-2 case above
    assert relative_error(kan(x), before) <= 3e-3


@pytest.mark.parametrize(
    "samples",
    [
        torch.full((50, 3), 0.4),  # constant columns
        torch.randn(1, 3),  # a single sample
        torch.randn(3, 3),  # fewer samples than coefficients
        torch.randn(4, 3).repeat(20, 1),  # duplicated samples
        torch.cat([torch.rand(40, 2) * 2 - 1, torch.full((40, 1), -0.2)], dim=1),  # one constant column
    ],
    ids=["constant", "single", "tiny", "duplicated", "one-constant-column"],
)
def test_update_grid_degenerate_inputs_are_finite_and_warn(samples):
    torch.manual_seed(2)
    layer = smooth_splines(KANLayer(3, 2, grid_size=10))
    samples = samples.double()
    before = layer(samples)
    with pytest.warns(RuntimeWarning):
        layer.update_grid(samples)
    probe = torch.linspace(-3, 3, 101).unsqueeze(-1).expand(-1, 3)
    assert torch.isfinite(layer.knots).all() and torch.isfinite(layer.spline_coef).all()
    assert torch.isfinite(layer(probe)).all()
    assert (layer.knots.diff(dim=-1) > 0).all()
    assert relative_error(layer(samples), before) <= 1e-3


def test_update_grid_on_the_same_range_is_exact():
    torch.manual_seed(7)
    layer = KANLayer(2, 3, grid_size=6, grid_eps=1.0)  # random (rough) coefficients
    x = torch.cat([torch.rand(300, 2) * 2 - 1, torch.tensor([[-1.0, -1.0], [1.0, 1.0]])])
    before = layer(x)
    layer.update_grid(x)
    assert layer.uniform
    assert (layer(x) - before).abs().max() <= 1e-9


def test_update_grid_rejects_nonfinite():
    layer = KANLayer(2, 2)
    with pytest.raises(ValueError, match="non-finite"):
        layer.update_grid(torch.tensor([[0.0, float("nan")]]))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("uniform", [True, False])
def test_extend_grid_by_factor_two_is_exact(order, uniform):
    torch.manual_seed(3)
    layer = KANLayer(3, 2, grid_size=5, spline_order=order)
    if not uniform:
        layer.load_state_dict(nonuniform_state(layer))
    x = torch.cat([torch.linspace(-1, 1, 301).unsqueeze(-1).expand(-1, 3), torch.randn(50, 3) * 4])
    before = layer(x)
    layer.extend_grid(10)
    assert layer.grid_size == 10
    assert layer.spline_coef.shape == (2, 3, 10 + order)
    assert layer.knots.shape == (3, 10 + 2 * order + 1)
    assert (layer(x) - before).abs().max() <= 1e-10


def test_extend_grid_non_integer_factor_is_close():
    torch.manual_seed(4)
    layer = KANLayer(2, 2, grid_size=5)
    x = torch.linspace(-1, 1, 201).unsqueeze(-1).expand(-1, 2)
    before = layer(x)
    layer.extend_grid(7)
    assert relative_error(layer(x), before) <= 0.05


def test_state_dict_round_trip_after_update_and_extension():
    torch.manual_seed(5)
    kan = KAN([2, 3, 2], grid_size=5)
    x = torch.randn(300, 2)
    kan.update_grid(x)
    kan.extend_grid(10)
    assert kan.grid_size == 10
    fresh = KAN([2, 3, 2], grid_size=10)
    fresh.load_state_dict(kan.state_dict())
    assert not fresh.layers[0].uniform
    probe = torch.randn(40, 2) * 2
    assert (fresh(probe) - kan(probe)).abs().max() <= 1e-12


def test_rswaf_extend_and_update():
    torch.manual_seed(6)
    layer = RSWAFLayer(2, 3, grid_size=6)
    x = torch.linspace(-1, 1, 101).unsqueeze(-1).expand(-1, 2)
    before = layer(x)
    layer.extend_grid(12)
    assert layer.spline_coef.shape == (3, 2, 12) and layer.grid_size == 12
    assert relative_error(layer(x), before) <= 0.05
    samples = torch.rand(200, 2) * 1.6 - 0.8
    before = layer(samples)
    layer.update_grid(samples)
    assert relative_error(layer(samples), before) <= 0.05
