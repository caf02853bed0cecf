"""Saving and loading Trajectories: exact round trips, helpful errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import systems


@pytest.fixture(scope="module")
def noisy() -> systems.Trajectories:
    return systems.make_dataset(systems.get("rigid_body"), n_traj=3, noise=0.1).observed


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_round_trip_is_exact(noisy, tmp_path, suffix):
    path = noisy.save(tmp_path / f"data{suffix}")
    loaded = systems.load(path)
    assert np.array_equal(loaded.t, noisy.t) and np.array_equal(loaded.y, noisy.y)
    assert loaded.system == "rigid_body" and loaded.params == noisy.params
    assert loaded.state_names == ("y1", "y2", "y3")


def test_pleiades_params_round_trip_as_tuples(tmp_path):
    traj = systems.simulate(systems.get("pleiades"), t=np.linspace(0.0, 0.1, 3))
    loaded = systems.load(traj.save(tmp_path / "p.csv"), system="pleiades")
    assert systems.get("pleiades", **loaded.params) == systems.get("pleiades")


def test_hand_written_csv_without_metadata(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("traj,t,prey,predator\n0,0,1,1\n0,0.5,2,1\n1,0,3,3\n1,0.5,4,3\n")
    loaded = systems.load(path, system="lotka_volterra")
    assert loaded.y.shape == (2, 2, 2) and loaded.state_names == ("prey", "predator")
    assert loaded.system == "lotka_volterra" and loaded.params["alpha"] == 1.5
    np.testing.assert_array_equal(loaded.y[1, :, 0], [3.0, 4.0])


def test_select_and_window(noisy):
    part = noisy.select([0, 2]).window(5, 10)
    assert part.y.shape == (2, 5, 3)
    assert np.array_equal(part.y, noisy.y[[0, 2], 5:10]) and np.array_equal(part.t, noisy.t[5:10])
    assert noisy.select(1).n_traj == 1


BAD_CSV = {
    "empty": ("", "empty"),
    "header_only": ("traj,t,x,y\n", "no data rows"),
    "missing_traj": ("t,x,y\n0,1,1\n", "missing column"),
    "no_state": ("traj,t\n0,0\n", "missing column"),
    "ragged": ("traj,t,x,y\n0,0,1,1\n0,1,1\n", "ragged"),
    "non_numeric": ("traj,t,x,y\n0,0,1,1\n0,1,abc,1\n", "non-numeric"),
    "all_missing": ("traj,t,x,y\n0,0,,\n0,1,nan,\n", "no observed value"),
    "missing_time": ("traj,t,x,y\n0,0,1,1\n0,,1,1\n", "non-numeric"),
    "nan_time": ("traj,t,x,y\n0,0,1,1\n0,nan,1,1\n", "non-finite"),
    "inf": ("traj,t,x,y\n0,0,1,1\n0,1,1,-inf\n", "non-finite"),
    "non_increasing": ("traj,t,x,y\n0,0,1,1\n0,1,1,1\n0,1,2,2\n", "non-increasing"),
    "fractional_traj": ("traj,t,x,y\n0.5,0,1,1\n", "integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_malformed_csv_raises_value_error(tmp_path, case):
    text, word = BAD_CSV[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        systems.load(path)
    assert word in str(info.value) and path.name in str(info.value)


def test_dimension_mismatch_with_named_system(tmp_path):
    path = tmp_path / "lv.csv"
    path.write_text("traj,t,x,y\n0,0,1,1\n0,1,2,2\n")
    with pytest.raises(ValueError, match="dimension"):
        systems.load(path, system="rigid_body")


def test_system_conflict(tmp_path):
    traj = systems.simulate(systems.get("lotka_volterra"))
    with pytest.raises(ValueError, match="not 'spiral'"):
        systems.load(traj.save(tmp_path / "lv.npz"), system=systems.Spiral())


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path


@pytest.mark.parametrize("arrays, word", [
    ({"t": np.arange(3.0)}, "missing"),
    ({"t": np.arange(3.0), "y": np.full((1, 3, 2), np.nan)}, "no observed value"),
    ({"t": np.array([0.0, 2.0, 1.0]), "y": np.zeros((1, 3, 2))}, "increasing"),
    ({"t": np.arange(3.0), "y": np.zeros((1, 4, 2))}, "shape"),
])
def test_malformed_npz_raises_value_error(tmp_path, arrays, word):
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=word):
        systems.load(path)


def test_corrupt_npz(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="readable"):
        systems.load(path)


def test_unsupported_suffix(noisy, tmp_path):
    with pytest.raises(ValueError, match=r"\.npz or \.csv"):
        noisy.save(tmp_path / "data.txt")
    with pytest.raises(ValueError, match=r"\.npz or \.csv"):
        systems.load(tmp_path / "data.h5")


def test_trajectories_validate_shapes():
    with pytest.raises(ValueError, match="shape"):
        systems.Trajectories(np.arange(3.0), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="state names"):
        systems.Trajectories(np.arange(3.0), np.zeros((1, 3, 2)), state_names=("a",))
