"""The plateau rule (kanode.plateau): the drop it measures, a single fit that it stops exactly
when its L-BFGS loss goes flat (and not while it falls), and an ensemble member that it stops
while the others go on, each member as its single fit."""

from __future__ import annotations

import math

import pytest

from kanode.config import ConfigError, FitConfig
from kanode.fitting import fit, fit_ensemble
from kanode.plateau import plateau_drop, plateaued

TINY = dict(widths=[2, 4, 2], grid_size=3, train_fraction=0.1, n_test_traj=0, optimizer="adam+lbfgs",
            steps=10, lbfgs_steps=60, eval_every=1000, checkpoint_every=5, plots=False, threads=1)
# on this tiny problem L-BFGS keeps improving for its 60 steps (the loss falls 1e5-fold), so a
# "plateau" here is a 5-step window in which it fell by less than 25 %; the rule is the same
WINDOW, RTOL = 5, 0.25


def test_the_drop_it_measures():
    assert plateau_drop([4.0, 3.0, 2.0], 2) == pytest.approx(0.5)   # from 4 to the window's minimum 2
    assert plateau_drop([4.0, 3.0, 5.0], 2) == pytest.approx(0.25)  # the minimum, not the last
    assert plateau_drop([2.0, 2.0], 2) is None                     # fewer than window + 1 losses
    assert plateau_drop([0.0, 0.0, 0.0], 2) == math.inf            # nothing to measure against
    assert plateaued([1.0, 0.999, 0.995], 2, 0.01) and not plateaued([1.0, 0.99, 0.98], 2, 0.01)
    with pytest.raises(ConfigError, match="plateau_rtol"):
        FitConfig(plateau_rtol=0.0)
    with pytest.raises(ConfigError, match="plateau_steps"):
        FitConfig(plateau_steps=-1)


def lbfgs_losses(history: list[dict]) -> list[float]:
    return [r["train_loss"] for r in history if r["phase"] == "lbfgs"]


def first_plateau(losses: list[float], window: int, rtol: float) -> int | None:
    """Index (1-based count of L-BFGS steps) at which the rule first holds, or None."""
    for k in range(window + 1, len(losses) + 1):
        if plateaued(losses[:k], window, rtol):
            return k
    return None


def test_a_single_fit_stops_when_flat_and_not_while_falling(tmp_path):
    window, rtol = WINDOW, RTOL
    capped = fit(FitConfig(seed=0, **TINY), out=tmp_path / "capped")
    losses = lbfgs_losses(capped.history)
    stop = first_plateau(losses, window, rtol)
    assert stop is not None and stop < len(losses)  # this fit does go flat before its cap
    stopped = fit(FitConfig(seed=0, plateau_steps=window, plateau_rtol=rtol, **TINY), out=tmp_path / "stopped")
    assert stopped.summary["status"] == "finished" and stopped.summary["stopped_on"] == "plateau"
    assert lbfgs_losses(stopped.history) == losses[:stop]  # the same steps, stopped at the first flat window
    assert stopped.summary["plateau_drop"] == pytest.approx(plateau_drop(losses[:stop], window))
    assert stopped.summary["plateau_drop"] < rtol
    assert stopped.summary["steps"] == TINY["steps"] + stop
    # a falling run: with a threshold below every window's drop the rule never stops it
    falling = min(d for k in range(window + 1, len(losses) + 1) if (d := plateau_drop(losses[:k], window)))
    ran = fit(FitConfig(seed=0, plateau_steps=window, plateau_rtol=falling / 2, **TINY), out=tmp_path / "ran")
    assert ran.summary["stopped_on"] == "cap" and lbfgs_losses(ran.history) == losses
    assert ran.summary["plateau_drop"] >= falling / 2


def test_an_ensemble_member_stops_and_the_others_go_on(tmp_path):
    """Members of one ensemble stop on their own plateaus: each has its single fit's steps."""
    window, rtol = WINDOW, RTOL
    configs = [FitConfig(seed=s, lr=lr, plateau_steps=window, plateau_rtol=rtol, **TINY)
               for s, lr in ((0, 1e-2), (1, 3e-2), (2, 1e-3))]
    members = fit_ensemble(configs, [tmp_path / f"m{m}" for m in range(3)])
    singles = [fit(config, out=tmp_path / f"s{m}") for m, config in enumerate(configs)]
    lengths = [len(r.history) for r in members]
    assert len(set(lengths)) > 1  # they stopped at different steps: the early ones did not stop the rest
    for member, single in zip(members, singles):
        assert member.summary["stopped_on"] == single.summary["stopped_on"]
        got, want = lbfgs_losses(member.history), lbfgs_losses(single.history)
        assert len(got) == len(want)
        assert all(abs(a - b) <= 1e-10 * abs(b) for a, b in zip(got, want))


def test_a_resumed_ensemble_keeps_its_stopped_members(tmp_path):
    """Stopped part-way (after one member plateaued) and resumed: the same losses as the
    ensemble that ran through, and the stopped member is not trained again."""
    window, rtol = WINDOW, RTOL
    configs = [FitConfig(seed=s, lr=lr, plateau_steps=window, plateau_rtol=rtol, **TINY)
               for s, lr in ((0, 1e-2), (2, 1e-3))]
    whole = fit_ensemble(configs, [tmp_path / f"w{m}" for m in range(2)])
    first_stop = min(len(r.history) for r in whole)
    assert first_stop < TINY["steps"] + TINY["lbfgs_steps"]
    outs = [tmp_path / f"p{m}" for m in range(2)]
    fit_ensemble(configs, outs, stop_at=first_stop + 3)
    resumed = fit_ensemble(resume=outs)
    for got, want in zip(resumed, whole):
        assert [r["train_loss"] for r in got.history] == [r["train_loss"] for r in want.history]
        assert got.summary["stopped_on"] == want.summary["stopped_on"]


def test_a_run_resumed_with_the_rule_trains_on_until_flat(tmp_path):
    """"Train this run further until it converges": a run that ran to its cap without the rule,
    resumed with a larger cap and the rule, continues from its last step exactly as the run
    that had the rule from the start, and stops on the same plateau."""
    window, rtol = WINDOW, RTOL
    short = dict(TINY, lbfgs_steps=window)  # too short for the rule to hold
    through = fit(FitConfig(seed=0, plateau_steps=window, plateau_rtol=rtol, **TINY), out=tmp_path / "through")
    assert through.summary["stopped_on"] == "plateau"
    fit(FitConfig(seed=0, **short), out=tmp_path / "run")
    resumed = fit(resume=tmp_path / "run", lbfgs_steps=TINY["lbfgs_steps"], plateau_steps=window,
                  plateau_rtol=rtol)
    assert resumed.summary["stopped_on"] == "plateau"
    got, want = lbfgs_losses(resumed.history), lbfgs_losses(through.history)
    assert len(got) == len(want) and all(abs(a - b) <= 1e-10 * abs(b) for a, b in zip(got, want))
    with pytest.raises(ConfigError, match="cannot change lr when resuming"):
        fit(resume=tmp_path / "run", lr=0.5)
