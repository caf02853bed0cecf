"""Run directories: config, per-step metrics, atomic checkpoints, summary.

Layout::

    RUN_DIR/
      config.toml          the complete FitConfig (reruns the fit)
      metrics.csv          one row per optimiser step (METRIC_COLUMNS)
      checkpoints/last.pt  latest state, for --resume
      checkpoints/best.pt  parameters with the lowest whole-trajectory training loss (plus
                           the penalty, with l2 or a regulariser)
      checkpoints/previous.pt  an ensemble member's checkpoint before its last one, so that
                           members killed while checkpointing one by one resume at one step
      summary.json         written when the run ends (status, losses, timing)
      plots/               figures of the run
      .kanode.lock         held (flock) by the process writing the run

Checkpoints (checksummed ``torch.save`` files) are written and verified by
:mod:`kanode.checkpoints`; its names are importable from here too. Every
reader raises :class:`~kanode.config.ConfigError` with one line naming the
file when it is damaged.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from systems import read_regular_file

from .checkpoints import (CHECKPOINT_FORMAT, PHASES, atomic_torch_save, atomic_write, check_trainer_state,
                          load_checkpoint)
from .config import ConfigError, FitConfig, dump_config, load_config
from .lock import RUN_LOCK_NAME, DirectoryLock

__all__ = ["RunDir", "METRIC_COLUMNS", "read_metrics", "read_summary", "atomic_torch_save",
           "load_checkpoint", "check_trainer_state", "default_run_dir", "CHECKPOINT_FORMAT",
           "ENSEMBLE_FILE", "is_ensemble_dir", "ensemble_member_dirs"]


METRIC_COLUMNS = ("step", "phase", "train_loss", "val_loss", "extrap_loss", "lr",
                  "nfe_forward", "nfe_backward", "wall_time", "grad_norm", "reg_loss")


def default_run_dir(config: FitConfig, root: str | Path = "runs") -> Path:
    """``runs/<system>-<model>-<YYYYmmdd-HHMMSS>`` (suffixed if it exists)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(config.data).stem if config.data else config.system
    base = Path(root) / f"{name}-{config.model}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


ENSEMBLE_FILE = "ensemble.json"  # in a ``kanode.fit --seeds`` directory: its members' run directories


def is_ensemble_dir(path: str | Path) -> bool:
    """Whether ``path`` is the parent directory of an ensemble's member runs."""
    return (Path(path) / ENSEMBLE_FILE).is_file() and not (Path(path) / "config.toml").exists()


def _temp_name(path: Path) -> str:
    """A fresh, unused name beside ``path`` like :func:`atomic_write`'s temporaries
    (``.NAME.*.tmp``, which :meth:`RunDir.clean_temp` removes after a crash)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)
    return tmp


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text), binary=False)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


_INT_COLUMNS = ("step", "nfe_forward", "nfe_backward")
_REQUIRED_COLUMNS = ("step", "phase", "train_loss")


def _parse_cell(key: str, value: str) -> Any:
    if key == "phase":
        if value not in PHASES:
            raise ValueError(f"phase {value[:20]!r} is not one of {', '.join(PHASES)}")
        return value
    if value == "":
        return None
    if key in _INT_COLUMNS:
        number = int(value)
        if number < 0:
            raise ValueError(f"{key} {number} is negative")
        return number
    return float(value)


def _run_file_text(path: Path) -> str:
    """The UTF-8 text of a run's file; ConfigError (one line) for a directory,
    FIFO, unreadable or non-UTF-8 file. FileNotFoundError passes through."""
    try:
        raw = read_regular_file(path)
    except ValueError as exc:
        raise ConfigError(f"{path} {exc}; the run directory is damaged") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte offset {exc.start}); "
                          "the run directory is damaged") from None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` with numbers parsed (empty cells → None).

    The header must name known columns (:data:`METRIC_COLUMNS`, a file of an
    earlier version may lack the newer ones) including step, phase and
    train_loss; row ``i`` must be step ``i + 1``.

    Raises
    ------
    ConfigError : a missing, non-UTF-8, empty or malformed file (one line
        naming the file and line).
    """
    path = Path(path)
    try:
        text = _run_file_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; the run directory is damaged") from None
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise ConfigError(f"{path} is not CSV ({exc}); the run directory is damaged") from None
    if not lines:
        raise ConfigError(f"{path} is empty (no header); the run directory is damaged")
    header = lines[0]
    unknown = [c for c in header if c not in METRIC_COLUMNS]
    missing = [c for c in _REQUIRED_COLUMNS if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        what = (f"unknown column {unknown[0][:30]!r}" if unknown else
                f"no {missing[0]!r} column" if missing else "a column twice")
        raise ConfigError(f"{path} has {what} in its header; it is not a kanode metrics file")
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue  # a blank line
        if len(cells) != len(header):
            raise ConfigError(f"{path} line {number} has {len(cells)} fields, the header "
                              f"{len(header)}; the run directory is damaged")
        try:
            row = {key: _parse_cell(key, value) for key, value in zip(header, cells)}
        except ValueError as exc:
            raise ConfigError(f"{path} line {number}: {' '.join(str(exc).split())[:80]}; "
                              "the run directory is damaged") from None
        if row["step"] != len(rows) + 1:
            raise ConfigError(f"{path} line {number} is step {row['step']}, expected "
                              f"{len(rows) + 1}; the run directory is damaged")
        rows.append(row)
    return rows


# Fields of summary.json that kanode.fit writes, with the JSON types they must have.
_SUMMARY_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    **{k: ("a string", (str,)) for k in ("status", "reason", "system", "model")},
    **{k: ("an integer", (int,)) for k in ("n_params", "steps", "seed")},
    "grid_size": ("an integer or null", (int, type(None))),
    **{k: ("a number or null", (int, float, type(None)))
       for k in ("final_train_loss", "best_train_loss", "final_val_loss", "final_extrap_loss",
                 "wall_time_s", "time_per_step_s", "nfe_per_step")},
    "widths": ("a list of integers", (list,)),
}


