"""Read and write :class:`Trajectories` as ``.npz`` or ``.csv``.

Reading is the boundary where foreign bytes enter: :func:`load` validates
everything and raises one exception type, :class:`TrajectoryFileError`, whose
message is one line naming the file and the problem.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ._registry import get
from .base import System
from .trajectories import Trajectories

__all__ = ["TrajectoryFileError", "load", "read_regular_file", "save"]

_META_PREFIX = "# systems-metadata: "
_REAL_KINDS = "iuf"  # signed/unsigned integers and floats; not bool, complex, strings, objects
# What numpy's .npz reader raises on damaged archives, found by fuzzing: bad zip structure,
# CRC or deflate data, an unknown compression method (NotImplementedError), an "encrypted"
# flag (RuntimeError), a header declaring a huge array (MemoryError), a bad header (ValueError).
_NPZ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error,
               NotImplementedError, RuntimeError, MemoryError, OverflowError)
# str.splitlines() breaks lines at all of these; a message must show them escaped.
_LINE_BREAKS = {c: repr(chr(c))[1:-1] for c in (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85,
                                               0x2028, 0x2029)}


class TrajectoryFileError(ValueError):
    """A trajectory file cannot be read; ``str()`` is one line naming the file and the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(message.translate(_LINE_BREAKS))


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

    A hand-written CSV (UTF-8) needs a header row ``traj,t,<state>,...`` and
    one row per (trajectory, time); all trajectories must share the time grid
    of at least 2 points. Lines starting with ``#`` are comments. ``system``
    (a name or a :class:`System`) checks the state dimension and fills in the
    system's name and parameters when the file does not carry them.

    Raises
    ------
    TrajectoryFileError
        (a ``ValueError``) for every problem with the file — missing, not a
        regular file, unreadable, not UTF-8, malformed, wrong shapes or
        types, non-finite values — with a one-line message naming the file.
    """
    path = Path(path)
    try:
        suffix = _suffix(path)
        try:
            raw = read_regular_file(path)
        except FileNotFoundError:
            raise ValueError("no such file") from None
        fields = _read_npz(raw) if suffix == ".npz" else _read_csv(raw)
        if np.shape(fields["t"])[0] < 2:
            raise ValueError(f"only {np.shape(fields['t'])[0]} time point(s); a trajectory "
                             "needs at least 2")
        if system is not None:
            fields = _apply_system(fields, get(system) if isinstance(system, str) else system)
        return Trajectories(**fields)
    except ValueError as error:  # includes UnknownSystemError for a bad ``system`` name
        message = str(error)
        raise TrajectoryFileError(
            message if message.startswith(str(path)) else f"{path}: {message}") from None


def read_regular_file(path: str | Path) -> bytes:
    """The bytes of the regular file ``path``; a FIFO or device is refused without
    blocking on it (opened non-blocking, then checked).

    Raises
    ------
    FileNotFoundError : no such file (callers word it their way).
    ValueError : a directory, not a regular file, or unreadable; the message is
        the reason alone (``"is a directory"``), for the caller
        to prefix with the file's name.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ValueError("is a directory") from None
    except OSError as error:
        raise ValueError(f"cannot open: {error.strerror or error}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ValueError("is a directory")
        if not stat.S_ISREG(mode):
            raise ValueError("is not a regular file (a pipe, socket or device?)")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as error:
        raise ValueError(f"cannot read: {error.strerror or error}") from None
    finally:
        os.close(fd)


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
    """``{"system": str | null, "params": {name: value} | null}`` → fields."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupt metadata: {error}") from None
    except RecursionError:
        raise ValueError("corrupt metadata: JSON nested too deeply") from None
    if not isinstance(meta, dict):
        raise ValueError(f"corrupt metadata: expected a JSON object "
                         f"{{\"system\": ..., \"params\": {{...}}}}, got {_json_type(meta)}")
    name, params = meta.get("system"), meta.get("params")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"corrupt metadata: 'system' must be a name or null, got {name!r:.60}")
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"corrupt metadata: 'params' must be an object of parameter values "
                         f"or null, got {params!r:.60}")
    return {"system": name, "params": _tuples(params or {})}


def _json_type(value: Any) -> str:
    for kind, name in ((dict, "an object"), (list, "an array"), (str, "a string"),
                       (bool, "a boolean"), ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return "null"


def _real_array(data: Any, name: str) -> np.ndarray:
    """A stored array as float64, refusing strings, booleans, complex and object arrays."""
    array = np.asarray(data)
    if array.dtype.kind not in _REAL_KINDS:
        raise ValueError(f"array {name!r} must hold real numbers, got dtype {array.dtype}")
    with np.errstate(all="ignore"):  # overflow to inf in the cast is reported just below
        out = array.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"array {name!r} contains non-finite values (NaN or inf)")
    return out


def _read_npz(raw: bytes) -> dict[str, Any]:
    try:
        data = np.load(io.BytesIO(raw), allow_pickle=False)
    except _NPZ_ERRORS as error:  # BadZipFile, refused pickle, truncated header, ...
        raise ValueError(f"not a readable .npz file ({type(error).__name__}: {error})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive (a single .npy array?); save with Trajectories.save")
    with data:
        missing = {"t", "y"} - set(data.files)
        if missing:
            raise ValueError(f"missing arrays {sorted(missing)} (found {data.files})")
        try:
            arrays = {name: data[name] for name in ("t", "y", "state_names", "metadata")
                      if name in data.files}
        except _NPZ_ERRORS as error:
            raise ValueError(f"cannot read the arrays ({type(error).__name__}: {error})") from None
    fields: dict[str, Any] = {"t": _real_array(arrays["t"], "t"),
                              "y": _real_array(arrays["y"], "y")}
    if fields["t"].ndim != 1:
        raise ValueError(f"'t' must be a 1-D array of times, got shape {fields['t'].shape}")
    if fields["y"].ndim != 3 or fields["y"].shape[1] != fields["t"].size:
        raise ValueError(f"'y' must have shape (n_traj, n_t={fields['t'].size}, dim), "
                         f"got {fields['y'].shape}")
    if "state_names" in arrays:
        names = np.asarray(arrays["state_names"])
        if names.ndim != 1 or names.dtype.kind != "U":
            raise ValueError(f"'state_names' must be a 1-D array of strings, got shape "
                             f"{names.shape} and dtype {names.dtype}")
        fields["state_names"] = tuple(str(s) for s in names)
    if "metadata" in arrays:
        meta = np.asarray(arrays["metadata"])
        if meta.ndim != 0 or meta.dtype.kind != "U":
            raise ValueError(f"'metadata' must be one JSON string, got shape {meta.shape} "
                             f"and dtype {meta.dtype}")
        fields.update(_parse_metadata(str(meta)))
    return fields


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # tolerate the byte-order mark spreadsheets write
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {raw[error.start]:#04x} at offset "
                         f"{error.start}); save the file as UTF-8") from None


def _read_csv(raw: bytes) -> dict[str, Any]:
    lines = _decode(raw).splitlines()
    meta: dict[str, Any] = {}
    body: list[tuple[int, str]] = []  # (1-based line number, text)
    for number, line in enumerate(lines, start=1):
        if line.startswith(_META_PREFIX):
            meta = _parse_metadata(line[len(_META_PREFIX):])
        elif line.strip() and not line.lstrip().startswith("#"):
            body.append((number, line))
    if not body:
        raise ValueError("empty file: expected a header row 'traj,t,<state>,...' and data rows")
    try:
        header = [name.strip() for name in next(csv.reader([body[0][1]]))]
        rows = list(csv.reader([line for _, line in body[1:]]))
    except csv.Error as error:
        raise ValueError(f"malformed CSV: {error}") from None
    missing = [c for c in ("traj", "t") if c not in header]
    if missing or len(header) < 3:
        raise ValueError(f"missing column(s) {missing or ['<state>']}: header is {header}; "
                         "expected 'traj,t,<state1>,<state2>,...'")
    if len(set(header)) != len(header) or "" in header:
        raise ValueError(f"empty or duplicate column names in header {header}")
    if not rows:
        raise ValueError("empty file: header but no data rows")
    table = np.empty((len(rows), len(header)))
    for row_index, (number, row) in enumerate(zip([n for n, _ in body[1:]], rows)):
        if len(row) != len(header):
            raise ValueError(f"ragged row at line {number}: {len(row)} fields, "
                             f"expected {len(header)} ({','.join(header)})")
        for col, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                raise ValueError(f"non-numeric value {cell!r:.40} at line {number}, "
                                 f"column {header[col]!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"non-finite value {cell!r:.40} (NaN/inf) at line {number}, "
                                 f"column {header[col]!r}")
            table[row_index, col] = value
    traj_col, t_col = table[:, header.index("traj")], table[:, header.index("t")]
    state_cols = [i for i, name in enumerate(header) if name not in ("traj", "t")]
    if np.any(traj_col != np.round(traj_col)):
        raise ValueError("column 'traj' must hold integer trajectory ids")
    ids = list(dict.fromkeys(traj_col.tolist()))  # order of first appearance
    times, states = [], []
    for traj_id in ids:
        rows_of = traj_col == traj_id
        t = t_col[rows_of]
        if np.any(t[1:] <= t[:-1]):
            raise ValueError(f"non-increasing time in trajectory {traj_id:.17g}; rows of a "
                             "trajectory must be sorted by strictly increasing t")
        times.append(t)
        states.append(table[rows_of][:, state_cols])
    for traj_id, t in zip(ids, times):
        if t.shape != times[0].shape or not np.array_equal(t, times[0]):
            raise ValueError(f"trajectories have different time grids: trajectory "
                             f"{traj_id:.17g} differs from trajectory {ids[0]:.17g}; "
                             "resample onto one shared grid")
    return {"t": times[0], "y": np.stack(states), **meta,
            "state_names": tuple(header[i] for i in state_cols)}
