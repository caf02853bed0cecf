"""Integrate a :class:`System` with ``scipy.integrate.solve_ivp``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

from .base import System
from .trajectories import Trajectories

__all__ = ["IntegrationError", "IntegrationLimitError", "simulate", "MAX_EVALUATIONS", "BLOW_UP"]

_IMPLICIT = {"Radau", "BDF", "LSODA"}

MAX_EVALUATIONS = 200_000  # right-hand-side evaluations per trajectory (defaults take < 5,000)
BLOW_UP = 1e150            # a state this large has blown up (its squares still fit a float64)


class IntegrationError(RuntimeError):
    """``solve_ivp`` failed (step size underflow, non-finite state, ...)."""


class IntegrationLimitError(IntegrationError, ValueError):
    """The requested solve cannot be done in bounded work: the state blows up (|y| reaches
    :data:`BLOW_UP`, or the right-hand side overflows) or the solver needs more than
    ``max_evaluations`` evaluations. A ``ValueError`` too: the initial values,
    parameters or time span asked for it."""


class _Stop(Exception):
    """Raised inside the right-hand side to abort ``solve_ivp`` at once."""


def _bounded_rhs(system: System, max_evaluations: int) -> Callable[[float, np.ndarray], np.ndarray]:
    """``system.rhs`` that stops the solve on a blow-up or when the budget is spent."""
    count = 0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal count
        count += 1
        if count > max_evaluations:
            raise _Stop(f"the solver needed more than max_evaluations={max_evaluations} "
                        f"right-hand-side evaluations (reached t={t:.6g}); the solution changes "
                        "too fast for this method and tolerance (stiff or fast oscillation)")
        if not np.all(np.abs(y) < BLOW_UP):
            raise _Stop(f"the state blew up (|y| >= {BLOW_UP:.0e} or non-finite) at t={t:.6g}")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            try:
                return system.rhs(t, y)
            except FloatingPointError as exc:
                raise _Stop(f"the right-hand side overflowed at t={t:.6g} ({exc}); "
                            "the state blows up") from None

    return rhs


def simulate(system: System, t: np.ndarray | None = None, y0: np.ndarray | None = None,
             rtol: float = 1e-10, atol: float = 1e-12, method: str = "DOP853",
             max_evaluations: int | None = None) -> Trajectories:
    """Solve ``y' = system.rhs(t, y)`` and sample the solution at ``t``.

    Parameters
    ----------
    system : System
    t : ndarray, shape (n_t,), optional
        Strictly increasing output times; the solve starts at ``t[0]``.
        Default ``system.default_t()``.
    y0 : ndarray, shape (dim,) or (n_traj, dim), optional
        One initial value or a batch; default ``system.y0``.
    rtol, atol : float
        Tolerances passed to ``solve_ivp``.
    method : str
        Any ``solve_ivp`` method; the analytic Jacobian is passed to the
        implicit ones (Radau, BDF, LSODA).
    max_evaluations : int, optional
        Bound on the right-hand-side evaluations of one trajectory, so that
        every call ends in bounded time; default :data:`MAX_EVALUATIONS`.

    Returns
    -------
    Trajectories
        ``y`` of shape ``(n_traj, n_t, dim)`` (``n_traj = 1`` for a single ``y0``).

    Raises
    ------
    IntegrationError
        If the solver fails or the solution becomes non-finite.
    IntegrationLimitError
        (an ``IntegrationError`` and a ``ValueError``) if a trajectory blows up
        (``|y| >= BLOW_UP``) or needs more than ``max_evaluations`` evaluations.
    """
    if not isinstance(system, System):
        raise TypeError(f"simulate() expects a systems.System, got {type(system).__name__}; "
                        "use systems.get(name) to build one from a name")
    t = system.default_t() if t is None else np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) <= 0) or not np.all(np.isfinite(t)):
        raise ValueError(f"t must be a finite, strictly increasing 1-D array of >= 2 times "
                         f"(got shape {t.shape})")
    y0 = system.y0 if y0 is None else np.asarray(y0, dtype=np.float64)
    batch = np.atleast_2d(y0)  # (n_traj, dim)
    if y0.ndim > 2 or batch.shape[-1] != system.dim:
        raise ValueError(f"y0 must have shape ({system.dim},) or (n_traj, {system.dim}) for "
                         f"{system.name}, got {y0.shape}")
    if max_evaluations is None:
        max_evaluations = MAX_EVALUATIONS
    if isinstance(max_evaluations, bool) or not isinstance(max_evaluations, (int, np.integer)) \
            or max_evaluations < 1:
        raise ValueError(f"max_evaluations must be a positive integer, got {max_evaluations!r}")
    options = {"jac": system.jacobian} if method in _IMPLICIT else {}
    out = np.empty((batch.shape[0], t.size, system.dim))  # (n_traj, n_t, dim)
    for index, start in enumerate(batch):
        try:
            solution = solve_ivp(_bounded_rhs(system, int(max_evaluations)), (t[0], t[-1]), start,
                                 method=method, t_eval=t, rtol=rtol, atol=atol, **options)
        except _Stop as stop:
            shown = np.array2string(start, precision=3, max_line_width=10**6)
            raise IntegrationLimitError(f"{system.name}: trajectory {index} (y0 = {shown}): "
                                        f"{stop}; use smaller initial values (y0_spread), "
                                        "other parameters or a shorter time span") from None
        if not solution.success or solution.y.shape[1] != t.size:
            reached = solution.t[-1] if solution.t.size else t[0]
            raise IntegrationError(f"{system.name}: integration of trajectory {index} failed at "
                                   f"t={reached:.6g} of [{t[0]:.6g}, {t[-1]:.6g}]: "
                                   f"{solution.message} (try another method, e.g. 'Radau', "
                                   "or looser tolerances)")
        if not np.all(np.isfinite(solution.y)):
            raise IntegrationError(f"{system.name}: trajectory {index} became non-finite")
        out[index] = solution.y.T
    return Trajectories(t, out, system.name, system.params, system.state_names)
