"""Where a command may write: its ``--out`` checked before any work.

Every command that writes a directory (``kanode.fit``, ``fit --seeds``,
``kanode.sweep``, ``kanode.analysis``, a pack manifest's members) calls
:func:`check_out_dir` first. Refused, each with one line:

* a name the file system cannot hold: a path component longer than the
  file system's ``NAME_MAX`` (255 bytes on ext4) or a path longer than
  ``PATH_MAX`` (4096 bytes);
* an existing file that is not a directory;
* a directory inside a run directory (run directories never nest: a run is
  ``config.toml`` + ``metrics.csv``, or an ensemble's ``ensemble.json``);
* ``--out`` being a run of another kind than the command writes (a sweep or
  an ensemble into a single run, a single fit into an ensemble's parent,
  analysis results into either); see :func:`check_out_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError

__all__ = ["check_out_dir", "enclosing_run", "is_run_dir", "KINDS", "NAME_MAX", "PATH_MAX"]

NAME_MAX = 255   # bytes per path component (ext4, xfs, btrfs, tmpfs); os.pathconf is asked first
PATH_MAX = 4096  # bytes per path (Linux)


def is_run_dir(path: Path) -> bool:
    """A kanode run (``config.toml`` and ``metrics.csv``) or an ensemble's parent (``ensemble.json``)."""
    try:
        return (((path / "config.toml").is_file() and (path / "metrics.csv").is_file())
                or (path / "ensemble.json").is_file())
    except OSError:
        return False


def enclosing_run(path: Path) -> Path | None:
    """The nearest proper ancestor of ``path`` that is a run directory, or None."""
    for parent in path.absolute().parents:
        if is_run_dir(parent):
            return parent
    return None


def _name_max(path: Path) -> int:
    for folder in (path, *path.absolute().parents):
        try:
            if folder.is_dir():
                return int(os.pathconf(folder, "PC_NAME_MAX"))
        except (OSError, ValueError):
            continue
    return NAME_MAX


def _check_length(path: Path, option: str) -> None:
    limit = _name_max(path.absolute().parent)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise ConfigError(f"{option}: the path component {part[:40]!r}... is {size} bytes; the file "
                              f"system allows at most {limit}; choose a shorter name")
    size = len(os.fsencode(str(path.absolute())))
    if size > PATH_MAX:
        raise ConfigError(f"{option}: the path is {size} bytes; at most {PATH_MAX}; choose a shorter one")


KINDS = ("run", "ensemble", "sweep", "results")


def check_out_dir(out: str | Path, kind: str, option: str = "--out") -> Path:
    """``out`` as a Path, or ConfigError (one line) when a command must not write there.

    ``kind`` says what the command writes into ``out``:

    * ``"run"``: one run (``kanode.fit``). It may hold that run already (the
      fit itself refuses or restarts it) but not an ensemble.
    * ``"ensemble"``: member runs below it (``fit --seeds``); it may be an
      ensemble's parent already (its members say whether they can be reused)
      but not a single run.
    * ``"sweep"`` (cells below it) and ``"results"`` (``kanode.analysis``): it must
      not be a run or an ensemble.

    In every case ``out`` must not be a file or sit inside a run directory,
    and its name must fit the file system.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(out)
    if not str(out).strip():
        raise ConfigError(f"{option} must not be empty; give a directory")
    _check_length(path, option)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as exc:
        raise ConfigError(f"{option} {str(out)[:80]}: {exc.strerror or exc}") from None
    if exists and not is_dir:
        raise ConfigError(f"{option} {out} is a file, not a directory; choose a directory")
    outer = enclosing_run(path)
    if outer is not None:
        raise ConfigError(f"{option} {out} is inside the run directory {outer}; run directories "
                          "never nest: choose a directory outside it")
    if not is_dir or not is_run_dir(path):
        return path
    ensemble = (path / "ensemble.json").is_file()
    if kind == "run" and not ensemble or kind == "ensemble" and ensemble:
        return path
    what = "an ensemble (ensemble.json)" if ensemble else "a run (config.toml, metrics.csv)"
    raise ConfigError(f"{option} {out} holds {what}; run directories never nest: choose a new "
                      "directory")
