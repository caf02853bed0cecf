"""Where sweep runs execute: a local pool of fit processes, or a Ray cluster.

Every run is one ``python -m kanode.fit`` subprocess (isolation, thread
control, crash safety). A backend takes :class:`RunTask` objects and yields a
:class:`RunOutcome` for each as it finishes. The function that executes one
task (the *runner*) is injectable, so the scheduling can be tested without
fitting anything.

The Ray backend needs the sweep directory on a filesystem that every Ray node
sees at the same path (the usual shared-storage setup of a Ray cluster).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from ..exit_codes import EXIT_DIVERGED
from .grid import SweepError

__all__ = ["RunTask", "RunOutcome", "Runner", "Backend", "LocalBackend", "RayBackend",
           "make_backend", "run_fit_subprocess", "threads_per_worker"]

_LOG_TAIL = 20_000


@dataclass(frozen=True)
class RunTask:
    """One fit to execute.

    ``resume`` continues ``run_dir`` from its last checkpoint; otherwise the
    fit starts from ``config_path`` into ``run_dir`` (which must not hold a run).
    """

    key: str
    run_dir: str
    config_path: str
    resume: bool
    threads: int


@dataclass(frozen=True)
class RunOutcome:
    """How one task ended: ``status`` is ``finished``, ``diverged`` or ``failed``."""

    key: str
    status: str
    reason: str
    returncode: int
    wall_time_s: float
    log: str = ""


Runner = Callable[[RunTask], RunOutcome]


class Backend(Protocol):
    """Runs tasks and yields their outcomes in completion order."""

    def run(self, tasks: Iterable[RunTask], runner: Runner) -> Iterator[RunOutcome]: ...


def threads_per_worker(workers: int) -> int:
    """A fair share of this machine's cores for each of ``workers`` concurrent runs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def run_fit_subprocess(task: RunTask) -> RunOutcome:
    """Execute one task as ``python -m kanode.fit`` with ``task.threads`` threads."""
    if task.resume:
        cmd = [sys.executable, "-m", "kanode.fit", "--resume", task.run_dir]
    else:
        cmd = [sys.executable, "-m", "kanode.fit", "--config", task.config_path,
               "--out", task.run_dir]
    cmd += ["--quiet", "--threads", str(task.threads)]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(task.threads)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")
    elapsed = time.perf_counter() - start
    log = proc.stdout[-_LOG_TAIL:]
    if proc.returncode == 0:
        return RunOutcome(task.key, "finished", "", 0, elapsed, log)
    status = "diverged" if proc.returncode == EXIT_DIVERGED else "failed"
    return RunOutcome(task.key, status, _reason(log, proc.returncode), proc.returncode,
                      elapsed, log)


def _reason(log: str, returncode: int) -> str:
    """The last non-empty output line (the fit's ``kanode: error: ...``) and the exit code."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    return f"exit {returncode}: {last}"


def _guarded(runner: Runner, task: RunTask) -> RunOutcome:
    """Call ``runner`` and turn an exception in it into a ``failed`` outcome."""
    start = time.perf_counter()
    try:
        return runner(task)
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop the sweep
        return RunOutcome(task.key, "failed", f"{type(exc).__name__}: {exc}", -1,
                          time.perf_counter() - start)


class LocalBackend:
    """``workers`` fit processes at a time on this machine."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise SweepError(f"--workers must be at least 1, got {workers}")
        self.workers = workers

    def run(self, tasks: Iterable[RunTask], runner: Runner) -> Iterator[RunOutcome]:
        # Threads only wait on the fit subprocesses; the work happens in those processes.
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            pending: set[Future[RunOutcome]] = {pool.submit(_guarded, runner, t) for t in tasks}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()


class RayBackend:
    """The same tasks as Ray tasks, each reserving ``task.threads`` CPUs.

    Connects to ``address`` (e.g. ``"auto"`` or ``"ray://head:10001"``), or starts
    a local Ray with ``num_cpus`` CPUs when no address is given. A Ray session
    that is already initialised is reused and left running.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise SweepError("the Ray backend needs Ray; install it with "
                             "pip install 'kanode[ray]' (or use --backend local)") from None
        self._ray = ray
        self.address = address
        self.num_cpus = num_cpus

    def run(self, tasks: Iterable[RunTask], runner: Runner) -> Iterator[RunOutcome]:
        ray = self._ray
        owns_session = not ray.is_initialized()
        if owns_session:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
        refs: list = []
        try:
            remote = ray.remote(_guarded)
            refs = [remote.options(num_cpus=t.threads, max_retries=0).remote(runner, t)
                    for t in tasks]
            while refs:
                done, refs = ray.wait(refs, num_returns=1)
                yield ray.get(done[0])
        finally:
            for ref in refs:  # left only when the consumer stopped early
                ray.cancel(ref, force=True)
            if owns_session:
                ray.shutdown()


def make_backend(name: str, workers: int, ray_address: str | None = None) -> Backend:
    """The backend called ``name`` (``local`` or ``ray``) for ``workers`` concurrent runs."""
    if name == "local":
        return LocalBackend(workers)
    if name == "ray":
        if workers < 1:
            raise SweepError(f"--workers must be at least 1, got {workers}")
        num_cpus = None if ray_address else workers * threads_per_worker(workers)
        return RayBackend(address=ray_address, num_cpus=num_cpus)
    raise SweepError(f"unknown backend {name!r}; choose local or ray")
