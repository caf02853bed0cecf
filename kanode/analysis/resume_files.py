"""The files ``analysis hessian --resume`` reuses: ``OUT/NAME/row.json`` and ``hessian.npz``.

Both are checked before any run is analysed; a damaged one is a ConfigError
(one line naming the file and saying to delete it), never a traceback.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kanode.config import ConfigError

__all__ = ["ROW_TYPES", "read_analysed"]

# Fields of row.json the command reads again, with their JSON types.
ROW_TYPES: dict[str, tuple[type, ...]] = {
    "n_params": (int,), "method": (str,), "lambda_max": (int, float), "lambda_min": (int, float),
    "trace": (int, float), "time_s": (int, float),
}
MAX_ROW_BYTES = 1_000_000  # a row is ~1 kB


def _damaged(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path} {what}; delete it (or run without --resume) to analyse the run again")


def _read_row(path: Path) -> dict[str, Any]:
    try:
        if not path.is_file():
            raise _damaged(path, "is not a regular file")
        if path.stat().st_size > MAX_ROW_BYTES:
            raise _damaged(path, f"is larger than {MAX_ROW_BYTES} bytes")
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"cannot be read ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise _damaged(path, f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise _damaged(path, "is JSON nested too deeply") from None
    if not isinstance(row, dict):
        raise _damaged(path, f"must hold a JSON object, not {type(row).__name__}")
    for key, types in ROW_TYPES.items():
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, types):
            shown = "missing" if key not in row else json.dumps(value)[:40]
            raise _damaged(path, f"has {key} = {shown}, not a {types[0].__name__}")
    return row


def _read_eigenvalues(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            values = np.asarray(npz["eigenvalues"])
    except FileNotFoundError:
        raise _damaged(path, "is missing next to its row.json") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise _damaged(path, f"cannot be read as a Hessian ({type(exc).__name__})") from None
    if values.ndim != 1 or values.size == 0 or values.dtype.kind != "f":
        raise _damaged(path, f"holds eigenvalues of shape {values.shape} and dtype {values.dtype}, "
                             "not a non-empty float vector")
    return values


def read_analysed(directory: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    """``(row, eigenvalues)`` of an analysed run's output directory; None when it
    holds no ``row.json`` (the run is to be analysed). ConfigError when damaged."""
    row_path = directory / "row.json"
    if not row_path.exists() and not row_path.is_symlink():
        return None
    return _read_row(row_path), _read_eigenvalues(directory / "hessian.npz")
