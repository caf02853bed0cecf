"""Strong-Wolfe line searches of M members sharing each objective evaluation.

Each member runs ``torch.optim.lbfgs._strong_wolfe``'s algorithm (bracketing,
then zoom with safeguarded cubic interpolation, the same constants) as its
own coroutine on host floats; every round evaluates the objective once, at
every searching member's own trial step. A trial point whose loss or
gradient is not finite counts as a loss of +inf, so the search steps back
instead of failing (torch's search would carry the NaN on).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator

import torch
from torch import Tensor

__all__ = ["strong_wolfe", "search_members", "cubic_minimum"]

Trial = tuple[float, Tensor, float]          # loss, gradient row (P,), directional derivative
Found = tuple[float, Tensor, float, int]     # loss, gradient row, step, evaluations


def cubic_minimum(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                  bounds: tuple[float, float] | None = None) -> float:
    """Minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2) within ``bounds``
    (default: the interval between x1 and x2); the midpoint if it has none."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    with _quiet():
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2) if x1 != x2 else math.nan
        d2_square = d1 * d1 - g1 * g2
        if d2_square >= 0:  # False for NaN
            d2 = math.sqrt(d2_square)
            if x1 <= x2:
                x = x2 - (x2 - x1) * _divide(g2 + d2 - d1, g2 - g1 + 2 * d2)
            else:
                x = x1 - (x1 - x2) * _divide(g1 + d2 - d1, g1 - g2 + 2 * d2)
            if not math.isnan(x):  # ±inf (a straight line, or overflow) clips to a bound, as in torch
                return min(max(x, lo), hi)
    return (lo + hi) / 2.0


def _divide(num: float, den: float) -> float:
    """num / den with IEEE semantics (±inf, NaN for 0/0), as torch's tensor arithmetic has it."""
    if den != 0:
        return num / den
    if num == 0 or math.isnan(num):
        return math.nan
    return math.copysign(math.inf, num) * math.copysign(1.0, den)


class _quiet:
    """Float arithmetic on inf may raise ZeroDivisionError / OverflowError; treat as NaN."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> bool:  # noqa: ANN001
        return kind in (ZeroDivisionError, OverflowError)


def strong_wolfe(t: float, f: float, g: Tensor, gtd: float, d_norm: float, c1: float = 1e-4,
                 c2: float = 0.9, tolerance_change: float = 1e-9,
                 max_ls: int = 25) -> Generator[float, Trial, Found]:
    """One member's search along its direction from step 0 (loss ``f``, gradient
    ``g`` (P,), slope ``gtd`` < 0): yields trial steps, receives ``(loss, gradient,
    slope)`` at each, returns ``(loss, gradient, step, evaluations)`` of the step taken."""
    f_new, g_new, gtd_new = yield t
    evals = 1
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done, ls_iter = False, 0
    bracket: list[float] = []
    bf: list[float] = []
    bg: list[Tensor] = []
    bgtd: list[float] = []
    while ls_iter < max_ls:
        if f_new > f + c1 * t * gtd or (ls_iter > 1 and f_new >= f_prev):
            bracket, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bf, bg, bgtd = [t], [f_new], [g_new], [gtd_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        step = cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                             bounds=(t + 0.01 * (t - t_prev), t * 10))
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
        t = step
        f_new, g_new, gtd_new = yield t
        evals += 1
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bf, bg, bgtd = [0.0, t], [f, f_new], [g, g_new], [gtd, gtd_new]
    insufficient = False
    low, high = (0, 1) if bf[0] <= bf[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = cubic_minimum(bracket[0], bf[0], bgtd[0], bracket[1], bf[1], bgtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insufficient or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insufficient = False
            else:
                insufficient = True
        else:
            insufficient = False
        f_new, g_new, gtd_new = yield t
        evals += 1
        ls_iter += 1
        if f_new > f + c1 * t * gtd or f_new >= bf[low]:
            bracket[high], bf[high], bg[high], bgtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bf[0] <= bf[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bf[high], bg[high], bgtd[high] = bracket[low], bf[low], bg[low], bgtd[low]
            bracket[low], bf[low], bg[low], bgtd[low] = t, f_new, g_new, gtd_new
    return bf[low], bg[low], bracket[low], evals


def search_members(evaluate: Callable[[Tensor, list[int]], tuple[list[float], Tensor]], x: Tensor, d: Tensor,
                   searches: dict[int, Generator[float, Trial, Found]]) -> dict[int, Found]:
    """Drive the members' searches together.

    evaluate : (trial points (M, P), the members whose values are read) → (M losses,
        (M, P) gradients), one objective call; the other members' values may be anything.
    x, d : (M, P) start points and directions.
    searches : member index → its :func:`strong_wolfe` coroutine (not started).
    Members without a search are evaluated at their start point (step 0).
    Returns member index → (loss, gradient (P,), step, evaluations).
    """
    steps = torch.zeros(x.shape[0], dtype=x.dtype)
    pending = {m: search.send(None) for m, search in searches.items()}
    found: dict[int, Found] = {}
    while pending:
        for m, step in pending.items():
            steps[m] = step
        losses, grads = evaluate(x + steps.to(x.device)[:, None] * d, sorted(pending))
        slopes = (grads * d).sum(dim=1).tolist()
        finite = torch.isfinite(grads).all(dim=1).tolist()
        for m in list(pending):
            loss, slope = losses[m], slopes[m]
            if not (finite[m] and math.isfinite(loss) and math.isfinite(slope)):
                loss, slope = math.inf, math.inf
            try:
                pending[m] = searches[m].send((loss, grads[m], slope))
            except StopIteration as stop:
                found[m] = stop.value
                del pending[m]
        steps.zero_()
    return found

