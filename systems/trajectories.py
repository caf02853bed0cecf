"""``Trajectories``: sampled or measured states on one (union) time grid, NaN where missing."""

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
    """``n_traj`` trajectories of a ``dim``-dimensional state on ``n_t`` times.

    Measured data has its own times per trajectory and missing values; both
    live on one grid: ``t`` is the union of all trajectories' times and a
    state component that was not observed at a time is NaN in ``y``
    (never imputed). A trajectory's own times are those where it has at
    least one observed component (:attr:`observed`); a trajectory that ends
    early is NaN after its last time.

    Attributes
    ----------
    t : ndarray, shape (n_t,)
        Strictly increasing finite times (the union of the trajectories' times).
    y : ndarray, shape (n_traj, n_t, dim)
        States; finite where observed, NaN where missing (inf is refused).
    system : str or None
        Name of the generating system, if known.
    params : dict
        Parameters of the generating system (``{}`` if unknown).
    state_names : tuple of str
        ``dim`` names; default ``("y1", ..., "y<dim>")``.
    units : tuple of str
        ``dim`` units (``""`` where unknown; the default).

    Arrays are stored as read-only float64 copies. Invalid input raises
    ``ValueError`` naming the problem.
    """

    t: np.ndarray
    y: np.ndarray
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    state_names: tuple[str, ...] = ()
    units: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        t, y = _frozen(self.t), _frozen(self.y)
        if t.ndim != 1 or t.size < 1:
            raise ValueError(f"time must be a non-empty 1-D array, got shape {t.shape}")
        if y.ndim != 3 or y.shape[1] != t.size or y.shape[0] < 1 or y.shape[2] < 1:
            raise ValueError(f"y must have shape (n_traj >= 1, n_t={t.size}, dim >= 1), "
                             f"got {y.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError("times contain non-finite values (NaN or inf)")
        if np.any(np.isinf(y)):
            raise ValueError("states contain inf; a missing value is NaN, a measured one finite")
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
        units = tuple(str(u) for u in self.units) or ("",) * len(names)
        if len(units) != len(names):
            raise ValueError(f"got {len(units)} units for dimension {len(names)}")
        object.__setattr__(self, "units", units)
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

    @property
    def observed(self) -> np.ndarray:
        """(n_traj, n_t, dim) bool: where a state component was observed (not NaN)."""
        return ~np.isnan(self.y)

    @property
    def complete(self) -> bool:
        """Whether every trajectory is observed in full at every time."""
        return not np.any(np.isnan(self.y))

    def own_times(self, i: int) -> np.ndarray:
        """The times at which trajectory ``i`` has at least one observed component."""
        return self.t[self.observed[i].any(axis=1)]

    def _replace(self, t: np.ndarray, y: np.ndarray) -> Trajectories:
        return Trajectories(t, y, self.system, self.params, self.state_names, self.units)

    def select(self, idx: int | slice | np.ndarray | list[int]) -> Trajectories:
        """Subset of trajectories (integer, slice, index array or boolean mask)."""
        y = self.y[idx]
        return self._replace(self.t, y[None] if y.ndim == 2 else y)

    def window(self, start: int | None = None, stop: int | None = None) -> Trajectories:
        """Time points ``start:stop`` (Python slice semantics) of every trajectory."""
        return self._replace(self.t[start:stop], self.y[:, start:stop])

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz`` or ``.csv`` (chosen by suffix); returns the path.

        CSV columns: ``traj``, ``t``, then one per state name (``name [unit]``
        where a unit is known), floats written with 17 significant digits so
        that loading is exact; a missing value is an empty cell, and a
        trajectory has rows only at its own times.
        """
        from ._io import save

        return save(self, path)
