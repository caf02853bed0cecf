"""Trajectories (from :mod:`systems` or a file) → tensors for training.

Measured data: a missing observation is NaN in ``FitData.y`` (never imputed);
the times ``t`` are the union of the trajectories' own times, so a trajectory
sampled at other times than another, or ending early, is NaN where it has no
observation. Every loss (:func:`observed_mse`) averages the squared errors
over the observed entries only. Every trajectory needs its full initial state
(its value at ``t[0]``): the solve starts there (a trajectory whose first
value is missing is refused by :func:`load_data`, with a message).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import systems

from .config import ConfigError, FitConfig

__all__ = ["FitData", "load_data", "recorded_system", "sample_windows", "window_times", "take_windows",
           "observed_mse", "split_counts", "describe_split", "overfit_warning", "DATA_FIELDS", "data_key"]

# The config fields that decide what load_data returns (and its dtype and device).
DATA_FIELDS = ("system", "data", "n_traj", "n_test_traj", "noise", "y0_spread", "train_fraction",
               "holdout_last", "data_seed", "dtype", "device")

# Window offsets closer than this fraction of the time span are one output time.
_TIME_ROUNDING = 1e-9


def data_key(config: FitConfig) -> tuple:
    """Configs with equal keys get the same data from :func:`load_data`."""
    return tuple(getattr(config, name) for name in DATA_FIELDS)


@dataclass(frozen=True)
class FitData:
    """Observed trajectories split for one fit.

    Attributes
    ----------
    t : (n_t,) the whole time grid (the union of the trajectories' own times).
    y : (n_traj, n_t, dim) training initial conditions, observed states;
        NaN where a value is missing (the initial states ``y[:, 0]`` never are).
    y_held_out : (n_test, n_t, dim) held-out initial conditions (n_test may be 0).
    n_train : the first ``n_train`` time points are the training window,
        the rest the extrapolation window.
    system : the ground-truth system when known, else None.
    state_names : names of the ``dim`` state components.
    units : their units (``""`` where unknown), for plots, tables and formulas.
    """

    t: Tensor
    y: Tensor
    y_held_out: Tensor
    n_train: int
    system: systems.System | None
    state_names: tuple[str, ...]
    units: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return self.y.shape[-1]

    @property
    def labels(self) -> tuple[str, ...]:
        """Axis labels of the states: ``"name [unit]"`` where the unit is known, else the name."""
        units = self.units or ("",) * len(self.state_names)
        return tuple(f"{name} [{unit}]" if unit else name for name, unit in zip(self.state_names, units))

    @property
    def t_train(self) -> Tensor:
        """(n_train,) times of the training window."""
        return self.t[: self.n_train]

    @property
    def y_train(self) -> Tensor:
        """(n_traj, n_train, dim) states of the training window (NaN where missing)."""
        return self.y[:, : self.n_train]

    @property
    def train_states(self) -> Tensor:
        """(N, dim) the fully observed states of the training window (for scales and
        regularisers that need whole states)."""
        states = self.y_train.reshape(-1, self.dim)
        return states[~torch.isnan(states).any(dim=1)]

    @property
    def n_observed_train(self) -> int:
        """Observed numbers (state components) the training loss sees."""
        return int((~torch.isnan(self.y_train)).sum())

    @property
    def n_observed_held_out(self) -> int:
        """Observed numbers held out: after the training window, and of held-out trajectories."""
        return int((~torch.isnan(self.y[:, self.n_train:])).sum()
                   + (~torch.isnan(self.y_held_out)).sum())

    @property
    def loss_scale(self) -> float:
        """Mean square of the observed training values: the data's unit of squared error.
        The fit scales Adam's ``eps`` by it, so that a fit of c·y is the fit of y with its
        losses times c² (README "Fitting")."""
        values = self.y_train[~torch.isnan(self.y_train)]
        return float(values.pow(2).mean()) or 1.0

    @property
    def has_extrapolation(self) -> bool:
        """Whether anything is observed after the training window."""
        return self.n_train < self.t.shape[0] and bool((~torch.isnan(self.y[:, self.n_train:])).any())

    def to(self, dtype: torch.dtype, device: torch.device | str) -> "FitData":
        return FitData(self.t.to(dtype=dtype, device=device), self.y.to(dtype=dtype, device=device),
                       self.y_held_out.to(dtype=dtype, device=device), self.n_train,
                       self.system, self.state_names, self.units)


def observed_mse(pred: Tensor, target: Tensor, member_dim: int | None = None) -> Tensor:
    """Mean squared error over the observed (non-NaN) entries of ``target``.

    pred, target : tensors of one shape; NaN in ``target`` marks a missing
    value, which adds nothing to the sum nor to the count (and no gradient).
    Without missing values it is ``torch.mean((pred - target) ** 2)``.
    Returns a scalar (NaN when nothing is observed); with ``member_dim``, the
    (M,) MSE of each member along that axis, each member's squared errors
    summed as one contiguous row (so a member's loss does not depend on how
    many companions it has: an ensemble member's is its single fit's).
    """
    observed = ~torch.isnan(target)
    complete = bool(observed.all())
    if complete:
        err = pred - target
    else:
        err = torch.where(observed, pred - torch.nan_to_num(target),
                          torch.zeros((), dtype=pred.dtype, device=pred.device))
    if member_dim is None:
        return torch.mean(err ** 2) if complete else (err ** 2).sum() / observed.sum()
    rows = err.movedim(member_dim, 0)
    rows = rows.reshape(rows.shape[0], -1)                                  # (M, rest)
    if complete:
        return (rows ** 2).mean(dim=1)
    count = observed.movedim(member_dim, 0).reshape(rows.shape[0], -1).sum(dim=1)
    return (rows ** 2).sum(dim=1) / count


def load_data(config: FitConfig) -> FitData:
    """Build the training data a config asks for.

    With ``config.data`` empty, trajectories of ``config.system`` are simulated
    (``systems.make_dataset``); otherwise the ``.npz``/``.csv`` file is read
    with ``systems.load`` and split the same way. The split follows
    ``config.holdout_last``, or :attr:`FitConfig.training_fraction` and
    :attr:`FitConfig.held_out_trajectories` (their defaults depend on whether
    the data is simulated or read from a file).

    Raises
    ------
    ConfigError : unknown system; a data file that is missing, not a regular
        file, unreadable or malformed (any :class:`systems.TrajectoryFileError`);
        a split that leaves too little; a trajectory whose initial state
        (its values at the first time of the file) is not fully observed.
    """
    system = _system_or_none(config.system, required=not config.data)
    split = dict(train_fraction=config.training_fraction, n_test_traj=config.held_out_trajectories,
                 holdout_last=config.holdout_last)
    if config.data:
        path = Path(config.data)
        if not path.exists():
            raise ConfigError(f"data file {path} does not exist")
        try:  # the file is validated by its reader: one error type, one line
            observed = systems.load(path)
        except systems.TrajectoryFileError as exc:
            raise ConfigError(f"data file {exc}") from None
        try:
            dataset = systems.split(observed, seed=config.data_seed, **split)
        except ValueError as exc:
            raise ConfigError(f"data file {path}: {exc}") from None
        system = recorded_system(observed)  # the truth only where the file says what made it
        _check_initial_states(observed, path)
    else:
        assert system is not None
        try:
            dataset = systems.make_dataset(
                system, n_traj=config.n_traj, noise=config.noise,
                y0_spread=config.y0_spread, seed=config.data_seed, **split)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    observed = dataset.observed
    t = torch.tensor(np.array(observed.t, dtype=np.float64))
    y_all = torch.tensor(np.array(observed.y, dtype=np.float64))
    train_idx = torch.as_tensor(np.asarray(dataset.train_idx, dtype=np.int64))
    test_idx = torch.as_tensor(np.asarray(dataset.test_idx, dtype=np.int64))
    return FitData(t=t, y=y_all[train_idx], y_held_out=y_all[test_idx],
                   n_train=int(dataset.n_train_times), system=system,
                   state_names=tuple(observed.state_names), units=tuple(observed.units))


def _check_initial_states(observed: systems.Trajectories, path: Path) -> None:
    """Refuse trajectories whose state at the first time of the file is incomplete."""
    missing = np.isnan(observed.y[:, 0])                                 # (n_traj, dim)
    if missing.any():
        i = int(np.argmax(missing.any(axis=1)))
        names = ", ".join(n for n, m in zip(observed.state_names, missing[i]) if m)
        raise ConfigError(f"data file {path}: trajectory {i} (in file order) has no value of {names} "
                          f"at the first time t = {observed.t[0]:g}; a fit starts every trajectory "
                          "from its full state at the file's first time: give that value, or drop "
                          "the trajectory's rows (or the file's rows) before its first complete one")


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
                   generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random windows of ``batch_time`` consecutive points (the torchdiffeq demo's scheme).

    A window starts only at a fully observed state; missing values inside it
    stay NaN in ``target`` (:func:`observed_mse` skips them). Without missing
    values the draws are those of the plain scheme (trajectory, then start).

    Parameters
    ----------
    y : (n_traj, n_train, dim) training states (NaN where missing).
    batch_time : points per window (≥ 2, ≤ n_train).
    batch_size : number of windows.
    generator : the source of randomness (its state is checkpointed).

    Returns
    -------
    y0 : (batch_size, dim) window starts.
    target : (batch_time, batch_size, dim) observed states along each window.
    start : (batch_size,) index of each window's first point (for :func:`window_times`).
    """
    n_traj, n_train, _ = y.shape
    if batch_time > n_train:
        raise ConfigError(f"batch_time={batch_time} exceeds the {n_train} training points; "
                          "lower batch_time or raise train_fraction")
    n_start = n_train - batch_time + 1
    startable = ~torch.isnan(y[:, :n_start]).any(dim=2)                  # (n_traj, n_start)
    if bool(startable.all()):
        traj = torch.randint(n_traj, (batch_size,), generator=generator)
        start = torch.randint(n_start, (batch_size,), generator=generator)
    else:
        flat = startable.reshape(-1).nonzero().flatten().cpu()           # (n_valid,)
        if not flat.numel():
            raise ConfigError(f"no window of batch_time={batch_time} points starts at a fully "
                              "observed state; lower batch_time")
        pick = flat[torch.randint(flat.numel(), (batch_size,), generator=generator)]
        traj, start = pick // n_start, pick % n_start
    offsets = torch.arange(batch_time)
    rows = y[traj[None, :], start[None, :] + offsets[:, None]]     # (batch_time, batch_size, dim)
    return rows[0], rows, start


def window_times(t: Tensor, start: Tensor, batch_time: int) -> tuple[Tensor, Tensor | None]:
    """The times to solve windows at, from 0, and where each window's points fall.

    On a uniform grid every window has the times ``t[:batch_time] - t[0]``
    (returned, with index None). On an irregular grid windows have their
    own times; they are solved together at the union of their offsets
    (offsets within 1e-9 of the span are merged), and ``index`` says which
    output row holds each window point (:func:`take_windows`).

    Parameters
    ----------
    t : (n_t,) times.
    start : (..., batch) first index of each window (e.g. (batch,) or (M, batch)).

    Returns
    -------
    t_solve : (n_out,) increasing times from 0.
    index : (batch_time, ..., batch) long, or None when ``t_solve`` is the windows' own grid.
    """
    steps = torch.arange(batch_time, device=t.device)
    start = start.to(t.device)
    offsets = t[start[..., None] + steps] - t[start][..., None]       # (..., batch, batch_time)
    base = t[:batch_time] - t[0]                                        # (batch_time,)
    tol = _TIME_ROUNDING * float(t[-1] - t[0])
    if float((offsets - base).abs().max()) <= tol:
        return base, None
    values, order = offsets.reshape(-1).sort()
    new = torch.ones_like(values, dtype=torch.bool)
    new[1:] = torch.diff(values) > tol                                  # a new output time
    cluster = torch.cumsum(new.long(), 0) - 1                           # output row of each sorted offset
    index = torch.empty_like(cluster)
    index[order] = cluster
    return values[new], index.reshape(offsets.shape).movedim(-1, 0)


def take_windows(pred: Tensor, index: Tensor | None) -> Tensor:
    """Each window's points from a solve at :func:`window_times`.

    pred : (n_out, ..., batch, dim) solution at ``t_solve``.
    index : (batch_time, ..., batch) from :func:`window_times`, or None.
    Returns (batch_time, ..., batch, dim).
    """
    if index is None:
        return pred
    return pred.gather(0, index[..., None].expand(*index.shape, pred.shape[-1]))


def split_counts(data: FitData) -> dict[str, int]:
    """How much data a fit trains on and holds out: observed numbers (state components) and
    time points of the training window; numbers after the window and in held-out trajectories."""
    train_times = int((~torch.isnan(data.y_train)).any(dim=(0, 2)).sum())
    return {"n_observed_train": data.n_observed_train, "n_train_times": train_times,
            "n_observed_held_out": data.n_observed_held_out,
            "n_held_out_times": int((~torch.isnan(data.y[:, data.n_train:])).any(dim=(0, 2)).sum()),
            "n_held_out_traj": int(data.y_held_out.shape[0])}


def describe_split(counts: dict[str, int]) -> str:
    """One line from :func:`split_counts`: what was trained on and what was held out."""
    held = [f"{counts['n_held_out_times']} later time points"] if counts["n_held_out_times"] else []
    if counts["n_held_out_traj"]:
        n = counts['n_held_out_traj']
        held.append(f"{n} held-out {'trajectory' if n == 1 else 'trajectories'}")
    return (f"trained on {counts['n_observed_train']} observed values at {counts['n_train_times']} "
            f"time points; held out {counts['n_observed_held_out']} values"
            + (f" ({', '.join(held)})" if held else ""))


def overfit_warning(n_params: int, n_observed: int) -> str | None:
    """One line when a model has more parameters than the observed numbers it is fitted to."""
    if n_params <= n_observed:
        return None
    return (f"the model has {n_params} parameters for {n_observed} observed training values; it can "
            "fit the noise: judge it on held-out points (--holdout-last K) or use a smaller model")
