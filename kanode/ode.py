"""Neural-ODE vector fields and the solve() wrapper around torchdiffeq."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

__all__ = ["VectorField", "SolverError", "solve", "backward_guarded", "FIXED_STEP_METHODS"]

FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


class SolverError(RuntimeError):
    """The ODE solve failed: step size underflow, too many steps or a non-finite state."""


class VectorField(nn.Module):
    """A network wrapped as an autonomous (or time-dependent) vector field ``f(t, y)``.

    The state is mapped affinely so that the training states fill
    ``grid_range`` (where a KAN's splines live), and the network output is
    scaled per dimension to the size of the observed derivatives::

        z = in_weight * y + in_bias                      # (..., dim)
        f(t, y) = out_scale * net(z [, t])               # (..., dim)

    Parameters
    ----------
    net : nn.Module mapping (..., dim [+1]) to (..., dim).
    in_weight, in_bias, out_scale : tensors of shape (dim,).
    time_input : if True, ``t`` is appended to the network input.

    Attributes
    ----------
    nfe : number of evaluations since the last :meth:`reset_nfe`.
    """

    def __init__(self, net: nn.Module, in_weight: Tensor, in_bias: Tensor, out_scale: Tensor,
                 time_input: bool = False) -> None:
        super().__init__()
        self.net = net
        self.time_input = time_input
        self.register_buffer("in_weight", in_weight.clone())
        self.register_buffer("in_bias", in_bias.clone())
        self.register_buffer("out_scale", out_scale.clone())
        self.nfe = 0

    @classmethod
    def from_data(cls, net: nn.Module, t: Tensor, y: Tensor,
                  grid_range: Sequence[float] = (-1.0, 1.0),
                  time_input: bool = False) -> "VectorField":
        """Normalisation from training data.

        Parameters
        ----------
        t : (n_t,) observation times.
        y : (n_traj, n_t, dim) observed states.
        grid_range : the interval the training states are mapped onto.
        """
        states = y.reshape(-1, y.shape[-1])                       # (n_traj * n_t, dim)
        lo, hi = states.min(0).values, states.max(0).values
        span = torch.where(hi - lo > 0, hi - lo, torch.ones_like(hi))
        g_lo, g_hi = float(grid_range[0]), float(grid_range[1])
        in_weight = (g_hi - g_lo) / span
        in_bias = g_lo - in_weight * lo
        if y.shape[1] > 1:
            dydt = torch.diff(y, dim=1) / torch.diff(t)[None, :, None]  # (n_traj, n_t-1, dim)
            out_scale = dydt.reshape(-1, y.shape[-1]).std(0)
        else:
            out_scale = torch.ones_like(lo)
        out_scale = torch.where(out_scale > 0, out_scale, torch.ones_like(out_scale))
        return cls(net, in_weight, in_bias, out_scale, time_input=time_input)

    def normalize(self, y: Tensor) -> Tensor:
        """States (..., dim) → network inputs (..., dim) in the grid range."""
        return y * self.in_weight + self.in_bias

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``f(t, y)``: t scalar tensor, y (..., dim) → (..., dim)."""
        self.nfe += 1
        z = self.normalize(y)
        if self.time_input:
            z = torch.cat([z, t.expand(*z.shape[:-1], 1).to(z)], dim=-1)
        return self.net(z) * self.out_scale

    def reset_nfe(self) -> int:
        """Return the evaluation count and set it to zero."""
        count, self.nfe = self.nfe, 0
        return count


def solve(field: nn.Module, y0: Tensor, t: Tensor, method: str = "dopri5",
          rtol: float = 1e-7, atol: float = 1e-9, adjoint: bool = True,
          step_size: float | None = None, max_num_steps: int = 20_000) -> Tensor:
    """Integrate ``dy/dt = field(t, y)``.

    Parameters
    ----------
    field : module with ``forward(t, y)``; y (..., dim).
    y0 : (dim,) or (batch, dim) initial states (a batch is solved in one call).
    t : (n_t,) strictly increasing output times; ``t[0]`` is the initial time.
    method : a torchdiffeq method; fixed-step ones (``rk4``, ``euler``, ...)
        need ``step_size``.
    adjoint : backpropagate with the adjoint method (memory O(1) in the number
        of steps) instead of through the solver's operations.
    max_num_steps : bound on the adaptive steps between two consecutive output
        times (torchdiffeq's meaning).

    Returns
    -------
    (n_t, batch, dim) tensor, or (n_t, dim) for an unbatched ``y0``.

    Raises
    ------
    SolverError : step size underflow, too many steps or a non-finite result.
    ValueError : unknown method, or a fixed-step method without ``step_size``.
    """
    if t.ndim != 1 or t.numel() < 2 or not bool((t[1:] > t[:-1]).all()):
        raise ValueError("t must be a 1-D tensor of at least two strictly increasing times")
    options: dict[str, float | int | str] = {}
    if method in FIXED_STEP_METHODS:
        if not step_size:
            raise ValueError(f"method {method!r} is fixed-step: give step_size > 0")
        options["step_size"] = step_size
    elif method in ADAPTIVE_METHODS:
        options["max_num_steps"] = max_num_steps
    else:
        raise ValueError(f"unknown method {method!r}; choose one of "
                         f"{', '.join(ADAPTIVE_METHODS + FIXED_STEP_METHODS)}")
    try:
        if adjoint:
            if not isinstance(field, nn.Module):
                raise TypeError("the adjoint method needs field to be an nn.Module")
            # The seminorm ignores the parameter-adjoint channels in the backward
            # error estimate (Kidger et al. 2021): same gradients, fewer steps.
            adjoint_options = dict(options)
            if method in ADAPTIVE_METHODS:
                adjoint_options["norm"] = "seminorm"
            y = odeint_adjoint(field, y0, t, rtol=rtol, atol=atol, method=method,
                               options=options, adjoint_options=adjoint_options)
        else:
            y = odeint(field, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    except AssertionError as exc:  # torchdiffeq signals failures with assert
        raise SolverError(_explain(str(exc), max_num_steps)) from exc
    if not torch.isfinite(y).all():
        raise SolverError("the solution became non-finite (the vector field blew up); "
                          "lower the learning rate or tighten the tolerances")
    return y


def _explain(message: str, max_num_steps: int) -> str:
    if "max_num_steps" in message:
        return (f"the solver needed more than max_num_steps={max_num_steps} steps between two "
                "output times "
                "(the learned dynamics are stiff or blowing up)")
    if "underflow" in message:
        return f"step size underflow ({message}); the learned dynamics are stiff or non-finite"
    return f"the ODE solver failed: {message}"


def backward_guarded(loss: Tensor, max_num_steps: int = 20_000) -> None:
    """``loss.backward()`` turning adjoint-solver failures into :class:`SolverError`."""
    try:
        loss.backward()
    except AssertionError as exc:
        raise SolverError(_explain(str(exc), max_num_steps)) from exc
