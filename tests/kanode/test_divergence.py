"""Divergence is a stated rule (issue 24, finding 7): a training loss above
``divergence_factor`` × the run's first one, or not finite, ends a fit as ``diverged``
(exit 3) and freezes an ensemble member; one function decides for both trainers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from kanode.config import DEFAULT_DIVERGENCE_FACTOR, FitConfig
from kanode.divergence import divergence_reason
from kanode.fitting import fit_ensemble
from kanode.fit import fit, main
from kanode.runs import load_checkpoint, read_metrics


@pytest.mark.parametrize(("loss", "first", "factor", "diverged"), [
    (15.0 * 1e6, 15.0, 1e6, False),       # exactly at the multiple: not above it
    (15.0 * 1e6 * (1 + 1e-12), 15.0, 1e6, True),
    (1e42, 15.0, 1e6, True),
    (2.0, 1.0, 1.5, True),
    (1e300, None, 1e6, False),            # before the first step: finiteness only
    (math.inf, None, 1e6, True),
    (math.nan, 1.0, 1e6, True),
    (-math.inf, 1.0, 1e6, True),
    (5.0, 0.0, 1e6, False),               # a zero (or non-finite) first loss sets no multiple
    (5.0, math.inf, 1e6, False),
])
def test_the_rule(loss: float, first: float | None, factor: float, diverged: bool) -> None:
    reason = divergence_reason(loss, first, factor)
    assert (reason is not None) == diverged, reason
    if diverged and math.isfinite(loss):
        assert reason == (f"training loss {loss:.3e} is above {factor:g} × the first training loss "
                          f"{first:.3e} (divergence_factor)")


# the command of the finding: Adam at lr 0.1 blows the training MSE up to 1e42 (finite)
BLOW_UP = ["--system", "lotka_volterra", "--seed", "0", "--widths", "2", "24", "2", "--lr", "0.1",
           "--optimizer", "adam", "--steps", "300", "--lbfgs-steps", "0", "--no-plots", "--quiet"]


def test_the_reported_finite_blow_up_ends_as_diverged_with_exit_3(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "B"
    assert main([*BLOW_UP, "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("kanode: error: training diverged (step ") and "above 1e+06 ×" in err, err
    summary = json.loads((out / "summary.json").read_text())
    rows = read_metrics(out / "metrics.csv")
    first = rows[0]["train_loss"]
    assert summary["status"] == "diverged" and summary["steps"] == len(rows) < 300
    # every recorded step is within the rule; the step that broke it is named with its loss
    assert all(r["train_loss"] <= DEFAULT_DIVERGENCE_FACTOR * first for r in rows)
    step, loss = re.match(r"step (\d+): training loss (\S+) is above", summary["reason"]).groups()
    assert int(step) == len(rows) + 1 and float(loss) > DEFAULT_DIVERGENCE_FACTOR * first
    assert summary["best_train_loss"] == min(r["train_loss"] for r in rows)
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["step"] <= len(rows) and last["first_loss"] == first  # the last good checkpoint
    # a resume honours the verdict: nothing is trained or rewritten, exit 3 again
    before = [(p.name, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file() and p.suffix != ".lock"]
    assert main(["--resume", str(out), "--quiet", "--steps", "400"]) == 3
    after = [(p.name, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file() and p.suffix != ".lock"]
    assert after == before


SMALL = dict(model="kan", method="rk4", train_fraction=0.1, widths=[2, 5, 2], n_test_traj=1, eval_every=4,
             optimizer="adam", steps=6, lbfgs_steps=0, plots=False)


def test_single_fits_and_ensemble_members_apply_the_same_rule() -> None:
    """lr 1 on seed 1: the loss goes from 0.87 to 1.1e3 at step 2, finite; a factor of 10
    ends it there, the default factor (1e6) lets it go on."""
    config = FitConfig(seed=1, lr=1.0, divergence_factor=10.0, **SMALL)
    alone = fit(config)
    members = fit_ensemble([config.replace(seed=0, lr=1e-2), config])
    assert alone.summary["status"] == members[1].summary["status"] == "diverged"
    assert alone.summary["reason"] == members[1].summary["reason"]
    assert alone.summary["reason"].startswith("step 2: training loss 1.")
    assert members[0].summary["status"] == "finished"
    assert fit(config.replace(divergence_factor=DEFAULT_DIVERGENCE_FACTOR)).summary["steps"] >= 2  # went past it


@pytest.mark.parametrize("value", ["1", "0.5", "nan", "inf", "-3"])
def test_a_divergence_factor_that_is_not_above_1_is_refused(value: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--divergence-factor", value, "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "divergence_factor" in err, err
    assert not (tmp_path / "r").exists()
