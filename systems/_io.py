"""Read and write :class:`Trajectories` as ``.npz`` or ``.csv``.

Measured data enters here. A CSV has one row per (trajectory, time) and a
header ``traj,t,<state>,...``; a state column may carry its unit in square
brackets, ``hare [thousands]`` (name ``hare``, unit ``thousands``; a header
without brackets has no units, as before). A state cell that is empty or
``nan`` is a missing observation (NaN in ``Trajectories.y`` and in a
``.npz``'s ``y``); ``traj`` and ``t`` cells are never missing. Each
trajectory has its own times (irregular, of different lengths); they are
placed on the union of all trajectories' times, NaN where a trajectory has
no row.

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
import re
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
_UNIT_HEADER = re.compile(r"^(?P<name>.*?)\s*\[(?P<unit>[^\[\]]*)\]$")  # "hare [thousands]"
_MISSING_CELLS = ("", "nan")  # a state cell that is one of these (stripped, any case) is missing
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
                     units=np.array(traj.units), metadata=np.array(_metadata(traj)))
        return path
    columns = [f"{name} [{unit}]" if unit else name
               for name, unit in zip(traj.state_names, traj.units)]
    lines = [_META_PREFIX + _metadata(traj), ",".join(["traj", "t"] + columns)]
    observed = traj.observed.any(axis=2)                    # (n_traj, n_t): a trajectory's own times
    nobody = ~observed.any(axis=0)                          # (n_t,) times no trajectory observed
    for i in range(traj.n_traj):
        for k in np.flatnonzero(observed[i] | nobody):      # a time nobody observed keeps its rows
            cells = ["" if math.isnan(v) else f"{v:.17g}" for v in traj.y[i, k]]
            lines.append(",".join([str(i), f"{traj.t[k]:.17g}"] + cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(path: str | Path, system: str | System | None = None) -> Trajectories:
    """Read trajectories written by :meth:`Trajectories.save` or by hand.

    A hand-written CSV (UTF-8) needs a header row ``traj,t,<state>,...``
    (a state may be written ``name [unit]``) and one row per (trajectory,
    time), the rows of a trajectory sorted by strictly increasing time.
    Trajectories may have their own times; the result holds them on the
    union grid (at least 2 times), NaN where a trajectory has no row. An
    empty or ``nan`` state cell is a missing value (NaN). Lines starting with
    ``#`` are comments. ``system``
    (a name or a :class:`System`) checks the state dimension and fills in the
    system's name and parameters when the file does not carry them.

    Raises
    ------
    TrajectoryFileError
        (a ``ValueError``) for every problem with the file — missing, not a
        regular file, unreadable, not UTF-8, malformed, wrong shapes or
        types, infinite values, a trajectory without any observation — with a
        one-line message naming the file.
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


def _real_array(data: Any, name: str, missing: bool = False) -> np.ndarray:
    """A stored array as float64, refusing strings, booleans, complex and object arrays;
    NaN (a missing value) is allowed with ``missing``, inf never."""
    array = np.asarray(data)
    if array.dtype.kind not in _REAL_KINDS:
        raise ValueError(f"array {name!r} must hold real numbers, got dtype {array.dtype}")
    with np.errstate(all="ignore"):  # overflow to inf in the cast is reported just below
        out = array.astype(np.float64)
    if np.any(np.isinf(out)) or (not missing and np.any(np.isnan(out))):
        allowed = " (NaN marks a missing value)" if missing else ""
        raise ValueError(f"array {name!r} contains non-finite values{allowed}: "
                         f"{'inf' if missing else 'NaN or inf'}")
    return out


def _check_observed(y: np.ndarray, ids: list[Any]) -> None:
    """Every trajectory (y: (n_traj, n_t, dim)) has at least one observed value."""
    empty = np.isnan(y).all(axis=(1, 2))
    if np.any(empty):
        raise ValueError(f"trajectory {ids[int(np.argmax(empty))]} has no observed value "
                         "(every state cell is missing)")


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
            arrays = {name: data[name] for name in ("t", "y", "state_names", "units", "metadata")
                      if name in data.files}
        except _NPZ_ERRORS as error:
            raise ValueError(f"cannot read the arrays ({type(error).__name__}: {error})") from None
    fields: dict[str, Any] = {"t": _real_array(arrays["t"], "t"),
                              "y": _real_array(arrays["y"], "y", missing=True)}
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
    if "units" in arrays:
        units = np.asarray(arrays["units"])
        if units.ndim != 1 or units.dtype.kind != "U":
            raise ValueError(f"'units' must be a 1-D array of strings, got shape "
                             f"{units.shape} and dtype {units.dtype}")
        fields["units"] = tuple(str(u) for u in units)
    _check_observed(fields["y"], list(range(fields["y"].shape[0])))
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
        columns = [name.strip() for name in next(csv.reader([body[0][1]]))]
        rows = list(csv.reader([line for _, line in body[1:]]))
    except csv.Error as error:
        raise ValueError(f"malformed CSV: {error}") from None
    header, units = _split_units(columns)
    missing = [c for c in ("traj", "t") if c not in header]
    if missing or len(header) < 3:
        raise ValueError(f"missing column(s) {missing or ['<state>']}: header is {header}; "
                         "expected 'traj,t,<state1>,<state2>,...'")
    if len(set(header)) != len(header) or "" in header:
        raise ValueError(f"empty or duplicate column names in header {header}")
    if not rows:
        raise ValueError("empty file: header but no data rows")
    table = np.empty((len(rows), len(header)))
    keys = {header.index("traj"), header.index("t")}  # never missing
    for row_index, (number, row) in enumerate(zip([n for n, _ in body[1:]], rows)):
        if len(row) != len(header):
            raise ValueError(f"ragged row at line {number}: {len(row)} fields, "
                             f"expected {len(header)} ({','.join(columns)})")
        for col, cell in enumerate(row):
            if col not in keys and cell.strip().lower() in _MISSING_CELLS:
                table[row_index, col] = math.nan  # a missing observation
                continue
            try:
                value = float(cell)
            except ValueError:
                raise ValueError(f"non-numeric value {cell!r:.40} at line {number}, "
                                 f"column {header[col]!r}") from None
            if not math.isfinite(value):
                hint = "" if col in keys else "; leave the cell empty for a missing value"
                raise ValueError(f"non-finite value {cell!r:.40} (NaN/inf) at line {number}, "
                                 f"column {header[col]!r}{hint}")
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
    grid = np.unique(np.concatenate(times))  # the union of the trajectories' own times
    y = np.full((len(ids), grid.size, len(state_cols)), math.nan)
    for i, (t, values) in enumerate(zip(times, states)):
        y[i, np.searchsorted(grid, t)] = values
    _check_observed(y, [f"{traj_id:.17g}" for traj_id in ids])
    return {"t": grid, "y": y, **meta, "state_names": tuple(header[i] for i in state_cols),
            "units": tuple(units[i] for i in state_cols)}


def _split_units(columns: list[str]) -> tuple[list[str], list[str]]:
    """Header cells ``name`` or ``name [unit]`` → names and units (``""`` without brackets)."""
    names, units = [], []
    for column in columns:
        match = _UNIT_HEADER.match(column)
        names.append(match["name"].strip() if match else column)
        units.append(match["unit"].strip() if match else "")
    return names, units
