"""Checkpoints: atomic, checksummed writing; verified reading; the trainer-state schema.

A checkpoint is a ``torch.save`` file, loadable with ``torch.load(weights_only=True)``:
a dict ``{"format": CHECKPOINT_FORMAT, "sha256": hex, "payload": uint8 tensor}``
whose payload holds the ``torch.save`` bytes of the state; :func:`load_checkpoint`
verifies the checksum (checkpoints of earlier versions, the bare state dict,
still load). Readers raise :class:`~kanode.config.ConfigError` with one line
naming the file when it is damaged. :func:`atomic_write` is the one
write-to-temporary, fsync, rename of the run directory's files
(:mod:`kanode.runs` writes its text files with it).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from .config import ConfigError

__all__ = ["CHECKPOINT_FORMAT", "PHASES", "atomic_write", "atomic_torch_save", "load_checkpoint",
           "check_trainer_state"]

CHECKPOINT_FORMAT = "kanode-checkpoint-1"


def atomic_write(path: Path, write: Callable[[IO[Any]], object], binary: bool = True) -> None:
    """Replace ``path`` with what ``write(file)`` writes, atomically: into a
    temporary file beside it, fsynced, then renamed over it (a crash leaves the
    old file or the new one, never a truncated one; the temporary is removed
    on failure)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` with a checksum, so a crash never leaves a truncated
    file and a damaged one is detected by :func:`load_checkpoint`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    wrapped = {"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
               "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}  # (n_bytes,)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(wrapped, fh))


def _torch_load(source: Any, path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4" on garbage: one line only
            return torch.load(source, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means a damaged file
        text = re.sub(r"\x1b\[[0-9;]*m|[^\x20-\x7e]", "", " ".join(str(exc).split()))
        first = text.split(". ")[0][:160] or type(exc).__name__
        raise ConfigError(f"{path} is not a readable checkpoint (truncated or damaged: "
                          f"{first}); the run directory is damaged") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state dict in a checkpoint written by :func:`atomic_torch_save`.

    Loads with ``torch.load(weights_only=True)`` and verifies the sha256 of
    the payload; a checkpoint of an earlier kanode (a bare dict) loads as is.

    Raises
    ------
    ConfigError : missing, empty, truncated, altered or foreign file (one line).
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file; the run directory is damaged")
    if info.st_size == 0:
        raise ConfigError(f"{path} is empty; the run directory is damaged")
    obj = _torch_load(path, path)
    if not isinstance(obj, dict):
        raise ConfigError(f"{path} holds a {type(obj).__name__}, not a kanode checkpoint")
    if "format" not in obj:
        return obj  # written before checkpoints carried a checksum
    if obj.get("format") != CHECKPOINT_FORMAT or set(obj) != {"format", "sha256", "payload"}:
        raise ConfigError(f"{path} is not a kanode checkpoint (format "
                          f"{str(obj.get('format'))[:40]!r}, expected {CHECKPOINT_FORMAT!r})")
    tensor = obj["payload"]
    payload = (tensor.numpy().tobytes() if isinstance(tensor, torch.Tensor)
               and tensor.dtype == torch.uint8 and tensor.ndim == 1 else None)
    if payload is None or hashlib.sha256(payload).hexdigest() != obj["sha256"]:
        raise ConfigError(f"{path} fails its checksum (the file was altered or damaged); "
                          "the run directory is damaged")
    state = _torch_load(io.BytesIO(payload), path)
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a kanode checkpoint")
    return state


# Keys of Trainer.member_state(m) (kanode.train: a run's last.pt) and what each must be.
_STATE_KEYS = ("step", "wall_time", "best_loss", "best_step", "phase", "model", "grid_size",
               "optimizer", "generator", "torch_rng")
PHASES = ("adam", "lbfgs")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_trainer_state(state: Any, path: str | Path) -> dict[str, Any]:
    """Check the schema of a training checkpoint (``Trainer.state_dict()``); return it.

    Raises ConfigError with one line naming ``path`` and the first bad entry:
    a missing key, a negative or non-integer ``step``, an unknown ``phase``,
    a model that is not a dict of tensors, or RNG states that are not byte
    tensors of the generator's size.
    """
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{path}: {what}; the checkpoint is damaged or not from kanode.fit")

    if not isinstance(state, dict):
        raise bad(f"holds a {type(state).__name__}, not a dict")
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise bad(f"missing key(s) {', '.join(missing)}")
    step, best_step = state["step"], state["best_step"]
    if not _is_int(step) or step < 0:
        raise bad(f"step = {step!r:.40} is not a non-negative integer")
    if not _is_int(best_step) or not -1 <= best_step < max(step, 1):
        raise bad(f"best_step = {best_step!r:.40} is not an integer in [-1, step)")
    if not _is_real(state["wall_time"]) or not 0 <= state["wall_time"] < math.inf:
        raise bad(f"wall_time = {state['wall_time']!r:.40} is not a finite time >= 0")
    if not _is_real(state["best_loss"]) or math.isnan(state["best_loss"]):
        raise bad(f"best_loss = {state['best_loss']!r:.40} is not a number")
    objective = state.get("best_objective")  # optional: checkpoints of earlier versions lack it
    if objective is not None and (not _is_real(objective) or math.isnan(objective)):
        raise bad(f"best_objective = {objective!r:.40} is not a number")
    first = state.get("first_loss")  # optional: checkpoints of earlier versions lack it
    if first is not None and (not _is_real(first) or math.isnan(first)):
        raise bad(f"first_loss = {first!r:.40} is not a number or None")
    if state["phase"] not in PHASES:
        raise bad(f"phase = {state['phase']!r:.40} is not one of {', '.join(PHASES)}")
    grid = state["grid_size"]
    if grid is not None and (not _is_int(grid) or grid < 1):
        raise bad(f"grid_size = {grid!r:.40} is not a positive integer or None")
    model = state["model"]
    if (not isinstance(model, dict) or not model
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                       for k, v in model.items())):
        raise bad("model is not a dict of tensors")
    optimizer = state["optimizer"]
    legacy = (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
              and isinstance(optimizer.get("param_groups"), list))  # torch.optim's, before kanode.optim
    if not legacy and (not isinstance(optimizer, dict) or optimizer.get("kind") not in PHASES):
        raise bad("optimizer is not an optimiser state dict")
    if not legacy and optimizer["kind"] != state["phase"]:
        raise bad(f"optimizer state is {optimizer['kind']!r} but phase is {state['phase']!r}")
    size = torch.get_rng_state().numel()
    for key in ("generator", "torch_rng"):
        rng = state[key]
        if (not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.ndim != 1
                or rng.numel() != size):
            shape = (f"{rng.dtype} tensor of shape {tuple(rng.shape)}"
                     if isinstance(rng, torch.Tensor) else type(rng).__name__)
            raise bad(f"{key} is a {shape}, not a uint8 RNG state of {size} bytes")
    return state
