"""A forecast as CSV, in the format trajectory files come in (``traj,t,<state names>``).

One row per trajectory and time. A single run's file is a trajectory file
(``systems.load`` reads it). An ensemble's adds, per state, the band across
its members as two columns ``<name>_<low>`` and ``<name>_<high>`` after the
state columns (which hold the median): ``_min``/``_max`` for the members'
range, ``_q05``/``_q95`` for the 5 %–95 % quantiles (:func:`band_names`).
Numbers are written in full precision (``repr``), so the file holds the
solve's values exactly.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..checkpoints import atomic_write
from .forecast import Forecast, band_names

__all__ = ["write_forecast_csv", "forecast_columns"]


def forecast_columns(state_names: tuple[str, ...], coverage: float | None) -> list[str]:
    """The header: ``traj, t``, the states, and with a band (``coverage`` not None) its columns."""
    header = ["traj", "t", *state_names]
    if coverage is not None:
        low, high = band_names(coverage)
        header += [f"{name}_{side}" for name in state_names for side in (low, high)]
    return header


def write_forecast_csv(path: str | Path, result: Forecast, coverage: float | None = None) -> Path:
    """Write ``result`` to ``path`` (atomically): the median (a single member: its
    trajectory) and, with ``coverage``, the band across the members. Returns the path.

    Raises ValueError when every member's solve failed.
    """
    center = result.median()                                    # (n, n_t, dim)
    bands = result.band(coverage) if coverage is not None else None
    path = Path(path)

    def write(handle) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(forecast_columns(result.state_names, coverage))
        for k in range(center.shape[0]):
            for i, t in enumerate(result.t):
                row = [str(k), repr(float(t)), *(repr(float(v)) for v in center[k, i])]
                if bands is not None:
                    low, high = bands
                    row += [repr(float(side[k, i, d])) for d in range(center.shape[-1]) for side in (low, high)]
                writer.writerow(row)

    atomic_write(path, write, binary=False)
    return path
