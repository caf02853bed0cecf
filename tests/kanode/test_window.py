"""The fused window kernel (kanode.window) against the eager solve it replaces: the loss and
the gradient of every parameter and of the initial states, for every fixed-step method, KANs
and MLPs, time-dependent and positive fields, missing values, float32, and ensemble members
(frozen ones included)."""

from __future__ import annotations

import pytest
import torch

from kanode.compiled import CompiledLoss
from kanode.data import observed_mse
from kanode.ensemble import EnsembleVectorField
from kanode.nn import KAN, MLP, RSWAF
from kanode.ode import VectorField, solve
from kanode.window import TABLEAUX, available

pytestmark = pytest.mark.skipif(
    not available(), reason="the fused CPU solve kernel is switched off (KANODE_NATIVE=0) or cannot be built")

T = torch.linspace(0.0, 1.6, 9, dtype=torch.float64)


def make_field(net: torch.nn.Module, seed: int, positive: bool = False, time_input: bool = False,
               fit_initial_state: bool = False) -> tuple[VectorField, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(3, T.numel(), 2, generator=gen, dtype=torch.float64) + 0.5      # (n_traj, n_t, dim)
    field = VectorField.from_data(net, T, y, time_input=time_input, positive=positive,
                                  fit_initial_state=fit_initial_state)
    return field.double(), y


def eager_and_fused(field: torch.nn.Module, y0: torch.Tensor, target: torch.Tensor, method: str,
                    step: float) -> tuple[torch.Tensor, torch.Tensor, CompiledLoss]:
    """(M,) eager losses (one solve per member) and fused ones; y0 (M, B, dim), target (n_t, M, B, dim)."""
    compiled = CompiledLoss(method, step, torch_compile=False)
    fused = compiled(field, y0, T, target)
    members = [field] if not hasattr(field, "n_members") else [field.member(m) for m in range(field.n_members)]
    if hasattr(field, "n_members"):
        eager = observed_mse(solve(field, y0, T, method=method, step_size=step, adjoint=False), target, member_dim=1)
    else:
        eager = observed_mse(solve(members[0], y0[0], T, method=method, step_size=step, adjoint=False),
                             target[:, 0]).reshape(1)
    return eager, fused, compiled


def grads(loss: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    return torch.autograd.grad(loss.sum(), leaves, allow_unused=True, retain_graph=True)


def assert_close(got: list[torch.Tensor], want: list[torch.Tensor], tol: float) -> None:
    for g, w in zip(got, want):
        scale = w.abs().max().clamp(min=1e-300)
        assert float((g - w).abs().max() / scale) <= tol


@pytest.mark.parametrize("method", sorted(TABLEAUX))
@pytest.mark.parametrize("model", ["kan", "mlp"])
def test_loss_and_gradients_equal_the_eager_solve(method: str, model: str):
    torch.manual_seed(1)
    net = KAN([2, 5, 2], grid_size=4) if model == "kan" else MLP([2, 8, 2], activation="silu")
    field, y = make_field(net, seed=2)
    y0 = y[:, 0].clone().unsqueeze(0).requires_grad_()
    target = y.permute(1, 0, 2).unsqueeze(1) + 0.05                                # (n_t, 1, B, dim)
    eager, fused, compiled = eager_and_fused(field, y0, target, method, step=0.1)
    assert compiled.last_route == "fused"
    assert float((fused - eager).detach().abs().max() / eager.detach().abs().max()) <= 1e-12
    leaves = list(field.parameters()) + [y0]
    assert_close(grads(fused, leaves), grads(eager, leaves), 1e-11)


@pytest.mark.parametrize("options", [dict(time_input=True), dict(positive=True), dict(fit_initial_state=True)])
def test_time_input_positive_fields_and_fitted_starts(options: dict):
    torch.manual_seed(3)
    field, y = make_field(KAN([3 if options.get("time_input") else 2, 4, 2], grid_size=5), seed=4, **options)
    y0 = field.initial_values(y[:, 0]).unsqueeze(0)
    if not y0.requires_grad:
        y0 = y0.clone().requires_grad_()
    target = y.permute(1, 0, 2).unsqueeze(1)
    eager, fused, compiled = eager_and_fused(field, y0, target, "rk4", step=0.2)
    assert compiled.last_route == "fused"
    assert float((fused - eager).detach().abs().max() / eager.detach().abs().max()) <= 1e-12
    leaves = list(field.parameters())
    assert_close(grads(fused, leaves), grads(eager, leaves), 1e-11)


def test_missing_values_add_nothing():
    """NaN cells: the fused loss is the mean over the observed cells only, as observed_mse."""
    torch.manual_seed(5)
    field, y = make_field(MLP([2, 6, 2]), seed=6)
    y0 = y[:, 0].unsqueeze(0)
    target = y.permute(1, 0, 2).unsqueeze(1).clone()
    target[3, 0, 1, 0] = float("nan")
    target[7, 0, 2] = float("nan")
    eager, fused, _ = eager_and_fused(field, y0, target, "midpoint", step=0.2)
    assert torch.isfinite(fused).all()
    assert float((fused - eager).detach().abs().max() / eager.detach().abs().max()) <= 1e-12
    leaves = list(field.parameters())
    assert_close(grads(fused, leaves), grads(eager, leaves), 1e-11)


def test_float32_matches_eager_to_single_precision():
    torch.manual_seed(7)
    field, y = make_field(KAN([2, 4, 2], grid_size=3), seed=8)
    field, y = field.float(), y.float()
    y0 = y[:, 0].unsqueeze(0)
    target = y.permute(1, 0, 2).unsqueeze(1) + 0.1
    compiled = CompiledLoss("rk4", 0.2, torch_compile=False)
    fused = compiled(field, y0, T.float(), target)
    eager = observed_mse(solve(field, y0[0], T.float(), method="rk4", step_size=0.2, adjoint=False), target[:, 0])
    assert fused.dtype == torch.float32 and compiled.last_route == "fused"
    assert abs(float(fused[0].detach()) - float(eager.detach())) <= 1e-5 * float(eager.detach())


def test_ensemble_members_and_frozen_members():
    """Each member's loss and gradients are its own eager ones; a frozen member (live 0) has a
    constant solution, as in the eager ensemble solve."""
    torch.manual_seed(9)
    fields = [make_field(KAN([2, 4, 2], grid_size=4), seed=10 + m)[0] for m in range(3)]
    ensemble = EnsembleVectorField.from_fields(fields).double()
    ensemble.set_live(torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    _, y = make_field(KAN([2, 4, 2]), seed=10)
    y0 = y[:, 0].expand(3, -1, -1).contiguous()
    target = y.permute(1, 0, 2).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    eager, fused, compiled = eager_and_fused(ensemble, y0, target, "rk4", step=0.2)
    assert compiled.last_route == "fused"
    assert float((fused - eager).detach().abs().max() / eager.detach().abs().max()) <= 1e-12
    leaves = list(ensemble.parameters())
    assert_close(grads(fused, leaves), grads(eager, leaves), 1e-11)


def test_what_it_does_not_cover_goes_elsewhere():
    """RSWAF networks and windows without grid outputs get None (the caller's other route)."""
    field, y = make_field(RSWAF([2, 4, 2]), seed=11)
    compiled = CompiledLoss("rk4", 0.2, torch_compile=False)
    assert compiled(field, y[:, 0].unsqueeze(0), T, y.permute(1, 0, 2).unsqueeze(1)) is None
    assert compiled.last_route is None
