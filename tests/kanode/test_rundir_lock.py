"""One process per run directory and one sweep per sweep directory, checked with real
second processes holding the lock (a plain ``flock`` holder, and a running fit)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kanode.config import ConfigError
from kanode.fit import main as fit_main
from kanode.lock import RUN_LOCK_NAME, SWEEP_LOCK_NAME, DirectoryLock, lock_holder
from kanode.runs import read_metrics
from kanode.sweep import LocalBackend, SweepError, expand, plan, run_sweep
from kanode.sweep.__main__ import main as sweep_main
from tests.kanode.test_sweep import FakeRunner, tiny

# A holder without kanode: flock is one lock whoever takes it (starts in ~50 ms).
HOLD = """
import fcntl, os, sys
os.makedirs(sys.argv[1], exist_ok=True)
fd = os.open(os.path.join(sys.argv[1], sys.argv[2]), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_elsewhere(directory: Path, name: str = RUN_LOCK_NAME) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def one_error_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("kanode: error: "), err
    return err


def test_the_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    with held_elsewhere(tmp_path / "run") as holder:
        assert lock_holder(tmp_path / "run") == str(holder.pid)
        with pytest.raises(ConfigError, match=rf"run directory .*run is in use by another "
                                              rf"process \(pid {holder.pid}\)"):
            DirectoryLock(tmp_path / "run").acquire()
        holder.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel releases it
        holder.wait()
        with DirectoryLock(tmp_path / "run") as lock:
            assert lock.held
            assert (tmp_path / "run" / RUN_LOCK_NAME).read_text().strip() == str(os.getpid())
    assert lock_holder(tmp_path / "run") is None
    assert lock_holder(tmp_path / "nowhere") is None and not (tmp_path / "nowhere").exists()


FAST = ["--train-fraction", "0.1", "--eval-every", "2", "--quiet", "--no-plots"]


def test_a_new_fit_into_a_locked_directory_is_refused(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    with held_elsewhere(out) as holder:
        code = fit_main(["--steps", "1", "--lbfgs-steps", "0", "--out", str(out), *FAST])
    err = one_error_line(capsys.readouterr().err)
    assert code == 2 and f"is in use by another process (pid {holder.pid})" in err
    assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK_NAME]  # nothing written


@pytest.mark.slow  # a real fit process: ~10 s on an idle laptop, more on a busy CI box
def test_resume_while_the_fit_still_runs_is_refused(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "kanode.fit", "--optimizer", "adam",
                             "--steps", "100000", "--checkpoint-every", "1", "--out", str(out),
                             *FAST], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.csv").exists() or len(read_metrics(out / "metrics.csv")) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the fit did not start"
            time.sleep(0.2)
        code = fit_main(["--resume", str(out), "--quiet"])
        err = one_error_line(capsys.readouterr().err)
        assert code == 2 and f"(pid {proc.pid})" in err
        assert lock_holder(out) == str(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    # the refused resume wrote nothing: metrics.csv is one row per step, in order
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))


def test_a_second_sweep_on_the_same_directory_exits_2(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.toml"
    tiny(tmp_path)  # writes tiny.toml
    out = tmp_path / "sweep"
    with held_elsewhere(out, SWEEP_LOCK_NAME) as holder:
        code = sweep_main([str(config), "--out", str(out), "--no-progress"])
    err = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert f"sweep directory {out} is in use by another process (pid {holder.pid})" in err
    assert sorted(p.name for p in out.iterdir()) == [SWEEP_LOCK_NAME]  # no log, no cells


def test_a_sweep_holds_its_lock_while_it_runs(tmp_path: Path) -> None:
    specs = expand(tiny(tmp_path))[:2]
    seen: list[str | None] = []
    fake = FakeRunner()

    def runner(task):  # noqa: ANN001, ANN202
        seen.append(lock_holder(tmp_path / "sweep", SWEEP_LOCK_NAME))
        return fake(task)

    run_sweep(specs, tmp_path / "sweep", LocalBackend(1), runner=runner, progress=False,
              stream=io.StringIO(), pack=False)  # one runner call per run
    assert seen == [str(os.getpid())] * 2
    assert lock_holder(tmp_path / "sweep", SWEEP_LOCK_NAME) is None
    with held_elsewhere(tmp_path / "sweep", SWEEP_LOCK_NAME):
        with pytest.raises(SweepError, match="in use by another process"):
            run_sweep(specs, tmp_path / "sweep", LocalBackend(1), runner=fake, progress=False)


def test_a_cell_in_use_by_another_process_stops_the_sweep_before_any_run(tmp_path: Path) -> None:
    specs = expand(tiny(tmp_path))
    busy = specs[3]
    fake = FakeRunner()
    with held_elsewhere(tmp_path / "sweep" / busy.key) as holder:
        actions = plan(specs, tmp_path / "sweep")
        assert [a.kind for a in actions].count("busy") == 1
        assert actions[3].kind == "busy" and actions[3].detail == str(holder.pid)
        with pytest.raises(SweepError, match=rf"{busy.key} is in use by another process "
                                             rf"\(pid {holder.pid}\)"):
            run_sweep(specs, tmp_path / "sweep", LocalBackend(2), runner=fake, progress=False)
    assert fake.tasks == []  # neither the busy cell nor any other ran
    assert not (tmp_path / "sweep" / "sweep_log.jsonl").exists()
