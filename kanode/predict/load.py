"""Reload a trained run: :func:`load_run` gives its field, data and config (an ensemble: its members).

A run directory (``python -m kanode.fit --out RUN_DIR``) holds ``config.toml``
and ``checkpoints/``; the field is rebuilt from the config (the same
network and normalisation the fit built) and its checkpoint loaded, the data
re-read (or re-simulated) from the config. An ensemble directory
(``kanode.fit --seeds 0-3 --out E``) holds ``ensemble.json`` naming its
members' run directories; each member loads like a single run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..build import build_field
from ..config import ConfigError, FitConfig
from ..data import FitData, data_key, load_data
from ..ode import VectorField
from ..runs import RunDir, ensemble_member_dirs, is_ensemble_dir

__all__ = ["CHECKPOINTS", "LoadedEnsemble", "LoadedRun", "load_run"]

CHECKPOINTS = ("last", "best", "polished")  # which checkpoint load_run reads: checkpoints/<name>.pt
# ("polished": written by kanode.polish after the fit)


@dataclass(frozen=True)
class LoadedRun:
    """One trained run, as :func:`load_run` returns it.

    Attributes
    ----------
    path : the run directory.
    field : the trained vector field (float64, CPU, evaluation only: call it
        under ``torch.no_grad()`` or :func:`kanode.solve` it).
    data : the run's data (float64, CPU), split as the fit split it.
    config : the run's config, as in its ``config.toml``.
    checkpoint : which checkpoint the field holds ("last", "best" or "polished").
    """

    path: Path
    field: VectorField = dataclasses.field(repr=False)
    data: FitData = dataclasses.field(repr=False)
    config: FitConfig = dataclasses.field(repr=False)
    checkpoint: str = "last"

    @property
    def members(self) -> tuple["LoadedRun", ...]:
        """``(self,)``: a single run is an ensemble of one (as :attr:`LoadedEnsemble.members`)."""
        return (self,)


@dataclass(frozen=True)
class LoadedEnsemble:
    """An ensemble directory (``kanode.fit --seeds``): its members, which share one data set.

    ``members`` : one :class:`LoadedRun` per member, in the order of
    ``ensemble.json``; ``data`` and ``config`` are the first member's (the
    members differ in their seeds).
    """

    path: Path
    members: tuple[LoadedRun, ...] = dataclasses.field(repr=False)

    @property
    def data(self) -> FitData:
        return self.members[0].data

    @property
    def config(self) -> FitConfig:
        return self.members[0].config


def load_run(path: str | Path, checkpoint: str = "last") -> LoadedRun | LoadedEnsemble:
    """A run directory's trained field, data and config, or an ensemble directory's members.

    Parameters
    ----------
    path : a run directory (``config.toml``, ``checkpoints/``) or an ensemble
        directory (``ensemble.json``).
    checkpoint : "last" (default: the final model, the one the run's
        ``summary.json`` and figures describe; for a diverged run its last good
        checkpoint), "best" (the lowest training loss seen) or "polished" (:mod:`kanode.polish`).

    Returns
    -------
    :class:`LoadedRun` for a run directory, :class:`LoadedEnsemble` for an
    ensemble directory; both have ``data``, ``config`` and ``members``.

    Raises
    ------
    ConfigError : not a run or ensemble directory, a damaged or missing
        checkpoint, a data file that is gone, members fitted to different data
        (one line each).

    Examples
    --------
    >>> run = kanode.load_run("runs/hare_lynx-kan-20261205-101500")   # doctest: +SKIP
    >>> with torch.no_grad():
    ...     y = kanode.solve(run.field, run.data.y[:, 0], torch.linspace(1900, 1930, 301))
    """
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"run directory {path} does not exist")
    if is_ensemble_dir(path):
        members = tuple(_load_member(member, checkpoint) for member in ensemble_member_dirs(path))
        if not members:
            raise ConfigError(f"{path}/ensemble.json lists no members")
        keys = {data_key(m.config) for m in members}
        if len(keys) != 1:
            raise ConfigError(f"the members of {path} were fitted to different data; load them one by one")
        return LoadedEnsemble(path, members)
    return _load_member(path, checkpoint)


def _load_member(path: Path, checkpoint: str) -> LoadedRun:
    run = RunDir(path)
    config = run.load_config()  # ConfigError: no directory, no or a damaged config.toml
    if not (path / "checkpoints" / f"{checkpoint}.pt").exists():
        raise ConfigError(f"{path} has no checkpoints/{checkpoint}.pt ("
                          + ("run `python -m kanode.polish` on it first)" if checkpoint == "polished" else
                             "a run killed before its first checkpoint holds no trained field)"))
    state = run.load_last() if checkpoint == "last" else run.load_best(checkpoint)
    work = config.replace(dtype="float64", device="cpu")
    try:
        data = load_data(work).to(torch.float64, "cpu")
    except ConfigError as exc:
        raise ConfigError(f"{path}: its data cannot be loaded ({exc}); config.toml names the data "
                          "it was fitted to") from None
    field_ = build_field(work, data)
    grid_size = state.get("grid_size")
    try:
        if grid_size and grid_size != getattr(field_.net, "grid_size", None):
            field_.net.extend_grid(int(grid_size))
        field_.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise ConfigError(f"{path}/checkpoints/{checkpoint}.pt does not hold this run's model ({detail}); "
                          "was the run directory edited?") from None
    field_.eval()
    return LoadedRun(path, field_.double(), data, config, checkpoint)
