"""The members' data stacked on a member axis (each member may have its own noise and seeds):
what :class:`kanode.train.Trainer` trains on (one :class:`kanode.data.FitData` per member)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kanode.config import ConfigError
from kanode.data import FitData

__all__ = ["StackedData"]


@dataclass(frozen=True)
class StackedData:
    """Per-member trajectories on one shared time grid.

    Attributes
    ----------
    t : (n_t,) shared time grid.
    y : (M, n_traj, n_t, dim) each member's observed states, NaN where missing.
    y_held_out : (M, n_test, n_t, dim) each member's held-out trajectories.
    n_train : the shared training window length.
    members : the members' own :class:`kanode.data.FitData`.
    """

    t: Tensor
    y: Tensor
    y_held_out: Tensor
    n_train: int
    members: tuple[FitData, ...]

    @classmethod
    def stack(cls, datas: Sequence[FitData]) -> "StackedData":
        """Stack members' data; ConfigError unless they share the time grid and shapes."""
        first = datas[0]
        for m, data in enumerate(datas[1:], start=1):
            if data.y.shape != first.y.shape or data.y_held_out.shape != first.y_held_out.shape:
                raise ConfigError(f"member {m}'s data has shape {tuple(data.y.shape)} but member 0's "
                                  f"{tuple(first.y.shape)}; an ensemble's members need data of one shape")
            if data.n_train != first.n_train or not torch.equal(data.t, first.t):
                raise ConfigError(f"member {m}'s data has another time grid or training window than "
                                  "member 0's; an ensemble's members share them")
        return cls(first.t, torch.stack([d.y for d in datas]),
                   torch.stack([d.y_held_out for d in datas]), first.n_train, tuple(datas))

    def member(self, m: int) -> "StackedData":
        """Member m's data alone (an ensemble of one)."""
        return StackedData.stack([self.members[m]])

    @property
    def t_train(self) -> Tensor:
        """(n_train,) times of the training window."""
        return self.t[: self.n_train]

    @property
    def y_train(self) -> Tensor:
        """(M, n_traj, n_train, dim) states of the training window."""
        return self.y[:, :, : self.n_train]

    @property
    def has_extrapolation(self) -> bool:
        """Whether any member observes anything after the training window."""
        return self.n_train < self.t.shape[0] and bool((~torch.isnan(self.y[:, :, self.n_train:])).any())
