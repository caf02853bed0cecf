"""An exclusive lock on a directory, held by one process and released when it dies.

A run directory (``kanode.fit``, ``--resume``) and a sweep directory
(``kanode.sweep``) are each written by one process at a time. The lock is
``fcntl.flock`` on a small file inside the directory: the kernel releases it
when the holder exits, however it exits (SIGKILL included), so a stale lock
never blocks a rerun. The file holds the holder's pid, for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from .config import ConfigError

__all__ = ["DirectoryLock", "lock_holder", "RUN_LOCK_NAME", "SWEEP_LOCK_NAME"]

RUN_LOCK_NAME = ".kanode.lock"
SWEEP_LOCK_NAME = ".sweep.lock"


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _busy(directory: Path, what: str, pid: str) -> ConfigError:
    return ConfigError(f"{what} {directory} is in use by another process (pid {pid}); "
                       "wait for it to end or use another directory")


class DirectoryLock:
    """Exclusive, non-blocking lock on ``directory`` (created if missing).

    Use as a context manager or with :meth:`acquire` / :meth:`release`.
    ``acquire`` raises :class:`~kanode.config.ConfigError` naming the holder's
    pid when another process (or another open lock in this one) holds it.
    """

    def __init__(self, directory: str | Path, name: str = RUN_LOCK_NAME,
                 what: str = "run directory") -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "DirectoryLock":
        if self._fd is not None:
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot lock {self.what} {self.directory}: "
                              f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise _busy(self.directory, self.what, pid) from None
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"cannot lock {self.what} {self.directory}: "
                              f"{exc.strerror or exc}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a new holder)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def lock_holder(directory: str | Path, name: str = RUN_LOCK_NAME) -> str | None:
    """The pid (as text, or ``"unknown"``) of the process holding ``directory``'s lock,
    or None when nobody holds it. Creates nothing."""
    path = Path(directory) / name
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
