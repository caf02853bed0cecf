"""kanode.ode.solve's options for callers that stack states (kanode.ensemble):
a custom adaptive error norm, and returning a non-finite solution."""

import pytest
import torch
from torch import nn

from kanode.ode import SolverError, solve


class Linear(nn.Module):
    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(rate, dtype=torch.float64))

    def forward(self, t, y):
        return -self.rate * y


T = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
Y0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)


@pytest.mark.parametrize("adjoint", [False, True])
def test_the_norm_reaches_the_adaptive_solver(adjoint):
    calls = []

    def max_norm(tensor):
        calls.append(tuple(tensor.shape))
        return tensor.abs().max()

    field = Linear(1.5)
    y = solve(field, Y0, T, method="dopri5", rtol=1e-9, atol=1e-11, adjoint=adjoint, norm=max_norm)
    assert calls and all(shape == (1, 2) for shape in calls)  # the state, never the adjoint's tuple
    exact = Y0 * torch.exp(-1.5 * T)[:, None, None]
    assert torch.allclose(y, exact, rtol=1e-7, atol=0)
    forward_calls = len(calls)
    y.sum().backward()
    if adjoint:  # the backward seminorm is built on the same state norm
        assert len(calls) > forward_calls
    assert field.rate.grad == pytest.approx(float((-T[:, None, None] * exact).sum()), rel=1e-6)


def test_check_finite_false_returns_the_nonfinite_solution():
    field = Linear(float("nan"))
    with pytest.raises(SolverError, match="non-finite"):
        solve(field, Y0, T, method="rk4", step_size=0.25, adjoint=False)
    y = solve(field, Y0, T, method="rk4", step_size=0.25, adjoint=False, check_finite=False)
    assert y.shape == (5, 1, 2) and torch.isnan(y[1:]).all() and torch.equal(y[0], Y0)