def read_summary(path: str | Path) -> dict[str, Any] | None:
    """A run's ``summary.json`` (``None`` if there is none), its known fields type-checked.

    Raises ConfigError with a one-line message naming the file when it is not
    a regular file, not UTF-8 JSON, not an object, or a field kanode writes
    has the wrong type (``"n_params": "abc"``).
    """
    path = Path(path)
    try:
        summary = json.loads(_run_file_text(path))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                          f"column {exc.colno}); the run directory is damaged") from None
    except RecursionError:
        raise ConfigError(f"{path} is not a summary: JSON nested too deeply") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(summary).__name__}; "
                          "the run directory is damaged")
    for key, (kind, types) in _SUMMARY_TYPES.items():
        if key in summary and not _has_type(summary[key], types):
            raise ConfigError(f"{path}: {key} = {json.dumps(summary[key])[:60]} is not {kind}; "
                              "the run directory is damaged")
    return summary


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    """``isinstance`` where a JSON boolean is not a number and a list holds integers."""
    if isinstance(value, bool) or not isinstance(value, types):
        return False
    return not isinstance(value, list) or all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)


def ensemble_member_dirs(path: str | Path) -> list[Path]:
    """The member run directories an ensemble directory's ``ensemble.json`` lists.

    Raises ConfigError (one line) when the listing is missing or malformed.
    """
    path = Path(path)
    listing = path / ENSEMBLE_FILE
    try:
        names = json.loads(listing.read_text(encoding="utf-8"))["members"]
        if not isinstance(names, list) or not all(isinstance(n, str) and "/" not in n for n in names):
            raise ValueError("members is not a list of directory names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{listing} cannot be read ({exc}); {path} is not an ensemble directory") from None
    return [path / name for name in names]


