"""solve() against reference solutions, failure modes, adjoint vs direct gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import systems
from kanode.nn import KAN, MLP
from kanode.ode import SolverError, VectorField, solve


class TorchRHS(nn.Module):
    """A systems.System's right-hand side as a torch module (for reference solves)."""

    def __init__(self, system: systems.System) -> None:
        super().__init__()
        self.system = system

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.system.rhs(float(t), y.detach().numpy())
        return torch.as_tensor(np.asarray(out), dtype=y.dtype)


@pytest.mark.parametrize("name", ["lotka_volterra", "rigid_body", "fitzhugh_nagumo"])
def test_solve_matches_scipy_reference(name: str) -> None:
    system = systems.get(name)
    t = system.default_t()[:60]
    ref = systems.simulate(system, t).y[0]                      # (n_t, dim)
    y = solve(TorchRHS(system), torch.tensor(system.y0), torch.tensor(t),
              method="dopri5", rtol=1e-10, atol=1e-12, adjoint=False)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-7, atol=1e-8)


def test_solve_batches_initial_conditions() -> None:
    system = systems.get("lotka_volterra")
    t = torch.tensor(system.default_t()[:30])
    y0 = torch.tensor([[1.0, 1.0], [2.0, 0.5], [0.5, 2.0]], dtype=torch.float64)
    batched = solve(TorchRHS(system), y0, t, method="dopri5", rtol=1e-11, atol=1e-12,
                    adjoint=False)  # (n_t, 3, 2)
    for k in range(3):
        single = solve(TorchRHS(system), y0[k], t, method="dopri5", rtol=1e-11, atol=1e-12,
                       adjoint=False)
        torch.testing.assert_close(batched[:, k], single, rtol=1e-8, atol=1e-9)


class Blowup(nn.Module):
    """y' = y², which reaches infinity at t = 1 from y(0) = 1."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y ** 2


def test_finite_time_blowup_raises_solver_error() -> None:
    with pytest.raises(SolverError, match="underflow|max_num_steps|non-finite"):
        solve(Blowup(), torch.ones(1, dtype=torch.float64), torch.linspace(0, 2, 5,
              dtype=torch.float64), method="dopri5", adjoint=False, max_num_steps=2000)


def test_too_many_steps_raises_solver_error() -> None:
    system = systems.get("lotka_volterra")
    with pytest.raises(SolverError, match="max_num_steps=5"):
        solve(TorchRHS(system), torch.tensor(system.y0), torch.tensor([0.0, 14.0], dtype=torch.float64),
              method="dopri5", adjoint=False, max_num_steps=5)


def test_fixed_step_needs_step_size_and_unknown_method_is_rejected() -> None:
    field = Blowup()
    y0, t = torch.zeros(1), torch.linspace(0, 1, 3)
    # without step_size a fixed-step method steps by t's smallest interval (FitConfig's step_size=0)
    torch.testing.assert_close(solve(field, y0 + 0.5, t, method="rk4", adjoint=False),
                               solve(field, y0 + 0.5, t, method="rk4", step_size=0.5, adjoint=False))
    with pytest.raises(ValueError, match="step_size"):
        solve(field, y0, t, method="rk4", step_size=0.0)
    with pytest.raises(ValueError, match="unknown method"):
        solve(field, y0, t, method="leapfrog")
    with pytest.raises(ValueError, match="strictly increasing"):
        solve(field, y0, torch.tensor([0.0, 0.0, 1.0]))
    y = solve(field, y0, t, method="rk4", step_size=0.1, adjoint=False)
    assert torch.equal(y, torch.zeros(3, 1))


def test_normalisation_maps_training_states_onto_grid_range() -> None:
    traj = systems.simulate(systems.get("lotka_volterra"))
    y = torch.tensor(traj.y)
    field = VectorField.from_data(nn.Identity(), torch.tensor(traj.t), y, grid_range=(-1.0, 1.0))
    z = field.normalize(y.reshape(-1, 2))
    torch.testing.assert_close(z.min(0).values, torch.tensor([-1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(z.max(0).values, torch.tensor([1.0, 1.0], dtype=torch.float64))


def _field(model: str, system: systems.System, t: torch.Tensor, y: torch.Tensor) -> VectorField:
    torch.manual_seed(0)
    hidden = 4 if system.dim > 3 else 6
    net = (KAN([system.dim, hidden, system.dim], grid_size=4) if model == "kan"
           else MLP([system.dim, 3 * hidden, system.dim]))
    return VectorField.from_data(net, t, y).double()


# The five canonical systems (the textbook suite adds nothing new for the adjoint).
CANONICAL = [n for n in systems.names() if n not in systems.textbook.names()]


@pytest.mark.parametrize("model", ["kan", "mlp"])
@pytest.mark.parametrize("name", CANONICAL)
def test_adjoint_gradients_equal_direct_gradients(name: str, model: str) -> None:
    system = systems.get(name)
    traj = systems.simulate(system)
    n = 6 if name != "spiral" else 12
    t, y = torch.tensor(traj.t[:n]), torch.tensor(traj.y[:, :n])
    field = _field(model, system, t, y)
    grads = {}
    for adjoint in (False, True):
        field.zero_grad()
        pred = solve(field, y[:, 0], t, method="dopri5", rtol=1e-10, atol=1e-12, adjoint=adjoint)
        loss = torch.mean((pred - y.transpose(0, 1)) ** 2)
        loss.backward()
        grads[adjoint] = torch.cat([p.grad.reshape(-1) for p in field.parameters()])
    direct, adjoint = grads[False], grads[True]
    scale = direct.abs().max()
    assert scale > 0
    # Componentwise rtol 1e-5; components far below the largest one are only
    # resolved to the solver tolerance, hence the small absolute floor.
    torch.testing.assert_close(adjoint, direct, rtol=1e-5, atol=1e-7 * scale)
    assert torch.linalg.vector_norm(adjoint - direct) <= 1e-6 * torch.linalg.vector_norm(direct)
