"""Training data: sampled initial conditions, observation noise, train/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import System
from .simulate import simulate
from .trajectories import Trajectories

__all__ = ["Dataset", "make_dataset", "split"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Observed trajectories split by time (extrapolation) and by initial condition.

    Attributes
    ----------
    observed : Trajectories
        Noisy observations of all trajectories on the full grid.
    clean : Trajectories
        Noise-free trajectories (the same object as ``observed`` for :func:`split`).
    train_idx, test_idx : ndarray of int
        Disjoint trajectory indices; ``test_idx`` are the held-out initial conditions.
    n_train_times : int
        The first ``n_train_times`` time points form the training window.
    noise_std : ndarray, shape (dim,)
        Standard deviation of the added Gaussian noise per state (zeros if none).
    """

    observed: Trajectories
    clean: Trajectories
    train_idx: np.ndarray
    test_idx: np.ndarray
    n_train_times: int
    noise_std: np.ndarray

    @property
    def train(self) -> Trajectories:
        """Training trajectories on the training window: ``observed[train_idx, :n_train_times]``."""
        return self.observed.select(self.train_idx).window(0, self.n_train_times)

    @property
    def extrapolation(self) -> Trajectories:
        """Training trajectories after the window: ``observed[train_idx, n_train_times - 1:]``.

        It starts at the last training time, so a model can be rolled out
        from there; it has ``n_t - n_train_times + 1`` points.
        """
        return self.observed.select(self.train_idx).window(self.n_train_times - 1, None)

    @property
    def held_out(self) -> Trajectories:
        """Held-out initial conditions on the full grid: ``observed[test_idx]``."""
        if not self.test_idx.size:
            raise ValueError("this dataset has no held-out trajectories; "
                             "pass n_test_traj > 0 to make_dataset/split")
        return self.observed.select(self.test_idx)


def _n_train_times(n_t: int, train_fraction: float, holdout_last: int = 0) -> int:
    if holdout_last:
        holdout_last = _check_count("holdout_last", holdout_last, 0)
        if n_t - holdout_last < 2:
            raise ValueError(f"holdout_last={holdout_last} of {n_t} time points leaves "
                             f"{max(n_t - holdout_last, 0)} training point(s); need at least 2 — "
                             "hold out fewer points")
        return n_t - holdout_last
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    n_train_times = int(np.floor(train_fraction * n_t))
    if n_train_times < 2:
        raise ValueError(f"train_fraction={train_fraction} of {n_t} time points leaves "
                         f"{n_train_times} training point(s); need at least 2 — raise "
                         "train_fraction or use a finer time grid")
    return n_train_times


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def split(trajectories: Trajectories, train_fraction: float = 0.75, n_test_traj: int = 0,
          seed: int = 0, holdout_last: int = 0) -> Dataset:
    """Split existing (e.g. loaded) trajectories into a :class:`Dataset`.

    ``n_test_traj`` trajectories, chosen uniformly at random with ``seed``,
    are held out; the first ``floor(train_fraction * n_t)`` times form the
    training window, or, with ``holdout_last`` > 0, all but the last
    ``holdout_last`` times (of the union grid; ``train_fraction`` is then
    ignored). ``clean`` is ``observed`` and ``noise_std`` is zero.
    """
    n_test_traj = _check_count("n_test_traj", n_test_traj, 0)
    if n_test_traj >= trajectories.n_traj:
        raise ValueError(f"n_test_traj={n_test_traj} leaves no training trajectory out of "
                         f"{trajectories.n_traj}; hold out fewer")
    n_train_times = _n_train_times(trajectories.n_t, train_fraction, holdout_last)
    rng = np.random.default_rng(seed)
    test_idx = np.sort(rng.choice(trajectories.n_traj, size=n_test_traj, replace=False))
    train_idx = np.setdiff1d(np.arange(trajectories.n_traj), test_idx)
    return Dataset(trajectories, trajectories, train_idx, test_idx.astype(np.int64),
                   n_train_times, np.zeros(trajectories.dim))


def make_dataset(system: System, n_traj: int = 8, t: np.ndarray | None = None,
                 noise: float = 0.0, y0_spread: float = 0.1, seed: int = 0,
                 train_fraction: float = 0.75, n_test_traj: int = 0,
                 include_nominal: bool = True, holdout_last: int = 0) -> Dataset:
    """Simulate ``n_traj + n_test_traj`` trajectories and add observation noise.

    Initial conditions come from ``system.sample_y0(rng, n, y0_spread)``:
    by default additive uniform ``y0 + y0_spread * max(|y0|, 1) * U(-1, 1)``
    per dimension (Lotka–Volterra: multiplicative ``y0 * exp(y0_spread * U(-1, 1))``).
    With ``include_nominal`` trajectory 0 starts exactly at ``system.y0``.
    Trajectories ``0 .. n_traj-1`` are for training, the last ``n_test_traj``
    are held out. ``holdout_last`` > 0 trains on all but the last
    ``holdout_last`` times instead of ``train_fraction``. Noise is Gaussian with per-state standard deviation
    ``noise * std(clean[..., i])`` (std over all trajectories and times).
    One ``numpy.random.default_rng(seed)`` draws the initial conditions, then
    the noise.
    """
    n_traj = _check_count("n_traj", n_traj, 1)
    n_test_traj = _check_count("n_test_traj", n_test_traj, 0)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0 (a fraction of each state's std), got {noise}")
    if not y0_spread >= 0:
        raise ValueError(f"y0_spread must be >= 0, got {y0_spread}")
    t = system.default_t() if t is None else np.asarray(t, dtype=np.float64)
    n_train_times = _n_train_times(t.size, train_fraction, holdout_last)
    rng = np.random.default_rng(seed)
    y0 = system.sample_y0(rng, n_traj + n_test_traj, y0_spread)  # (n_total, dim)
    if include_nominal:
        y0[0] = system.y0
    clean = simulate(system, t, y0)
    noise_std = noise * clean.y.reshape(-1, system.dim).std(axis=0)  # (dim,)
    observed = clean
    if noise > 0:
        noisy = clean.y + noise_std * rng.standard_normal(clean.y.shape)
        observed = Trajectories(clean.t, noisy, clean.system, clean.params, clean.state_names,
                                clean.units)
    return Dataset(observed, clean, np.arange(n_traj), np.arange(n_traj, n_traj + n_test_traj),
                   n_train_times, noise_std)
