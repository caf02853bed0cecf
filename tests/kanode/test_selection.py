"""Rolling-origin selection of the short-series l2 (kanode.selection): the origins, the
validation windows, the choice, and the fits it scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kanode.config import FitConfig
from kanode.data import load_data
from kanode.fitting import fit
from kanode.recipes import apply_recipe
from kanode.selection import (L2_FACTORS, choose, resolve_recipe, select_l2, validation_holdouts,
                              validation_window)

pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/conftest.py

HARE_LYNX = Path(__file__).resolve().parents[2] / "experiments" / "data" / "hare_lynx_1900_1915.csv"


@pytest.mark.parametrize("n_train, want", [(16, [2, 3, 4]), (21, [2, 3, 4, 5]), (8, [2]), (7, []), (3, [])])
def test_the_origins_keep_three_quarters_of_the_window(n_train: int, want: list[int]) -> None:
    assert validation_holdouts(n_train) == want


def test_the_validation_window_is_the_training_window_cut() -> None:
    """Trained on 10 of 16 points with 3 after the window: the validation window trains on the
    first 8 and scores points 8–9; nothing after the training window is in it."""
    from kanode.data import FitData

    t = torch.arange(16.0)
    y = torch.arange(32.0).reshape(1, 16, 2)
    data = FitData(t=t, y=y, y_held_out=y[:0], n_train=10, system=None, state_names=("a", "b"))
    window = validation_window(data, 2)
    assert window.n_train == 8 and torch.equal(window.t, t[:10]) and torch.equal(window.y, y[:, :10])
    assert torch.equal(window.y_train, y[:, :8]) and window.has_extrapolation


def test_the_choice_is_the_lowest_mean_relative_error() -> None:
    """Origin 1's errors are 100× origin 0's; relative to each origin's best, candidate 1 is
    best on average (1.25 against 1.5 and 2), though its summed error is not the lowest."""
    errors = [[1.0, 200.0], [1.5, 100.0], [2.0, 200.0]]
    scores, chosen = choose(errors)
    assert scores == pytest.approx([1.5, 1.25, 2.0]) and chosen == 1
    assert choose([[2.0], [1.0], [1.0]]) == ([2.0, 1.0, 1.0], 1)           # a tie: the weaker penalty
    assert choose([[math.inf, 1.0], [math.inf, 3.0]]) == ([1.0, 2.0], 0)    # an origin where all failed
    assert choose([[math.inf], [4.0]])[1] == 1                              # a failed candidate loses


def short_file(tmp_path: Path, n: int) -> Path:
    """The first ``n`` hare–lynx years as a data file."""
    path = tmp_path / f"hl{n}.csv"
    path.write_text("".join(HARE_LYNX.read_text().splitlines(keepends=True)[: n + 1]))
    return path


QUICK = dict(n_test_traj=0, train_fraction=1.0, recipe="short-series", steps=8, lbfgs_steps=2, plots=False)


@pytest.mark.slow
def test_the_scored_errors_are_the_forecasts_of_the_validation_fits(tmp_path: Path) -> None:
    """On 8 years (one origin: the last 2 held back), each factor's error is the 2-year
    extrapolation MSE of the recipe's own fit of the first 6 years with that factor times the
    recipe's l2 there, fitted here on its own from a file of the 8 years; the fit then uses the
    chosen factor times the 8 years' l2, and writes its choice."""
    config = FitConfig(data=str(short_file(tmp_path, 8)), **QUICK)
    data = load_data(config).to(torch.float64, "cpu")
    selection = select_l2(config, data)
    assert selection is not None and selection.holdouts == (2,) and selection.factors == L2_FACTORS
    assert selection.base_l2 == apply_recipe(config, data).config.l2
    six = FitConfig(data=config.data, **{**QUICK, "train_fraction": 0.0}, holdout_last=2)
    base_six = apply_recipe(six, load_data(six).to(torch.float64, "cpu")).config.l2
    for i in (0, 3):
        alone = fit(six.replace(l2=L2_FACTORS[i] * base_six))
        assert selection.errors[i][0] == pytest.approx(alone.summary["final_extrap_loss"], rel=1e-9)
    assert selection.scores[L2_FACTORS.index(selection.factor)] == min(selection.scores) == 1.0
    result = fit(config, out=tmp_path / "run")
    assert result.config.l2 == selection.l2 == selection.factor * selection.base_l2
    saved = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert saved["factor"] == selection.factor and saved["validation_mse"] == [list(r) for r in selection.errors]


def test_no_selection_for_a_users_l2_or_a_short_window(tmp_path: Path) -> None:
    """A user's l2 (0 included, given explicitly) and a resolved config's l2 are kept without
    validation fits; 7 points are too few to hold any back."""
    config = FitConfig(data=str(short_file(tmp_path, 16)), **QUICK)
    assert resolve_recipe(config.replace(l2=0.5)).selection is None
    kept = resolve_recipe(config, given={"l2"})
    assert kept.selection is None and kept.config.l2 == 0.0
    short = resolve_recipe(config.replace(data=str(short_file(tmp_path, 7))))
    assert short.selection is None and short.config.l2 > 0


def test_no_selection_when_the_noise_estimate_is_zero(tmp_path: Path, monkeypatch) -> None:
    """Straight-line data: the pseudo-residuals are 0, so is the recipe's l2 and every factor of
    it; no validation fits are run (before, 12 ran, and again inside fit(), whose resolved l2
    of 0 looked unresolved)."""
    import kanode.selection as selection

    path = tmp_path / "line.csv"
    rows = ["traj,t,a,b"] + [f"0,{i},{1.0 + 0.5 * i},{2.0 + 0.25 * i}" for i in range(16)]
    path.write_text("\n".join(rows) + "\n")
    config = FitConfig(data=str(path), **QUICK)

    def fail(*args, **kwargs):
        raise AssertionError("select_l2 ran on a zero noise estimate")

    monkeypatch.setattr(selection, "select_l2", fail)
    result = resolve_recipe(config)
    assert result.selection is None and result.config.l2 == 0.0 and result.applied["l2"] == 0.0


def test_the_commands_keep_given_settings_and_write_the_selection(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``kanode.fit --seeds`` with ``--horizons`` (no value) and ``--l2``: the members fit without
    the curriculum at that l2, nothing selected; a single fit without ``--l2`` selects, says so
    and writes selection.json next to its config.toml's chosen l2."""
    from kanode.config import load_config
    from kanode.fit import main

    data = str(short_file(tmp_path, 8))
    common = ["--data", data, "--n-test-traj", "0", "--train-fraction", "1", "--recipe", "short-series",
              "--steps", "8", "--lbfgs-steps", "2", "--quiet", "--no-plots"]
    assert main([*common, "--horizons", "--l2", "0.5", "--seeds", "0-1", "--out", str(tmp_path / "E")]) == 0
    member = load_config(tmp_path / "E" / "seed-1" / "config.toml")
    assert member.horizons == [] and member.l2 == 0.5 and not (tmp_path / "E" / "selection.json").exists()
    assert main([*common, "--out", str(tmp_path / "S")]) == 0
    assert "chosen by rolling-origin validation" in capsys.readouterr().out
    saved = json.loads((tmp_path / "S" / "selection.json").read_text())
    assert load_config(tmp_path / "S" / "config.toml").l2 == saved["l2"] > 0
