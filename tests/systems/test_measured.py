"""Measured data: missing cells, units in the CSV header, ragged trajectories, hold-outs."""

from __future__ import annotations

import numpy as np
import pytest

import systems

RAGGED_CSV = """traj,t,hare [thousands],lynx [thousands]
0,1900,30.0,4.0
0,1901,,6.1
0,1903,77.4,nan
0,1904,36.3,59.4
1,1900,10,2
1,1902.5,12,3
"""


def test_csv_with_units_missing_cells_and_own_times(tmp_path):
    path = tmp_path / "hl.csv"
    path.write_text(RAGGED_CSV)
    traj = systems.load(path)
    assert traj.state_names == ("hare", "lynx") and traj.units == ("thousands", "thousands")
    assert np.array_equal(traj.t, [1900, 1901, 1902.5, 1903, 1904])  # the union of the times
    nan = np.nan
    expected = np.array([[[30.0, 4.0], [nan, 6.1], [nan, nan], [77.4, nan], [36.3, 59.4]],
                         [[10, 2], [nan, nan], [12, 3], [nan, nan], [nan, nan]]])
    assert np.array_equal(traj.y, expected, equal_nan=True)
    assert np.array_equal(traj.own_times(0), [1900, 1901, 1903, 1904])
    assert np.array_equal(traj.own_times(1), [1900, 1902.5])
    assert traj.observed.sum() == 10 and not traj.complete


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_round_trip_keeps_missing_values_units_and_ragged_times(tmp_path, suffix):
    path = tmp_path / "hl.csv"
    path.write_text(RAGGED_CSV)
    traj = systems.load(path)
    again = systems.load(traj.save(tmp_path / f"again{suffix}"))
    assert np.array_equal(again.y, traj.y, equal_nan=True) and np.array_equal(again.t, traj.t)
    assert again.units == traj.units and again.state_names == traj.state_names
    if suffix == ".csv":  # a trajectory has rows only at its own times, empty cells where missing
        rows = [line for line in (tmp_path / "again.csv").read_text().splitlines()[2:]]
        assert len(rows) == 6 and rows[1] == "0,1901,,6.0999999999999996"
        assert (tmp_path / "again.csv").read_text().splitlines()[1] == \
            "traj,t,hare [thousands],lynx [thousands]"


def test_old_header_without_units_still_reads(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("traj,t,x,y\n0,0,1,2\n0,1,3,4\n")
    traj = systems.load(path)
    assert traj.state_names == ("x", "y") and traj.units == ("", "")
    assert traj.complete and np.array_equal(traj.y, [[[1, 2], [3, 4]]])


def test_holdout_last_splits_off_the_last_points():
    traj = systems.simulate(systems.get("lotka_volterra"), np.arange(21.0))
    data = systems.split(traj, holdout_last=5)
    assert data.n_train_times == 16 and data.extrapolation.n_t == 6
    with pytest.raises(ValueError, match="holdout_last=20 of 21 time points leaves 1"):
        systems.split(traj, holdout_last=20)
    with pytest.raises(ValueError, match="holdout_last must be an integer"):
        systems.split(traj, holdout_last=-1)
