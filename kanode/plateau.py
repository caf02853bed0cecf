"""When a run has converged: the plateau rule (one rule for single fits and ensemble members).

With ``plateau_steps = N > 0``, a member's training stops once the relative drop of its
training loss over its last N L-BFGS steps is below ``plateau_rtol``::

    drop = (L[k - N] - min(L[k - N + 1 .. k])) / |L[k - N]|        L: its L-BFGS losses

The Adam phase never stops on it (Adam's loss is noisy and its schedule is the
warm-up). A member that stops keeps the parameters of its last recorded loss and
ends ``finished`` with ``stopped_on = "plateau"`` in its summary; one that runs
to ``lbfgs_steps`` ends with ``stopped_on = "cap"`` and its last drop, so a table
can mark cells whose runs hit the cap while still falling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["plateau_drop", "plateaued"]


def plateau_drop(losses: Sequence[float], window: int) -> float | None:
    """The relative drop of ``losses`` (a member's L-BFGS losses, in order) over their last
    ``window`` steps; None before there are ``window + 1`` of them, +inf when the reference
    loss is zero or not finite (nothing to measure against: never a plateau)."""
    if window < 1 or len(losses) < window + 1:
        return None
    reference = float(losses[-window - 1])
    if not math.isfinite(reference) or reference == 0.0:
        return math.inf
    return (reference - min(float(v) for v in losses[-window:])) / abs(reference)


def plateaued(losses: Sequence[float], window: int, rtol: float) -> bool:
    """Whether the plateau rule stops a member with these L-BFGS ``losses``."""
    drop = plateau_drop(losses, window)
    return drop is not None and drop < rtol
