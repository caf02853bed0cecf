"""Time derivatives of observed trajectories, for the sparse regression's start.

:func:`smoothed_derivatives` fits a local polynomial (a Savitzky–Golay filter on any time
grid) of degree :data:`DEGREE` to the ``2h + 1`` observations nearest each point and takes its
value and slope there. The half-width ``h`` is chosen from the data: the one whose smoother
predicts each observation best when that observation is left out (leave-one-out error, exact
for a linear smoother: ``(y_i − ŷ_i) / (1 − H_ii)``). Noise-free data pick the smallest window
(the interpolation error grows with h); noisy data a wider one.

:func:`field_derivatives` is the other source: a fitted vector field (the KAN-ODE) evaluated at
the observed states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Derivatives", "local_polynomial", "smoothed_derivatives", "field_derivatives",
           "HALF_WIDTHS", "DEGREE"]

DEGREE = 3
"""Degree of the local polynomials (cubic: exact slopes for cubics, O(Δt⁴) errors for smooth data)."""

HALF_WIDTHS = (2, 3, 4, 6, 8, 12, 16)
"""Half-widths ``h`` (points each side) the leave-one-out error chooses from; those that do
not fit in a trajectory are skipped."""


@dataclass(frozen=True)
class Derivatives:
    """Derivative estimates at the observed points.

    ``states`` (n_traj, n_t, dim): the smoothed states (the observations for a field);
    ``rates`` (n_traj, n_t, dim): their time derivatives; ``half_width``: the chosen ``h``
    (0 for a field); ``residual_variance``: the mean leave-one-out squared error of the
    smoother, per state averaged (an estimate of the noise variance plus the interpolation
    error; for a field, the smoother's, as the data's noise estimate); ``source``:
    ``"smoothed"`` or ``"field"``.
    """

    states: np.ndarray
    rates: np.ndarray
    half_width: int
    residual_variance: float
    source: str


def local_polynomial(t: np.ndarray, y: np.ndarray, half_width: int,
                     degree: int = DEGREE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local polynomial fits of ``y`` (n_t, dim) on the times ``t`` (n_t,): at each point, the
    least-squares polynomial of ``degree`` through the ``2·half_width + 1`` nearest points (the
    window shifted inwards at the ends). Returns (value (n_t, dim), slope (n_t, dim), the
    smoother's diagonal H_ii (n_t,)).

    Raises ValueError when the trajectory has fewer than ``2·half_width + 1`` points or the
    window has too few points for the degree.
    """
    n_t = t.size
    width = 2 * half_width + 1
    if n_t < width:
        raise ValueError(f"a window of {width} points does not fit a trajectory of {n_t}")
    if width <= degree:
        raise ValueError(f"a window of {width} points cannot fit a polynomial of degree {degree}")
    starts = np.clip(np.arange(n_t) - half_width, 0, n_t - width)                # (n_t,)
    index = starts[:, None] + np.arange(width)                                   # (n_t, width)
    scale = np.maximum(np.abs(t[index] - t[:, None]).max(axis=1), 1e-300)        # (n_t,)
    u = (t[index] - t[:, None]) / scale[:, None]                                 # (n_t, width)
    vander = u[..., None] ** np.arange(degree + 1)                               # (n_t, width, degree+1)
    pinv = np.linalg.pinv(vander)                                                # (n_t, degree+1, width)
    coef = pinv @ y[index]                                                       # (n_t, degree+1, dim)
    own = (index == np.arange(n_t)[:, None])                                     # (n_t, width)
    hat = (pinv[:, 0, :] * own).sum(axis=1)                                      # (n_t,)
    return coef[:, 0], coef[:, 1] / scale[:, None], hat


def smoothed_derivatives(t: np.ndarray, y: np.ndarray,
                         half_widths: Sequence[int] = HALF_WIDTHS) -> Derivatives:
    """Smoothed states and derivatives of ``y`` (n_traj, n_t, dim) on ``t`` (n_t,), the
    half-width chosen by the leave-one-out error over every trajectory (module docstring).

    Raises ValueError when no half-width fits the trajectories (fewer than 5 points) or the
    data are not finite.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not np.isfinite(y).all():
        raise ValueError("the derivative estimates need every value observed (no NaN)")
    best = None
    for h in half_widths:
        if 2 * h + 1 > t.size or 2 * h + 1 <= DEGREE:
            continue
        fits = [local_polynomial(t, traj, h) for traj in y]
        loo = np.mean([np.mean(((traj - value) / (1 - hat)[:, None]) ** 2)
                       for traj, (value, _, hat) in zip(y, fits)])
        if best is None or loo < best[0]:
            best = (loo, h, fits)
    if best is None:
        raise ValueError(f"{t.size} points per trajectory are too few for a derivative estimate "
                         f"(at least {2 * min(half_widths) + 1})")
    loo, h, fits = best
    return Derivatives(np.stack([f[0] for f in fits]), np.stack([f[1] for f in fits]), h, float(loo), "smoothed")


def field_derivatives(field: Callable[[np.ndarray], np.ndarray], y: np.ndarray,
                      residual_variance: float = 0.0) -> Derivatives:
    """The derivatives a fitted vector field gives at the observed states: ``field`` maps
    states (n, dim) to rates (n, dim); ``y`` (n_traj, n_t, dim). ``residual_variance``: the
    data's noise estimate to carry (the smoother's leave-one-out error, by the caller)."""
    y = np.asarray(y, dtype=np.float64)
    rates = np.asarray(field(y.reshape(-1, y.shape[-1])), dtype=np.float64).reshape(y.shape)
    return Derivatives(y, rates, 0, residual_variance, "field")
