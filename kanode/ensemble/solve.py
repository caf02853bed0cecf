"""One torchdiffeq solve over a stacked ensemble state (M, n_traj, dim).

Conventions are :func:`kanode.ode.solve`'s (methods, defaults, ``step_size``,
``max_num_steps`` as a budget of evaluations, adjoint with the seminorm,
:class:`SolverError`), with a member axis after the time axis. It does not call
``kanode.ode.solve`` because that has no per-member error norm and raises on
any non-finite value.

**Fixed-step methods** (``rk4``, ``euler``, ...) take the same steps for every
member and every operation acts member by member, so member ``m`` of the
ensemble solve is the single solve of member ``m`` to rounding (the layers'
GEMMs sum in another order; ≤ 1e-12 in float64), forward, backward and with
the adjoint.

**Adaptive methods** (``dopri5``, ...) take one step size for the whole
stacked state (forward, and the adjoint's backward solve): torchdiffeq
accepts a step when ``norm(error / tolerance) <= 1``. With ``norm="member"``
(the default) that norm is the largest per-member RMS, so every accepted step
passes each member's own tolerance test, as in its single solve, and the
steps follow whichever member is most demanding at each time: typically a few
more evaluations than the most demanding member's single solve, far fewer
than all single solves together (8 trained Lotka–Volterra KANs, dopri5 at
rtol 1e-7: 566 against 536 at most and 3100 in all; experiments/bench_ensemble.py).
Each member's result then differs from its single solve by about the solver's
error (not bitwise), and depends on its companions through the shared steps.
For M = 1 it is the single solve. ``norm="joint"`` is torchdiffeq's RMS over
all members: fewer steps, but a member can then be accepted at an error up
to √M times its tolerance. A member that becomes non-finite makes the shared
step size non-finite, so an adaptive ensemble solve then fails as a whole
(:class:`SolverError`); with a fixed-step method the other members are
unaffected (``allow_nonfinite=True`` returns them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from kanode.config import SOLVER_DEFAULTS
from kanode.ode import ADAPTIVE_METHODS, FIXED_STEP_METHODS, SolverError, evaluation_budget

__all__ = ["solve_ensemble", "member_rms_norm", "finite_members", "NORMS"]


def member_rms_norm(tensor: Tensor) -> Tensor:
    """Largest per-member RMS of ``tensor`` (M, ...) → scalar (torchdiffeq's RMS for M = 1)."""
    return tensor.abs().pow(2).reshape(tensor.shape[0], -1).mean(dim=1).sqrt().amax()


def _joint_rms_norm(tensor: Tensor) -> Tensor:
    return tensor.abs().pow(2).mean().sqrt()


# error norm of the adaptive step over the stacked state
NORMS = {"member": member_rms_norm, "joint": _joint_rms_norm}


def finite_members(y: Tensor, member_dim: int = 1) -> Tensor:
    """(M,) bool: whether member m's part of ``y`` is finite everywhere (no host sync).

    y: a solution (n_t, M, ...) (``member_dim=1``) or a state (M, ...) (``member_dim=0``).
    """
    y = y.movedim(member_dim, 0)
    return torch.isfinite(y).reshape(y.shape[0], -1).all(dim=1)


class _Budget(nn.Module):
    """``field`` with :func:`kanode.ode.evaluation_budget`'s bound on evaluations (as
    :func:`kanode.ode.solve` bounds a single solve); an overrun raises SolverError."""

    def __init__(self, field: nn.Module, budget: int, max_num_steps: int) -> None:
        super().__init__()
        self.field, self.budget, self.max_num_steps = field, budget, max_num_steps
        self.count, self.phase = 0, "forward"

    def start(self, phase: str) -> None:
        self.count, self.phase = 0, phase

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.count += 1
        if self.count > self.budget:
            what = "the adjoint (backward) solve" if self.phase == "backward" else "the solve"
            raise SolverError(f"{what} of the ensemble needed more than max_num_steps={self.max_num_steps} "
                              "solver steps; with an adaptive method all members share the steps, so one "
                              "stiff or blowing-up member stops all")
        return self.field(t, y)


def solve_ensemble(field: nn.Module, y0: Tensor, t: Tensor, method: str = SOLVER_DEFAULTS["method"],
                   rtol: float = SOLVER_DEFAULTS["rtol"], atol: float = SOLVER_DEFAULTS["atol"],
                   adjoint: bool = True, step_size: float | None = None,
                   max_num_steps: int = SOLVER_DEFAULTS["max_num_steps"],
                   norm: str = "member", allow_nonfinite: bool = False) -> Tensor:
    """Integrate ``dy/dt = field(t, y)`` for all members in one solve.

    Parameters
    ----------
    field : an ensemble field (:class:`kanode.ensemble.EnsembleVectorField`)
        with ``forward(t, y)``, y (M, ..., dim).
    y0 : (M, dim) or (M, n_traj, dim) initial states, member first.
    t : (n_t,) strictly increasing output times, shared by the members.
    method, rtol, atol, adjoint, step_size, max_num_steps : as in
        :func:`kanode.ode.solve` (same defaults; ``step_size`` None: the
        smallest interval of ``t``; ``max_num_steps`` bounds the steps of the
        whole solve, as a budget of evaluations of the stacked field).
    norm : ``"member"`` or ``"joint"``, the adaptive step's error norm over
        members (see the module docstring); ignored by fixed-step methods.
    allow_nonfinite : return a solution in which some members are non-finite
        (see :func:`finite_members`) instead of raising.

    Returns
    -------
    (n_t, M, n_traj, dim) tensor, or (n_t, M, dim) for a (M, dim) ``y0``.

    Raises
    ------
    SolverError : step size underflow, too many steps, or (unless
        ``allow_nonfinite``) a non-finite member, named in the message.
    ValueError : unknown method or norm, a fixed-step method without
        ``step_size``, or a ``y0`` without the field's member axis.
    """
    if t.ndim != 1 or t.numel() < 2 or not bool((t[1:] > t[:-1]).all()):
        raise ValueError("t must be a 1-D tensor of at least two strictly increasing times")
    n_members = getattr(field, "n_members", None)
    if y0.ndim not in (2, 3) or (n_members is not None and y0.shape[0] != n_members):
        raise ValueError(f"y0 must be (M, dim) or (M, n_traj, dim) with M = {n_members} members first, "
                         f"got {tuple(y0.shape)}")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not known; use one of {sorted(NORMS)}")
    if max_num_steps < 1:
        raise ValueError(f"max_num_steps must be at least 1, got {max_num_steps}")
    options: dict[str, object] = {}
    if method in FIXED_STEP_METHODS:
        if step_size is None:
            step_size = float(torch.diff(t).min())
        if not step_size or not step_size > 0:
            raise ValueError(f"method {method!r} is fixed-step: give step_size > 0")
        n_steps = math.ceil(float(t[-1] - t[0]) / step_size)
        if n_steps > max_num_steps:
            raise SolverError(f"method {method!r} with step_size={step_size:g} needs {n_steps} steps, "
                              f"more than max_num_steps={max_num_steps}; raise step_size or max_num_steps")
        options["step_size"] = step_size
    elif method in ADAPTIVE_METHODS:
        options["max_num_steps"] = max_num_steps
        options["norm"] = NORMS[norm]
    else:
        raise ValueError(f"unknown method {method!r}; choose one of "
                         f"{', '.join(tuple(ADAPTIVE_METHODS) + tuple(FIXED_STEP_METHODS))}")
    bounded = _Budget(field, evaluation_budget(method, max_num_steps, t.numel()), max_num_steps)
    try:
        if adjoint:
            if not isinstance(field, nn.Module):
                raise TypeError("the adjoint method needs field to be an nn.Module")
            adjoint_options = {k: v for k, v in options.items() if k != "norm"}
            if method in ADAPTIVE_METHODS:
                adjoint_options["norm"] = "seminorm"  # over the state and its adjoint, with the member norm
            y = odeint_adjoint(bounded, y0, t, rtol=rtol, atol=atol, method=method,
                               options=options, adjoint_options=adjoint_options)
            bounded.start("backward")  # the backward solve counts from zero
        else:
            y = odeint(bounded, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    except AssertionError as exc:  # torchdiffeq signals failures with assert
        raise SolverError(f"the ensemble solve failed ({exc}); with an adaptive method all members share "
                          "the step, so one stiff or blowing-up member stops all") from exc
    if not allow_nonfinite:
        finite = finite_members(y)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            raise SolverError(f"members {bad} became non-finite (their vector fields blew up); lower "
                              "their learning rates, or pass allow_nonfinite=True to keep the others")
    return y
