"""Shared helpers for the kanode.nn tests."""

import pytest
import torch

from kanode.nn import _native


def nonuniform_state(layer, seed=0):
    """State dict of ``layer`` with random increasing knots (same range ends)."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    knots = state["knots"].double()
    order, grid_size = layer.spline_order, layer.grid_size
    gaps = 0.3 + torch.rand(knots.shape[0], knots.shape[1] - 1, generator=gen, dtype=torch.float64)
    new = torch.cat([torch.zeros(knots.shape[0], 1, dtype=torch.float64), gaps.cumsum(-1)], dim=-1)
    lo, hi = knots[:, order : order + 1], knots[:, grid_size + order : grid_size + order + 1]
    a, b = new[:, order : order + 1], new[:, grid_size + order : grid_size + order + 1]
    state["knots"] = (lo + (new - a) * (hi - lo) / (b - a)).to(state["knots"].dtype)
    return state


def adam_losses(model, x, target, steps, lr=1e-2):
    """Mean-squared-error losses of ``steps`` Adam steps fitting model(x) to target."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def native_off(monkeypatch):
    """The fused kernel switched off for one test, as ``KANODE_NATIVE=0`` does."""
    monkeypatch.setitem(_native._state, "enabled", False)


@pytest.fixture
def fused_kernel():
    """Skip where the fused kernel is switched off (KANODE_NATIVE=0) or cannot be built."""
    if not _native.available():
        pytest.skip("the fused CPU kernel is switched off (KANODE_NATIVE=0) or cannot be built")
