"""Trajectories (from :mod:`systems` or a file) → tensors for training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import systems

from .config import ConfigError, FitConfig

__all__ = ["FitData", "load_data", "recorded_system", "sample_windows", "DATA_FIELDS", "data_key"]

# The config fields that decide what load_data returns (and its dtype and device).
DATA_FIELDS = ("system", "data", "n_traj", "n_test_traj", "noise", "y0_spread", "train_fraction",
               "data_seed", "dtype", "device")


def data_key(config: FitConfig) -> tuple:
    """Configs with equal keys get the same data from :func:`load_data`."""
    return tuple(getattr(config, name) for name in DATA_FIELDS)


@dataclass(frozen=True)
class FitData:
    """Observed trajectories split for one fit.

    Attributes
    ----------
    t : (n_t,) the whole time grid.
    y : (n_traj, n_t, dim) training initial conditions, observed states.
    y_held_out : (n_test, n_t, dim) held-out initial conditions (n_test may be 0).
    n_train : the first ``n_train`` time points are the training window,
        the rest the extrapolation window.
    system : the ground-truth system when known, else None.
    state_names : names of the ``dim`` state components.
    """

    t: Tensor
    y: Tensor
    y_held_out: Tensor
    n_train: int
    system: systems.System | None
    state_names: tuple[str, ...]

    @property
    def dim(self) -> int:
        return self.y.shape[-1]

    @property
    def t_train(self) -> Tensor:
        """(n_train,) times of the training window."""
        return self.t[: self.n_train]

    @property
    def y_train(self) -> Tensor:
        """(n_traj, n_train, dim) states of the training window."""
        return self.y[:, : self.n_train]

    @property
    def has_extrapolation(self) -> bool:
        return self.n_train < self.t.shape[0]

    def to(self, dtype: torch.dtype, device: torch.device | str) -> "FitData":
        return FitData(self.t.to(dtype=dtype, device=device), self.y.to(dtype=dtype, device=device),
                       self.y_held_out.to(dtype=dtype, device=device), self.n_train,
                       self.system, self.state_names)


def load_data(config: FitConfig) -> FitData:
    """Build the training data a config asks for.

    With ``config.data`` empty, trajectories of ``config.system`` are simulated
    (``systems.make_dataset``); otherwise the ``.npz``/``.csv`` file is read
    with ``systems.load`` and split the same way.

    Raises
    ------
    ConfigError : unknown system; a data file that is missing, not a regular
        file, unreadable or malformed (any :class:`systems.TrajectoryFileError`).
    """
    system = _system_or_none(config.system, required=not config.data)
    if config.data:
        path = Path(config.data)
        if not path.exists():
            raise ConfigError(f"data file {path} does not exist")
        try:  # the file is validated by its reader: one error type, one line
            observed = systems.load(path)
        except systems.TrajectoryFileError as exc:
            raise ConfigError(f"data file {exc}") from None
        try:
            dataset = systems.split(observed, train_fraction=config.train_fraction,
                                    n_test_traj=config.n_test_traj, seed=config.data_seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        system = recorded_system(observed)  # the truth only where the file says what made it
    else:
        assert system is not None
        try:
            dataset = systems.make_dataset(
                system, n_traj=config.n_traj, noise=config.noise,
                y0_spread=config.y0_spread, seed=config.data_seed,
                train_fraction=config.train_fraction, n_test_traj=config.n_test_traj)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    observed = dataset.observed
    t = torch.tensor(np.array(observed.t, dtype=np.float64))
    y_all = torch.tensor(np.array(observed.y, dtype=np.float64))
    train_idx = torch.as_tensor(np.asarray(dataset.train_idx, dtype=np.int64))
    test_idx = torch.as_tensor(np.asarray(dataset.test_idx, dtype=np.int64))
    return FitData(t=t, y=y_all[train_idx], y_held_out=y_all[test_idx],
                   n_train=int(dataset.n_train_times), system=system,
                   state_names=tuple(observed.state_names))


def recorded_system(observed: systems.Trajectories) -> systems.System | None:
    """The system (with its parameters) a trajectory file records as having generated it
    (:meth:`systems.Trajectories.save` writes it), or None: measured data has no known truth."""
    if not observed.system:
        return None
    try:
        system = systems.get(observed.system, **dict(observed.params))
    except (KeyError, ValueError, TypeError):  # unknown here, or parameters it does not take
        return None
    return system if system.dim == observed.dim else None


def _system_or_none(name: str, required: bool) -> systems.System | None:
    try:
        return systems.get(name)
    except (KeyError, ValueError) as exc:
        if required:
            raise ConfigError(f"unknown system {name!r}; choose one of "
                              f"{', '.join(systems.names())}") from exc
        return None


def sample_windows(y: Tensor, batch_time: int, batch_size: int,
                   generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random windows of ``batch_time`` consecutive points (the torchdiffeq demo's scheme).

    Parameters
    ----------
    y : (n_traj, n_train, dim) training states.
    batch_time : points per window (≥ 2, ≤ n_train).
    batch_size : number of windows.
    generator : the source of randomness (its state is checkpointed).

    Returns
    -------
    y0 : (batch_size, dim) window starts.
    target : (batch_time, batch_size, dim) observed states along each window.
    """
    n_traj, n_train, _ = y.shape
    if batch_time > n_train:
        raise ConfigError(f"batch_time={batch_time} exceeds the {n_train} training points; "
                          "lower batch_time or raise train_fraction")
    traj = torch.randint(n_traj, (batch_size,), generator=generator)
    start = torch.randint(n_train - batch_time + 1, (batch_size,), generator=generator)
    offsets = torch.arange(batch_time)
    rows = y[traj[None, :], start[None, :] + offsets[:, None]]     # (batch_time, batch_size, dim)
    return rows[0], rows
