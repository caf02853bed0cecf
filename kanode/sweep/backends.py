"""Where sweep runs execute: a local pool of fit processes, or a Ray cluster.

Every run is one ``python -m kanode.fit`` subprocess (isolation, thread
control, crash safety), and every pack of runs that share an ensemble
(:class:`PackTask`) one ``python -m kanode.ensemble`` subprocess. A backend
takes tasks and yields a :class:`RunOutcome` per run as they finish. The function that executes one
task (the *runner*) is injectable, so the scheduling can be tested without
fitting anything.

The Ray backend needs the sweep directory on a filesystem that every Ray node
sees at the same path (the usual shared-storage setup of a Ray cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from ..exit_codes import EXIT_DIVERGED
from .grid import SweepError

__all__ = ["RunTask", "PackTask", "RunOutcome", "Runner", "Backend", "LocalBackend", "RayBackend",
           "make_backend", "run_fit_subprocess", "run_task", "threads_per_worker"]

_LOG_TAIL = 20_000


@dataclass(frozen=True)
class RunTask:
    """One fit to execute.

    ``resume`` continues ``run_dir`` from its last checkpoint with ``lbfgs_steps``
    (the cell's; more than the run's extends a finished run); otherwise the fit
    starts from ``config_path`` into ``run_dir`` (which must not hold a run).
    """

    key: str
    run_dir: str
    config_path: str
    resume: bool
    threads: int
    lbfgs_steps: int | None = None


@dataclass(frozen=True)
class PackTask:
    """Runs that share one ensemble solve (:func:`kanode.ensemble.pack_groups`); all start,
    or all resume. ``threads`` is the pack's."""

    key: str
    members: tuple[RunTask, ...]
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


Task = RunTask | PackTask
Runner = Callable[[Task], "RunOutcome | list[RunOutcome]"]


class Backend(Protocol):
    """Runs tasks and yields their runs' outcomes in completion order."""

    def run(self, tasks: Iterable[Task], runner: Runner) -> Iterator[RunOutcome]: ...


def threads_per_worker(workers: int) -> int:
    """A fair share of this machine's cores for each of ``workers`` concurrent runs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def _subprocess(cmd: list[str], threads: int) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run(cmd + ["--quiet", "--threads", str(threads)], env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")
    return proc, time.perf_counter() - start


def run_task(task: Task) -> RunOutcome | list[RunOutcome]:
    """The default runner: a run as ``python -m kanode.fit``, a pack as ``python -m kanode.ensemble``."""
    return run_pack_subprocess(task) if isinstance(task, PackTask) else run_fit_subprocess(task)


def run_pack_subprocess(pack: PackTask) -> list[RunOutcome]:
    """Execute a pack as one ``python -m kanode.ensemble MANIFEST``; one outcome per member,
    read from its run directory's ``summary.json`` (``failed`` where there is none)."""
    from kanode.runs import read_summary

    manifest = {"members": [{"run_dir": t.run_dir, "config_path": t.config_path, "resume": t.resume,
                             "lbfgs_steps": t.lbfgs_steps} for t in pack.members]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(manifest, fh)
    try:
        proc, elapsed = _subprocess([sys.executable, "-m", "kanode.ensemble", fh.name], pack.threads)
    finally:
        os.unlink(fh.name)
    log = proc.stdout[-_LOG_TAIL:]
    outcomes = []
    for task in pack.members:
        try:
            summary = read_summary(os.path.join(task.run_dir, "summary.json")) or {}
        except Exception:  # noqa: BLE001 - a damaged summary is a failed run
            summary = {}
        status = summary.get("status")
        if status in ("finished", "diverged"):
            reason = summary.get("reason", "") if status == "diverged" else ""
            code = 0 if status == "finished" else EXIT_DIVERGED
            outcomes.append(RunOutcome(task.key, status, reason, code, elapsed, log))
        else:
            outcomes.append(RunOutcome(task.key, "failed", _reason(log, proc.returncode),
                                       proc.returncode or 1, elapsed, log))
    return outcomes


def run_fit_subprocess(task: RunTask) -> RunOutcome:
    """Execute one task as ``python -m kanode.fit`` with ``task.threads`` threads."""
    if task.resume:
        cmd = [sys.executable, "-m", "kanode.fit", "--resume", task.run_dir]
        if task.lbfgs_steps is not None:
            cmd += ["--lbfgs-steps", str(task.lbfgs_steps)]
    else:
        cmd = [sys.executable, "-m", "kanode.fit", "--config", task.config_path,
               "--out", task.run_dir]
    proc, elapsed = _subprocess(cmd, task.threads)
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


def _guarded(runner: Runner, task: Task) -> list[RunOutcome]:
    """Call ``runner``; its outcomes as a list, an exception in it a ``failed`` outcome per run."""
    start = time.perf_counter()
    try:
        result = runner(task)
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop the sweep
        runs = task.members if isinstance(task, PackTask) else (task,)
        return [RunOutcome(t.key, "failed", f"{type(exc).__name__}: {exc}", -1,
                           time.perf_counter() - start) for t in runs]
    return result if isinstance(result, list) else [result]


class LocalBackend:
    """``workers`` fit processes at a time on this machine."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise SweepError(f"--workers must be at least 1, got {workers}")
        self.workers = workers

    def run(self, tasks: Iterable[Task], runner: Runner) -> Iterator[RunOutcome]:
        # Threads only wait on the fit subprocesses; the work happens in those processes.
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            pending: set[Future[list[RunOutcome]]] = {pool.submit(_guarded, runner, t) for t in tasks}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield from future.result()
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

    def run(self, tasks: Iterable[Task], runner: Runner) -> Iterator[RunOutcome]:
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
                yield from ray.get(done[0])
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
