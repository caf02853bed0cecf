"""make_dataset and split: seeding, noise scale, nominal trajectory, disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest

import systems


@pytest.fixture(scope="module")
def lotka_volterra() -> systems.System:
    return systems.get("lotka_volterra")


def test_same_seed_same_data_other_seed_differs(lotka_volterra):
    a = systems.make_dataset(lotka_volterra, n_traj=3, noise=0.05, seed=7)
    b = systems.make_dataset(lotka_volterra, n_traj=3, noise=0.05, seed=7)
    c = systems.make_dataset(lotka_volterra, n_traj=3, noise=0.05, seed=8)
    assert np.array_equal(a.observed.y, b.observed.y)
    assert not np.array_equal(a.observed.y, c.observed.y)
    assert not np.array_equal(a.clean.y[1:, 0], c.clean.y[1:, 0])  # sampled ICs differ


def test_noise_has_documented_scale(lotka_volterra):
    data = systems.make_dataset(lotka_volterra, n_traj=20, noise=0.1, seed=3,
                                t=np.linspace(0.0, 3.0, 141))
    clean_std = data.clean.y.reshape(-1, 2).std(axis=0)
    np.testing.assert_allclose(data.noise_std, 0.1 * clean_std, rtol=1e-12)
    residual = (data.observed.y - data.clean.y).reshape(-1, 2)  # 2820 samples per state
    np.testing.assert_allclose(residual.std(axis=0), data.noise_std, rtol=0.05)
    assert np.all(np.abs(residual.mean(axis=0)) < 0.1 * data.noise_std)  # ~5 std errors


def test_nominal_trajectory_starts_at_y0(lotka_volterra):
    data = systems.make_dataset(lotka_volterra, n_traj=4, seed=1)
    assert np.array_equal(data.observed.y[0, 0], lotka_volterra.y0)
    assert not np.any(np.all(data.observed.y[1:, 0] == lotka_volterra.y0, axis=-1))
    other = systems.make_dataset(lotka_volterra, n_traj=4, seed=1, include_nominal=False)
    assert not np.array_equal(other.clean.y[0, 0], lotka_volterra.y0)


def test_initial_conditions_follow_documented_distributions(lotka_volterra):
    data = systems.make_dataset(lotka_volterra, n_traj=50, y0_spread=0.5, seed=0,
                                t=np.linspace(0, 0.1, 3))
    ratio = np.log(data.clean.y[:, 0] / lotka_volterra.y0)  # LV: log-uniform in ±spread
    assert np.all(np.abs(ratio) <= 0.5) and np.max(np.abs(ratio)) > 0.4
    rigid = systems.get("rigid_body")  # default: additive uniform, ±spread * max(|y0|, 1)
    y0 = systems.make_dataset(rigid, n_traj=50, y0_spread=0.2,
                              t=np.linspace(0, 0.1, 3)).clean.y[:, 0]
    assert np.all(np.abs(y0 - rigid.y0) <= 0.2) and np.max(np.abs(y0 - rigid.y0)) > 0.15


def test_splits_by_time_and_initial_condition(lotka_volterra):
    data = systems.make_dataset(lotka_volterra, n_traj=5, n_test_traj=3, train_fraction=0.75)
    assert data.observed.n_traj == 8
    assert set(data.train_idx).isdisjoint(data.test_idx)
    assert sorted([*data.train_idx, *data.test_idx]) == list(range(8))
    assert data.n_train_times == 105  # floor(0.75 * 141)
    assert data.train.y.shape == (5, 105, 2) and data.train.t[-1] == data.observed.t[104]
    assert data.extrapolation.t[0] == data.train.t[-1]
    assert data.extrapolation.t[-1] == 14.0 and data.extrapolation.n_t == 141 - 105 + 1
    assert np.array_equal(data.held_out.y, data.observed.y[5:])


def test_held_out_without_test_trajectories_raises(lotka_volterra):
    data = systems.make_dataset(lotka_volterra, n_traj=1)
    with pytest.raises(ValueError, match="n_test_traj"):
        data.held_out


def test_split_user_data(tmp_path, lotka_volterra):
    traj = systems.simulate(lotka_volterra, y0=lotka_volterra.sample_y0(
        np.random.default_rng(0), 6, 0.2))
    loaded = systems.load(traj.save(tmp_path / "mine.csv"))
    data = systems.split(loaded, train_fraction=0.5, n_test_traj=2, seed=4)
    assert len(data.test_idx) == 2 and len(data.train_idx) == 4
    assert set(data.train_idx).isdisjoint(data.test_idx)
    assert data.n_train_times == 70 and data.clean is data.observed
    again = systems.split(loaded, train_fraction=0.5, n_test_traj=2, seed=4)
    assert np.array_equal(again.test_idx, data.test_idx)


@pytest.mark.parametrize("kwargs, word", [
    ({"n_traj": 0}, "n_traj"),
    ({"n_test_traj": -1}, "n_test_traj"),
    ({"train_fraction": 0.0}, "train_fraction"),
    ({"train_fraction": 1.5}, "train_fraction"),
    ({"train_fraction": 0.01}, "at least 2"),
    ({"noise": -0.1}, "noise"),
    ({"y0_spread": -1.0}, "y0_spread"),
])
def test_make_dataset_validates(lotka_volterra, kwargs, word):
    with pytest.raises(ValueError, match=word):
        systems.make_dataset(lotka_volterra, **kwargs)


def test_split_validates(lotka_volterra):
    traj = systems.simulate(lotka_volterra)
    with pytest.raises(ValueError, match="no training trajectory"):
        systems.split(traj, n_test_traj=1)
