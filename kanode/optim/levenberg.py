"""Levenberg–Marquardt on a sum of squares, stopped by the plateau rule.

Minimises ``S(θ) = ‖r(θ)‖²`` for residuals r (R,) of parameters θ (P,) with
Jacobian J (R, P). Each step solves the damped Gauss–Newton system::

    (JᵀJ + λ·I) δ = −Jᵀr,      accept θ + δ if S falls (then λ /= 3), else λ *= 10

with λ started at ``damping · max(diag(JᵀJ))``. It is the optimiser for the
end of a fit, where L-BFGS makes progress in rare bursts: near a small-residual
minimum JᵀJ is the Hessian of S up to a term in r, and the steps converge
quickly where first-order methods crawl. The cost per step is one Jacobian, a
P × P solve and a few residual evaluations, so it is meant for models of up
to a few thousand parameters.

It stops on the same plateau rule as L-BFGS (:mod:`kanode.plateau`) over its
accepted steps, on a cap, or when no damping up to ``max_tries`` increases
lowers S (``stalled``: a minimum to working precision).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from kanode.plateau import plateaued

__all__ = ["LMResult", "STOPS", "levenberg_marquardt"]

STOPS = ("plateau", "cap", "stalled")


@dataclass
class LMResult:
    """What :func:`levenberg_marquardt` returns.

    ``theta`` (P,): the last accepted parameters; ``losses``: S after each accepted
    step, ``losses[0]`` at the start; ``stopped_on``: one of :data:`STOPS`;
    ``damping``: the final λ.
    """

    theta: Tensor
    losses: list[float] = field(default_factory=list)
    stopped_on: str = "cap"
    damping: float = math.nan

    @property
    def steps(self) -> int:
        """Accepted steps."""
        return len(self.losses) - 1


def _damped_step(gram: Tensor, grad: Tensor, damping: float) -> Tensor:
    """δ (P,) solving (gram + damping·I) δ = −grad; gram (P, P) symmetric PSD."""
    system = gram + damping * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        return torch.cholesky_solve(-grad.unsqueeze(1), factor).squeeze(1)
    return torch.linalg.lstsq(system, -grad.unsqueeze(1)).solution.squeeze(1)


def levenberg_marquardt(residuals: Callable[[Tensor], Tensor],
                        jacobian: Callable[[Tensor], tuple[Tensor, Tensor]],
                        theta: Tensor, *, max_steps: int = 200, plateau_steps: int = 10,
                        plateau_rtol: float = 0.01, damping: float = 1e-3, max_tries: int = 12) -> LMResult:
    """Minimise ‖residuals(θ)‖² from ``theta`` (P,).

    Parameters
    ----------
    residuals : θ (P,) → r (R,); called for every trial step (no gradient needed).
    jacobian : θ (P,) → (r (R,), J (R, P)) at θ.
    max_steps : cap on accepted steps.
    plateau_steps, plateau_rtol : stop once S fell by less than ``plateau_rtol``
        (relative) over the last ``plateau_steps`` accepted steps (0: never).
    damping : the first λ as a fraction of the largest diagonal entry of JᵀJ.
    max_tries : λ increases (×10) tried per step before giving up (``stalled``).

    A non-finite trial S counts as a rise. Raises ValueError on bad settings
    and when S is not finite at ``theta``.
    """
    if max_steps < 0 or plateau_steps < 0 or max_tries < 1 or not damping > 0 or not plateau_rtol >= 0:
        raise ValueError("levenberg_marquardt needs max_steps >= 0, plateau_steps >= 0, max_tries >= 1, "
                         "damping > 0 and plateau_rtol >= 0")
    theta = theta.detach().clone()
    loss = float(residuals(theta).pow(2).sum())
    if not math.isfinite(loss):
        raise ValueError("the sum of squares is not finite at the starting parameters; nothing to polish")
    result = LMResult(theta, [loss])
    lam = math.nan
    for _ in range(max_steps):
        r, jac = jacobian(theta)                                       # (R,), (R, P)
        gram, grad = jac.T @ jac, jac.T @ r                            # (P, P), (P,)
        if math.isnan(lam):
            lam = damping * max(float(gram.diagonal().max()), torch.finfo(gram.dtype).tiny)
        for _ in range(max_tries):
            trial_theta = theta + _damped_step(gram, grad, lam)
            trial = float(residuals(trial_theta).pow(2).sum())
            if math.isfinite(trial) and trial < loss:
                theta, loss, lam = trial_theta, trial, lam / 3
                break
            lam *= 10
        else:
            result.stopped_on = "stalled"
            break
        result.losses.append(loss)
        if plateau_steps and plateaued(result.losses, plateau_steps, plateau_rtol):
            result.stopped_on = "plateau"
            break
    else:
        result.stopped_on = "cap"
    result.theta, result.damping = theta, lam
    return result
