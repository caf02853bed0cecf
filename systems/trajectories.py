"""``Trajectories``: sampled solutions on one shared time grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Trajectories"]


def _frozen(array: Any) -> np.ndarray:
    """A read-only float64 copy."""
    out = np.array(array, dtype=np.float64)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Trajectories:
    """``n_traj`` trajectories of a ``dim``-dimensional state on ``n_t`` shared times.

    Attributes
    ----------
    t : ndarray, shape (n_t,)
        Strictly increasing times, shared by all trajectories.
    y : ndarray, shape (n_traj, n_t, dim)
        States; finite.
    system : str or None
        Name of the generating system, if known.
    params : dict
        Parameters of the generating system (``{}`` if unknown).
    state_names : tuple of str
        ``dim`` names; default ``("y1", ..., "y<dim>")``.

    Arrays are stored as read-only float64 copies. Invalid input raises
    ``ValueError`` naming the problem.
    """

    t: np.ndarray
    y: np.ndarray
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    state_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        t, y = _frozen(self.t), _frozen(self.y)
        if t.ndim != 1 or t.size < 1:
            raise ValueError(f"time must be a non-empty 1-D array, got shape {t.shape}")
        if y.ndim != 3 or y.shape[1] != t.size or y.shape[0] < 1 or y.shape[2] < 1:
            raise ValueError(f"y must have shape (n_traj >= 1, n_t={t.size}, dim >= 1), "
                             f"got {y.shape}")
        if not np.all(np.isfinite(t)) or not np.all(np.isfinite(y)):
            raise ValueError("trajectories contain non-finite values (NaN or inf)")
        step_down = t[1:] <= t[:-1]  # not np.diff: t[i+1] - t[i] can overflow to inf
        if np.any(step_down):
            bad = int(np.argmax(step_down)) + 1
            raise ValueError(f"time must be strictly increasing; non-increasing time at "
                             f"index {bad} (t={t[bad]!r} after {t[bad - 1]!r})")
        names = tuple(self.state_names) or tuple(f"y{i + 1}" for i in range(y.shape[2]))
        if len(names) != y.shape[2]:
            raise ValueError(f"got {len(names)} state names for dimension {y.shape[2]}")
        if len(set(names)) != len(names) or {"traj", "t"} & set(names):
            raise ValueError(f"state names must be unique and not 'traj' or 't': {names}")
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "state_names", names)
        object.__setattr__(self, "params", dict(self.params))

    @property
    def n_traj(self) -> int:
        return self.y.shape[0]

    @property
    def n_t(self) -> int:
        return self.y.shape[1]

    @property
    def dim(self) -> int:
        return self.y.shape[2]

    def _replace(self, t: np.ndarray, y: np.ndarray) -> Trajectories:
        return Trajectories(t, y, self.system, self.params, self.state_names)

    def select(self, idx: int | slice | np.ndarray | list[int]) -> Trajectories:
        """Subset of trajectories (integer, slice, index array or boolean mask)."""
        y = self.y[idx]
        return self._replace(self.t, y[None] if y.ndim == 2 else y)

    def window(self, start: int | None = None, stop: int | None = None) -> Trajectories:
        """Time points ``start:stop`` (Python slice semantics) of every trajectory."""
        return self._replace(self.t[start:stop], self.y[:, start:stop])

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz`` or ``.csv`` (chosen by suffix); returns the path.

        CSV columns: ``traj``, ``t``, then one per state name, floats written
        with 17 significant digits so that loading is exact.
        """
        from ._io import save

        return save(self, path)
