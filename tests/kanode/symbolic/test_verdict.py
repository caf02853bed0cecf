"""The rule that accepts or rejects a discovered formula (kanode.symbolic.verdict)."""

from __future__ import annotations

import math

import pytest

from kanode.symbolic import FORMULA_TOLERANCE, judge


@pytest.mark.parametrize("formula_mse, kan_mse, variance, accepted", [
    (14.1, 342.0, 400.0, True),              # better than its KAN
    (9.9, 1.0, 400.0, True),                 # within 10x
    (10.1, 1.0, 400.0, False),               # over 10x
    (None, 1.0, 400.0, False),               # the integration failed
    (math.inf, math.inf, 400.0, False),      # blew up
    (math.nan, 1.0, 400.0, False),
    (3e-4, 1e-6, 400.0, True),               # 300x the KAN's, but below 1e-6 of the variance (4e-4)
    (5e-4, 1e-6, 400.0, False),              # above it
    (50.0, None, 400.0, True),               # no finite KAN error to compare with
])
def test_judge(formula_mse, kan_mse, variance, accepted) -> None:
    verdict = judge(formula_mse, kan_mse, variance)
    assert verdict.accepted is accepted
    assert "\n" not in verdict.reason
    if not accepted and formula_mse is not None and math.isfinite(formula_mse):
        assert f"more than {FORMULA_TOLERANCE:g}x the KAN's" in verdict.reason
