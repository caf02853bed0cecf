"""Read and write :class:`Trajectories` as ``.npz`` or ``.csv``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ._registry import get
from .base import System
from .trajectories import Trajectories

__all__ = ["load", "save"]

_META_PREFIX = "# systems-metadata: "


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .npz or .csv")
    return suffix


def _metadata(traj: Trajectories) -> str:
    return json.dumps({"system": traj.system, "params": traj.params})


def _tuples(value: Any) -> Any:
    """JSON lists back to (nested) tuples, so parameters stay hashable."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def save(traj: Trajectories, path: str | Path) -> Path:
    """Write ``traj`` to ``path`` (``.npz`` or ``.csv``); returns the path."""
    path = Path(path)
    if _suffix(path) == ".npz":
        with path.open("wb") as handle:  # np.savez would append ".npz" to other names
            np.savez(handle, t=traj.t, y=traj.y, state_names=np.array(traj.state_names),
                     metadata=np.array(_metadata(traj)))
        return path
    rows = np.concatenate([
        np.repeat(np.arange(traj.n_traj), traj.n_t)[:, None],  # (n_traj * n_t, 1)
        np.tile(traj.t, traj.n_traj)[:, None],
        traj.y.reshape(-1, traj.dim),  # (n_traj * n_t, dim)
    ], axis=1)
    header = _META_PREFIX + _metadata(traj) + "\n" + ",".join(("traj", "t") + traj.state_names)
    np.savetxt(path, rows, fmt="%.17g", delimiter=",", header=header, comments="")
    return path


def load(path: str | Path, system: str | System | None = None) -> Trajectories:
    """Read trajectories written by :meth:`Trajectories.save` or by hand.

    A hand-written CSV needs a header row ``traj,t,<state>,...`` and one row
    per (trajectory, time); all trajectories must share the time grid.
    Lines starting with ``#`` are comments. ``system`` (a name or a
    :class:`System`) checks the state dimension and fills in the system's
    name and parameters when the file does not carry them.

    Raises ``ValueError`` naming the file and the problem.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        fields = _read_npz(path) if suffix == ".npz" else _read_csv(path)
        if system is not None:
            fields = _apply_system(fields, get(system) if isinstance(system, str) else system)
        return Trajectories(**fields)
    except ValueError as error:
        message = str(error)
        prefixed = message if message.startswith(str(path)) else f"{path}: {message}"
        raise ValueError(prefixed) from None


def _apply_system(fields: dict[str, Any], system: System) -> dict[str, Any]:
    dim = np.shape(fields["y"])[-1]
    if dim != system.dim:
        raise ValueError(f"dimension mismatch: file has {dim} state columns but "
                         f"{system.name} has dim {system.dim} ({', '.join(system.state_names)})")
    if fields.get("system") not in (None, system.name):
        raise ValueError(f"file is for system {fields['system']!r}, not {system.name!r}")
    fields["system"] = system.name
    fields["params"] = fields.get("params") or system.params
    return fields


def _parse_metadata(text: str) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupt metadata: {error}") from None
    return {"system": meta.get("system"), "params": _tuples(meta.get("params") or {})}


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as error:  # BadZipFile, OSError, refused pickle, ...
        raise ValueError(f"not a readable .npz file ({type(error).__name__}: {error})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive (a single .npy array?); save with Trajectories.save")
    with data:
        missing = {"t", "y"} - set(data.files)
        if missing:
            raise ValueError(f"missing arrays {sorted(missing)} (found {data.files})")
        fields: dict[str, Any] = {"t": data["t"], "y": data["y"]}
        if "state_names" in data.files:
            fields["state_names"] = tuple(str(s) for s in data["state_names"])
        if "metadata" in data.files:
            fields.update(_parse_metadata(str(data["metadata"])))
    return fields


def _read_csv(path: Path) -> dict[str, Any]:
    with path.open(newline="") as handle:
        lines = handle.read().splitlines()
    meta: dict[str, Any] = {}
    body: list[tuple[int, str]] = []  # (1-based line number, text)
    for number, line in enumerate(lines, start=1):
        if line.startswith(_META_PREFIX):
            meta = _parse_metadata(line[len(_META_PREFIX):])
        elif line.strip() and not line.lstrip().startswith("#"):
            body.append((number, line))
    if not body:
        raise ValueError("empty file: expected a header row 'traj,t,<state>,...' and data rows")
    header = [name.strip() for name in next(csv.reader([body[0][1]]))]
    missing = [c for c in ("traj", "t") if c not in header]
    if missing or len(header) < 3:
        raise ValueError(f"missing column(s) {missing or ['<state>']}: header is {header}; "
                         "expected 'traj,t,<state1>,<state2>,...'")
    if len(set(header)) != len(header):
        raise ValueError(f"duplicate column names in header {header}")
    if len(body) < 2:
        raise ValueError("empty file: header but no data rows")
    table = np.empty((len(body) - 1, len(header)))
    for row_index, (number, row) in enumerate(zip([n for n, _ in body[1:]],
                                                  csv.reader([line for _, line in body[1:]]))):
        if len(row) != len(header):
            raise ValueError(f"ragged row at line {number}: {len(row)} fields, "
                             f"expected {len(header)} ({','.join(header)})")
        for col, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                raise ValueError(f"non-numeric value {cell!r} at line {number}, "
                                 f"column {header[col]!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"non-finite value {cell!r} (NaN/inf) at line {number}, "
                                 f"column {header[col]!r}")
            table[row_index, col] = value
    traj_col, t_col = table[:, header.index("traj")], table[:, header.index("t")]
    state_cols = [i for i, name in enumerate(header) if name not in ("traj", "t")]
    if np.any(traj_col != np.round(traj_col)):
        raise ValueError("column 'traj' must hold integer trajectory ids")
    ids = list(dict.fromkeys(traj_col.tolist()))  # order of first appearance
    times, states = [], []
    for traj_id in ids:
        rows = traj_col == traj_id
        t = t_col[rows]
        if np.any(np.diff(t) <= 0):
            raise ValueError(f"non-increasing time in trajectory {int(traj_id)}; rows of a "
                             "trajectory must be sorted by strictly increasing t")
        times.append(t)
        states.append(table[rows][:, state_cols])
    for traj_id, t in zip(ids, times):
        if t.shape != times[0].shape or not np.array_equal(t, times[0]):
            raise ValueError(f"trajectories have different time grids: trajectory "
                             f"{int(traj_id)} differs from trajectory {int(ids[0])}; "
                             "resample onto one shared grid")
    return {"t": times[0], "y": np.stack(states), **meta,
            "state_names": tuple(header[i] for i in state_cols)}
