"""One torchdiffeq solve over a stacked ensemble state (M, n_traj, dim).

It is :func:`kanode.ode.solve` (methods, defaults, ``step_size``,
``max_num_steps`` as a budget of evaluations, adjoint with the seminorm,
:class:`SolverError`) with a member axis after the time axis, a per-member
error norm, and a per-member check for non-finite values.

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

import torch
from torch import Tensor, nn

from kanode.config import SOLVER_DEFAULTS
from kanode.ode import ADAPTIVE_METHODS, SolverError, solve

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
    n_members = getattr(field, "n_members", None)
    if y0.ndim not in (2, 3) or (n_members is not None and y0.shape[0] != n_members):
        raise ValueError(f"y0 must be (M, dim) or (M, n_traj, dim) with M = {n_members} members first, "
                         f"got {tuple(y0.shape)}")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not known; use one of {sorted(NORMS)}")
    try:
        y = solve(field, y0, t, method=method, rtol=rtol, atol=atol, adjoint=adjoint, step_size=step_size,
                  max_num_steps=max_num_steps, norm=NORMS[norm], check_finite=False)
    except SolverError as exc:
        if method not in ADAPTIVE_METHODS:
            raise
        raise SolverError(f"{exc}; with an adaptive method all members share the step, so one stiff "
                          "or blowing-up member stops all") from exc
    if not allow_nonfinite:
        finite = finite_members(y)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            raise SolverError(f"members {bad} became non-finite (their vector fields blew up); lower "
                              "their learning rates, or pass allow_nonfinite=True to keep the others")
    return y
