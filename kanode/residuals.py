"""The residuals of a fit's whole-window training loss, and their Jacobian.

The training loss (:func:`kanode.train.training_loss`, whole window) is the
mean of ``r²`` over the observed residuals ``r = solution − target``;
:func:`training_residuals` returns r (R,), :func:`residual_jacobian` returns r
and ∂r/∂θ (R, P) for the field's parameters θ in ``field.parameters()`` order.

The Jacobian takes one of two routes (same numbers to rounding):

* ``"fused"`` — the field stacked R times as an ensemble (member m a copy),
  member m's target moved by 1 at residual m only, one forward and backward of
  the fused window kernel (:class:`kanode.compiled.CompiledLoss`): member m's
  loss gradient is (2 / R) · ∂r_m/∂θ. B-spline KANs on uniform grids and MLPs,
  fixed-step methods, no fitted initial states, the C++ kernel built (not
  ``KANODE_NATIVE=0``). For a [2, 10, 2] KAN on the study's Lotka–Volterra
  window (R = 140) 0.07 s against the eager route's 1.3 s; for an MLP
  [2, 50, 2] the two are equal (0.1 s).
* ``"eager"`` — every other field: one reverse pass vmapped over the R rows
  (``is_grads_batched``).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from kanode.compiled import CompiledLoss
from kanode.config import COMPILED_METHODS, FitConfig
from kanode.data import FitData
from kanode.ode import solve

__all__ = ["training_residuals", "residual_jacobian", "jacobian_route", "JACOBIAN_CHUNK"]

JACOBIAN_CHUNK = 1024  # replicated members per fused pass (memory: chunk × P parameters)


def _window(field: nn.Module, data: FitData, config: FitConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y0 (B, dim), t (n_t,), target (n_t, B, dim), observed mask (n_t, B, dim)) of the whole window."""
    from kanode.train import training_window

    y0, t, target, _ = training_window(field, data, config, full=True)
    return y0, t, target, ~torch.isnan(target)


def _fused(config: FitConfig, data: FitData) -> CompiledLoss | None:
    """The fused-kernel loss for the run's fixed-step method and step (None: adaptive or adjoint)."""
    if config.method not in COMPILED_METHODS or config.adjoint:
        return None
    from kanode.train import solver_options

    return _compiled_loss(config.method, float(solver_options(config, data)["step_size"]))


@functools.lru_cache(maxsize=8)
def _compiled_loss(method: str, step_size: float) -> CompiledLoss:  # keeps its time plans between calls
    return CompiledLoss(method, step_size, torch_compile=False)


def jacobian_route(field: nn.Module, data: FitData, config: FitConfig) -> str:
    """``"fused"`` or ``"eager"``: how :func:`residual_jacobian` differentiates this field."""
    from kanode import window

    if (_fused(config, data) is None or getattr(field, "initial_state", None) is not None
            or not window.available()):
        return "eager"
    from kanode.net_tensors import network_tensors

    return "fused" if network_tensors(field.net) is not None else "eager"


def _solution(field: nn.Module, data: FitData, config: FitConfig, y0: Tensor, t: Tensor) -> Tensor:
    """(n_t, B, dim) the whole-window solution (the fused kernel where it applies)."""
    from kanode.train import solver_options

    compiled = _fused(config, data)
    with torch.no_grad():
        if compiled is not None and getattr(field, "initial_state", None) is None:
            solution = compiled.solution(field, y0.unsqueeze(0), t)
            if solution is not None:
                return solution[:, 0]
        return solve(field, y0, t, adjoint=False, **solver_options(config, data))


def training_residuals(field: nn.Module, data: FitData, config: FitConfig) -> Tensor:
    """r (R,): solution − target at the observed entries of the whole training window
    (row-major over (time, trajectory, state)); ``mean(r²)`` is the training loss."""
    y0, t, target, observed = _window(field, data, config)
    return (_solution(field, data, config, y0, t) - target)[observed]


def residual_jacobian(field: nn.Module, data: FitData, config: FitConfig) -> tuple[Tensor, Tensor]:
    """(r (R,), J (R, P)): the residuals of :func:`training_residuals` and their Jacobian
    with respect to ``field.parameters()`` (flattened and concatenated in that order)."""
    if jacobian_route(field, data, config) == "fused":
        return _fused_jacobian(field, data, config)
    return _eager_jacobian(field, data, config)


def _eager_jacobian(field: nn.Module, data: FitData, config: FitConfig) -> tuple[Tensor, Tensor]:
    from kanode.train import solver_options

    params = list(field.parameters())
    with torch.enable_grad():
        y0, t, target, observed = _window(field, data, config)
        r = (solve(field, y0, t, adjoint=False, **solver_options(config, data)) - target)[observed]
        eye = torch.eye(r.numel(), dtype=r.dtype, device=r.device)
        rows = torch.autograd.grad(r, params, eye, is_grads_batched=True, allow_unused=True)
    jac = torch.cat([(torch.zeros(r.numel(), p.numel(), dtype=r.dtype, device=r.device) if g is None
                      else g.reshape(r.numel(), -1)) for g, p in zip(rows, params)], dim=1)
    return r.detach(), jac


def _fused_jacobian(field: nn.Module, data: FitData, config: FitConfig) -> tuple[Tensor, Tensor]:
    from kanode.ensemble import EnsembleVectorField

    compiled = _fused(config, data)
    y0, t, target, observed = _window(field, data, config)
    solution = _solution(field, data, config, y0, t)                    # (n_t, B, dim)
    r = (solution - target)[observed]
    n_obs = r.numel()
    where = observed.reshape(-1).nonzero().squeeze(1)                   # residual m → flat entry
    names = [name for name, _ in field.named_parameters()]
    blocks = []
    for start in range(0, n_obs, JACOBIAN_CHUNK):
        rows = where[start:start + JACOBIAN_CHUNK]
        members = rows.numel()
        ensemble = EnsembleVectorField.from_fields([field] * members)
        moved = solution.reshape(1, -1).repeat(members, 1)              # (M, n_t·B·dim)
        moved[torch.arange(members), rows] -= 1.0                       # member m: residual m is 1
        moved = torch.where(observed.reshape(1, -1), moved, torch.nan)
        moved = moved.reshape(members, *solution.shape).movedim(0, 1)   # (n_t, M, B, dim)
        y0s = y0.unsqueeze(0).expand(members, -1, -1).contiguous()
        with torch.enable_grad():
            losses = compiled(ensemble, y0s, t, moved)                  # (M,) = (1 / n_obs) · (1 + …)
            if losses is None:
                return _eager_jacobian(field, data, config)
            own = dict(ensemble.named_parameters())
            grads = torch.autograd.grad(losses.sum(), [own[name] for name in names])
        blocks.append(torch.cat([g.reshape(members, -1) for g in grads], dim=1) * (n_obs / 2.0))
    return r, torch.cat(blocks)
