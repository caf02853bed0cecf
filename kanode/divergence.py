"""The divergence rule, the one :class:`kanode.train.Trainer` applies to every member.

A fit has diverged at a step when the training loss at the step's starting
parameters is not finite, or exceeds ``factor`` (``FitConfig.divergence_factor``,
default :data:`kanode.config.DEFAULT_DIVERGENCE_FACTOR` = 1e6) times the run's
first training loss (step 1's, kept in the checkpoint so that a resume applies
the same threshold). A single fit then ends as ``diverged`` (exit status 3),
keeping its last checkpoint; an ensemble member is frozen at the parameters the
step started from while the others go on.
"""

from __future__ import annotations

import math

__all__ = ["divergence_reason"]


def divergence_reason(loss: float, first_loss: float | None, factor: float) -> str | None:
    """Why a step whose training loss is ``loss`` has diverged, or None if it has not.

    ``first_loss`` is the run's first training loss (None before the first step,
    or to check finiteness only); a first loss that is 0 or not finite sets no
    multiple.
    """
    if not math.isfinite(loss):
        return f"non-finite training loss ({loss})"
    if (first_loss is not None and math.isfinite(first_loss) and first_loss > 0
            and loss > factor * first_loss):
        return (f"training loss {loss:.3e} is above {factor:g} × the first training loss "
                f"{first_loss:.3e} (divergence_factor)")
    return None
