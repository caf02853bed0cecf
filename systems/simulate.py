"""Integrate a :class:`System` with ``scipy.integrate.solve_ivp``."""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from .base import System
from .trajectories import Trajectories

__all__ = ["IntegrationError", "simulate"]

_IMPLICIT = {"Radau", "BDF", "LSODA"}


class IntegrationError(RuntimeError):
    """``solve_ivp`` failed (step size underflow, non-finite state, ...)."""


def simulate(system: System, t: np.ndarray | None = None, y0: np.ndarray | None = None,
             rtol: float = 1e-10, atol: float = 1e-12, method: str = "DOP853") -> Trajectories:
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

    Returns
    -------
    Trajectories
        ``y`` of shape ``(n_traj, n_t, dim)`` (``n_traj = 1`` for a single ``y0``).

    Raises
    ------
    IntegrationError
        If the solver fails or the solution becomes non-finite.
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
    options = {"jac": system.jacobian} if method in _IMPLICIT else {}
    out = np.empty((batch.shape[0], t.size, system.dim))  # (n_traj, n_t, dim)
    for index, start in enumerate(batch):
        solution = solve_ivp(system.rhs, (t[0], t[-1]), start, method=method, t_eval=t,
                             rtol=rtol, atol=atol, **options)
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
