"""Run directories: config, per-step metrics, atomic checkpoints, summary.

Layout::

    RUN_DIR/
      config.toml          the complete FitConfig (reruns the fit)
      metrics.csv          one row per optimiser step (METRIC_COLUMNS)
      checkpoints/last.pt  latest state, for --resume
      checkpoints/best.pt  parameters with the lowest training loss
      summary.json         written when the run ends (status, losses, timing)
      plots/               figures of the run
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, FitConfig, dump_config, load_config

__all__ = ["RunDir", "METRIC_COLUMNS", "read_metrics", "atomic_torch_save", "default_run_dir"]

METRIC_COLUMNS = ("step", "phase", "train_loss", "val_loss", "extrap_loss", "lr",
                  "nfe_forward", "nfe_backward", "wall_time", "grad_norm")


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


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` so a crash never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` with numbers parsed (empty cells → None)."""
    rows = []
    with Path(path).open(newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if key == "phase":
                    row[key] = value
                elif value == "" or value is None:
                    row[key] = None
                elif key in ("step", "nfe_forward", "nfe_backward"):
                    row[key] = int(value)
                else:
                    row[key] = float(value)
            rows.append(row)
    return rows


class RunDir:
    """The files of one run. Creating one writes nothing; :meth:`start` does."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.toml")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    summary_path = property(lambda self: self.path / "summary.json")
    last_path = property(lambda self: self.path / "checkpoints" / "last.pt")
    best_path = property(lambda self: self.path / "checkpoints" / "best.pt")
    plots_path = property(lambda self: self.path / "plots")

    # --------------------------------------------------------------- create
    def start(self, config: FitConfig) -> None:
        """Create the directory with ``config.toml`` and an empty ``metrics.csv``.

        Raises ConfigError if it already holds a run.
        """
        if self.config_path.exists() or self.metrics_path.exists():
            raise ConfigError(f"{self.path} already holds a run; resume it with "
                              f"--resume {self.path} or choose another --out")
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.config_path, dump_config(config))
        with self.metrics_path.open("w", newline="") as fh:
            csv.writer(fh).writerow(METRIC_COLUMNS)

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
        """Drop rows after ``last_step`` (written after the checkpoint a resume starts from)."""
        with self.metrics_path.open(newline="") as fh:
            lines = fh.read().splitlines(keepends=True)
        kept = [lines[0]] + [ln for ln in lines[1:] if ln.strip() and int(ln.split(",")[0]) <= last_step]
        _atomic_write_text(self.metrics_path, "".join(kept))

    # ---------------------------------------------------------- checkpoints
    def save_last(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.last_path)

    def save_best(self, model_state: dict[str, Any], step: int, loss: float,
                  grid_size: int | None) -> None:
        atomic_torch_save({"model": model_state, "step": step, "train_loss": loss,
                           "grid_size": grid_size}, self.best_path)

    def load_last(self) -> dict[str, Any]:
        if not self.last_path.exists():
            raise ConfigError(f"{self.path} has no checkpoints/last.pt to resume from")
        return torch.load(self.last_path, weights_only=True)

    # -------------------------------------------------------------- summary
    def write_summary(self, summary: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in summary.items()}
        _atomic_write_text(self.summary_path, json.dumps(clean, indent=2) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        if not self.summary_path.exists():
            return None
        return json.loads(self.summary_path.read_text())
