"""Does the discovered formula reproduce the data? The rule, stated once.

The formula is judged by its own trajectories, integrated from its fitted initial states
(:func:`kanode.symbolic.polish.fit_initial_states`), against the training window, next to the
KAN it came from (integrated from the first observations, as it was trained). It is
**rejected** when its trajectory MSE

* is not finite (it blows up or the integration fails), or
* exceeds :data:`FORMULA_TOLERANCE` × the KAN's, unless it is below :data:`NEGLIGIBLE` × the
  data's variance (a formula that reproduces the data to a millionth of its variance is not
  rejected for a KAN that happens to be even closer).

``python -m kanode.symbolic`` then writes the files, says so in one line, records status
``"rejected"`` with the reason in ``summary.json`` and exits with ``EXIT_REJECTED`` (4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Verdict", "judge", "FORMULA_TOLERANCE", "NEGLIGIBLE"]

FORMULA_TOLERANCE = 10.0
NEGLIGIBLE = 1e-6


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str        # one line: why it was accepted or rejected, with both errors


def judge(formula_mse: float | None, kan_mse: float | None, data_variance: float,
          tolerance: float = FORMULA_TOLERANCE, reference: str = "KAN") -> Verdict:
    """The rule of the module docstring. ``formula_mse`` None or non-finite: the formula's
    trajectories failed; ``kan_mse`` None or non-finite: only the formula's finiteness and the
    negligible-error bound are checked. ``reference`` names what ``kan_mse`` is the error of
    (the sparse recipe compares with its smoothed data's leave-one-out error)."""
    shown_kan = "not finite" if kan_mse is None or not math.isfinite(kan_mse) else f"{kan_mse:.4g}"
    if formula_mse is None or not math.isfinite(formula_mse):
        return Verdict(False, f"the formula's trajectories are not finite on the training window "
                              f"(the {reference}'s trajectory MSE: {shown_kan})")
    errors = f"trajectory MSE: formula {formula_mse:.4g}, {reference} {shown_kan}"
    if formula_mse <= NEGLIGIBLE * data_variance:
        return Verdict(True, f"{errors}; the formula's is below {NEGLIGIBLE:g} of the data's variance")
    if kan_mse is not None and math.isfinite(kan_mse) and formula_mse > tolerance * kan_mse:
        return Verdict(False, f"the formula does not reproduce the data: its {errors} "
                              f"(more than {tolerance:g}x the {reference}'s)")
    return Verdict(True, f"{errors} (at most {tolerance:g}x the {reference}'s)")