class RunDir:
    """The files of one run. Creating one writes nothing; :meth:`start` does."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.toml")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    summary_path = property(lambda self: self.path / "summary.json")
    last_path = property(lambda self: self.path / "checkpoints" / "last.pt")
    best_path = property(lambda self: self.path / "checkpoints" / "best.pt")
    previous_path = property(lambda self: self.path / "checkpoints" / "previous.pt")
    plots_path = property(lambda self: self.path / "plots")

    # ----------------------------------------------------------------- lock
    def lock(self) -> DirectoryLock:
        """The directory's exclusive lock (not yet acquired); see :mod:`kanode.lock`."""
        return DirectoryLock(self.path, RUN_LOCK_NAME, "run directory")

    def clean_temp(self) -> list[Path]:
        """Remove temporary files an interrupted atomic write left behind (hold the lock)."""
        removed = []
        for folder in (self.path, self.path / "checkpoints"):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed

    # --------------------------------------------------------------- create
    def never_checkpointed(self) -> bool:
        """The run was killed before its first checkpoint: no ``last.pt`` and no metric rows.

        Such a directory holds nothing worth keeping; :meth:`start` and a resume
        start it over.
        """
        if self.last_path.exists():
            return False
        if not self.metrics_path.exists():
            return True
        try:
            return not read_metrics(self.metrics_path)
        except ConfigError:
            return False

    def start(self, config: FitConfig, restart: bool = False) -> None:
        """Create the directory with ``config.toml`` and an empty ``metrics.csv``.

        A directory left by a run of the same config (any config with
        ``restart``, as a resume does) that died before its first checkpoint is
        started over. Raises ConfigError if it holds any other run.
        """
        if self.config_path.exists() or self.metrics_path.exists():
            if not (self.never_checkpointed() and (restart or self._same_config(config))):
                raise ConfigError(f"{self.path} already holds a run; resume it with "
                                  f"--resume {self.path} or choose another --out")
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.config_path, dump_config(config))
        with self.metrics_path.open("w", newline="") as fh:
            csv.writer(fh).writerow(METRIC_COLUMNS)

    def update_config(self, config: FitConfig) -> None:
        """Rewrite ``config.toml`` (atomically) when a resume extends the run's schedule, so that
        the directory keeps describing the run it holds."""
        if not self._same_config(config):
            _atomic_write_text(self.config_path, dump_config(config))

    def _same_config(self, config: FitConfig) -> bool:
        if not self.config_path.exists():
            return True  # killed before config.toml was written
        try:
            return load_config(self.config_path) == config
        except ConfigError:
            return False

    def load_config(self) -> FitConfig:
        """The run's config; ConfigError if the directory is not a resumable run."""
        if not self.path.is_dir():
            raise ConfigError(f"run directory {self.path} does not exist")
        if not self.config_path.exists():
            raise ConfigError(f"{self.path} has no config.toml; it is not a kanode run")
        return load_config(self.config_path)

    # -------------------------------------------------------------- metrics
    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics_path.open("a", newline="") as fh:
            csv.writer(fh).writerow([_format(row[c]) for c in METRIC_COLUMNS])

    def truncate_metrics(self, last_step: int) -> None:
        """Keep the rows of steps ``1 .. last_step`` (a resume drops those written after
        its checkpoint) and rewrite them under the current header.

        Raises ConfigError if ``metrics.csv`` is damaged or has fewer rows than
        the checkpoint's step.
        """
        rows = read_metrics(self.metrics_path)
        if len(rows) < last_step:
            raise ConfigError(f"{self.metrics_path} has {len(rows)} rows but the checkpoint is "
                              f"at step {last_step}; the run directory is damaged")
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(METRIC_COLUMNS)
        for row in rows[:last_step]:
            writer.writerow([_format(row.get(c)) for c in METRIC_COLUMNS])
        _atomic_write_text(self.metrics_path, buffer.getvalue())

    # ---------------------------------------------------------- checkpoints
    def save_last(self, state: dict[str, Any], keep_previous: bool = False) -> None:
        """Write ``last.pt``; with ``keep_previous`` the one it replaces becomes ``previous.pt``
        first (atomically: a crash leaves both files or the old ones), as ensemble members do."""
        if keep_previous and self.last_path.exists():
            tmp = _temp_name(self.previous_path)
            try:
                try:
                    os.link(self.last_path, tmp)  # the same bytes, no copy
                except OSError:  # a file system without hard links
                    shutil.copyfile(self.last_path, tmp)
                os.replace(tmp, self.previous_path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        atomic_torch_save(state, self.last_path)

    def restore_previous(self) -> None:
        """Make ``previous.pt`` the last checkpoint again (an ensemble member that was ahead of
        the others rolls back to their step); atomic."""
        os.replace(self.previous_path, self.last_path)

    def save_best(self, model_state: dict[str, Any], step: int, loss: float,
                  grid_size: int | None, name: str = "best") -> None:
        """``checkpoints/<name>.pt``: "best", or "polished" (:mod:`kanode.polish`)."""
        atomic_torch_save({"model": model_state, "step": step, "train_loss": loss,
                           "grid_size": grid_size}, self.path / "checkpoints" / f"{name}.pt")

    def load_last(self, previous: bool = False) -> dict[str, Any]:
        """The training state of ``checkpoints/last.pt`` (``previous.pt`` with ``previous``),
        its checksum and schema checked.

        Raises ConfigError (one line) if it is missing or damaged.
        """
        path = self.previous_path if previous else self.last_path
        if not path.exists():
            raise ConfigError(f"{self.path} has no checkpoints/{path.name} to resume from")
        return check_trainer_state(load_checkpoint(path), path)

    def load_best(self, name: str = "best") -> dict[str, Any]:
        """``checkpoints/<name>.pt`` ({"model", "step", "train_loss", "grid_size"}; "best", or
        "polished" as :mod:`kanode.polish` writes it), checksum checked.

        Raises ConfigError (one line) if it is missing or damaged.
        """
        path = self.path / "checkpoints" / f"{name}.pt"
        if not path.exists():
            raise ConfigError(f"{self.path} has no checkpoints/{name}.pt")
        state = load_checkpoint(path)
        if not isinstance(state.get("model"), dict) or "grid_size" not in state:
            raise ConfigError(f"{path} is not a model checkpoint; the run directory is damaged")
        return state

    # -------------------------------------------------------------- summary
    def write_summary(self, summary: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in summary.items()}
        _atomic_write_text(self.summary_path, json.dumps(clean, indent=2) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json`` (None if absent); see :func:`read_summary`."""
        return read_summary(self.summary_path)
