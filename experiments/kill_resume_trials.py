"""SIGKILL-then-resume trials of an ensemble: is a killed ``kanode.fit --seeds`` continued to
the same bits as an uninterrupted run?

Protocol. One small ensemble (4 seeds of a KAN [2, 5, 2] on the first 10 % of
Lotka–Volterra, RK4, random windows in the Adam phase, a grid extension, Adam
then L-BFGS, a checkpoint after every step, so most of the run is spent in
checkpoint writes) is fitted once without interruption (the reference). Each
trial starts the same command as a real process and kills it with SIGKILL at
a random moment (seeded): once a random number of steps k (uniform over the
run's 32, counted in metrics.csv) is on disk, plus a random delay (up to 50 ms;
up to 8 s into the start for k = 0: imports, data, the first writes); in two
trials out of four the kill then waits for the next moment a checkpoint
write is under way (its temporary file exists) and comes a random 0–3 ms into
it (``+wX ms`` in the table). Odd trials also kill the first resume the same
way (at a later step). Then
``python -m kanode.fit --resume E`` continues it to the end (or, when the kill
came before ``ensemble.json`` existed, the original command is rerun, as a
user would). The finished directory is compared with the reference bit for
bit: every member's ``metrics.csv`` (all columns but ``wall_time``),
``summary.json`` (all fields but ``wall_time_s`` and ``time_per_step_s``), and
the tensors of ``checkpoints/last.pt`` (model, optimiser state, generator and
RNG states; not its wall time) and ``checkpoints/best.pt``.

What each kill hit is read from the directory it left: ``tmp`` = an atomic
write's temporary file was left behind (the kill came inside a checkpoint or
metrics write), ``split`` = the members' last checkpoints were at different
steps (the kill came between members' checkpoints), ``pre`` = no
``ensemble.json`` yet.

Usage: python experiments/kill_resume_trials.py [--trials 16] [--seed 0]
       [--workdir DIR] [--out experiments/results/kill_resume_trials.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kanode.config import ConfigError  # noqa: E402
from kanode.runs import load_checkpoint, read_metrics  # noqa: E402

SEEDS = "0-3"
FIT_ARGS = ["--widths", "2", "5", "2", "--train-fraction", "0.1", "--method", "rk4",
            "--optimizer", "adam+lbfgs", "--steps", "24", "--lbfgs-steps", "8",
            "--batch-time", "5", "--batch-size", "4", "--grid-extend", "12:10",
            "--eval-every", "3", "--checkpoint-every", "1", "--threads", "1",
            "--no-plots", "--quiet"]
SUMMARY_TIMES = ("wall_time_s", "time_per_step_s")
TOTAL_STEPS = 32  # 24 Adam + 8 L-BFGS
STARTUP_S = 8.0   # a kill "at step 0" comes this long (at most) into the start: imports, data, first writes


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "kanode.fit", "--seeds", SEEDS, *FIT_ARGS, "--out", str(out)]


def _resume_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "kanode.fit", "--resume", str(out), "--quiet"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)


def _writing(out: Path) -> bool:
    """Whether a checkpoint write is under way in a member (its temporary ``.NAME.*.tmp`` exists)."""
    for member in _members(out):
        try:
            if any(e.name.startswith(".") and e.name.endswith(".tmp") for e in os.scandir(member / "checkpoints")):
                return True
        except FileNotFoundError:
            pass
    return False


def _progress(out: Path) -> int:
    """The most steps any member has in its metrics.csv (0 before the first)."""
    rows = 0
    for member in _members(out):
        try:
            rows = max(rows, (member / "metrics.csv").read_bytes().count(b"\n") - 1)
        except FileNotFoundError:
            pass
    return rows


def _run_killed(cmd: list[str], out: Path, at_step: int, delay: float, in_write: float | None) -> int | None:
    """Start ``cmd``; once some member has recorded ``at_step`` steps, wait ``delay`` seconds,
    and with ``in_write`` (seconds) further until a checkpoint write is under way plus
    ``in_write``; then SIGKILL it. Returns None when it was killed, else its exit status
    (it ended first)."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and _progress(out) < at_step:
        time.sleep(0.002)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    if in_write is not None:
        while proc.poll() is None and not _writing(out):  # a tight poll: a write lasts milliseconds
            pass
        time.sleep(in_write)
    if proc.poll() is not None:
        return proc.returncode
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return None


def _members(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("seed-*") if p.is_dir())


def _what_was_hit(out: Path) -> dict[str, bool]:
    """What the kill left: temporaries of an atomic write, members at different steps, no listing."""
    tmp = any(out.rglob(".*.tmp"))
    steps = set()
    for member in _members(out):
        last = member / "checkpoints" / "last.pt"
        try:
            steps.add(load_checkpoint(last)["step"] if last.exists() else None)
        except ConfigError as exc:  # would be a bug: checkpoints are written atomically
            steps.add(f"damaged: {exc}")
    return {"tmp": tmp, "split": len(steps) > 1, "pre": not (out / "ensemble.json").exists()}


def _tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a checkpoint into {path: tensor or plain value}, without wall times."""
    if isinstance(obj, dict):
        flat: dict[str, Any] = {}
        for key, value in obj.items():
            if key == "wall_time":
                continue
            flat.update(_tensors(value, f"{prefix}/{key}"))
        return flat
    if isinstance(obj, (list, tuple)):
        flat = {}
        for i, value in enumerate(obj):
            flat.update(_tensors(value, f"{prefix}/{i}"))
        return flat
    return {prefix: obj}


def _same_value(a: Any, b: Any) -> bool:
    """Bitwise equality of tensors (NaN payloads and signed zeros included); == otherwise."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        bits = lambda t: t.detach().reshape(-1).contiguous().view(torch.uint8)  # noqa: E731
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(bits(a), bits(b)))
    return a == b or (a != a and b != b)  # noqa: PLR0124 - NaN equals NaN here


def compare(got: Path, want: Path) -> list[str]:
    """Differences between two finished ensemble directories (empty: bit-identical but wall times)."""
    diffs = []
    names = [m.name for m in _members(want)]
    if [m.name for m in _members(got)] != names:
        return [f"members {[m.name for m in _members(got)]} != {names}"]
    for name in names:
        g, w = got / name, want / name
        rows = [[{k: v for k, v in r.items() if k != "wall_time"} for r in read_metrics(d / "metrics.csv")]
                for d in (g, w)]
        if rows[0] != rows[1]:
            diffs.append(f"{name}/metrics.csv ({len(rows[0])} vs {len(rows[1])} rows)")
        summaries = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items()
                      if k not in SUMMARY_TIMES} for d in (g, w)]
        if summaries[0] != summaries[1]:
            keys = [k for k in summaries[1] if summaries[0].get(k) != summaries[1][k]]
            diffs.append(f"{name}/summary.json {keys}")
        for file in ("last.pt", "best.pt"):
            a, b = (_tensors(load_checkpoint(d / "checkpoints" / file)) for d in (g, w))
            bad = sorted(k for k in set(a) | set(b) if k not in a or k not in b or not _same_value(a[k], b[k]))
            if bad:
                diffs.append(f"{name}/checkpoints/{file} {bad[:3]}")
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "kill_resume_trials.csv")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kanode-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    reference = work / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    start = time.perf_counter()
    done = _run(_command(reference))
    duration = time.perf_counter() - start
    if done.returncode != 0:
        print(f"the reference run failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
        return 1
    print(f"reference: {duration:.1f} s (this machine, now) for `kanode.fit --seeds {SEEDS} {' '.join(FIT_ARGS)}`")

    rows = []
    for trial in range(args.trials):
        out = work / f"trial-{trial}"
        shutil.rmtree(out, ignore_errors=True)
        kills, hits, actions, failure, ended = [], [], [], "", None
        cmd = _command(out)
        in_write = trial % 4 >= 2  # two trials in four aim at a checkpoint write
        for k in range(1 if trial % 2 == 0 else 2):
            at_step = rng.randint(_progress(out) if out.exists() else 0, TOTAL_STEPS - 1)
            delay = rng.uniform(0.0, STARTUP_S if at_step == 0 else 0.05)
            jitter = rng.uniform(0.0, 0.003) if in_write else None
            ended = _run_killed(cmd, out, at_step, delay, jitter)
            if ended is not None:
                break  # it ended before the kill
            kills.append(f"{at_step}+{delay:.3f}s" + (f"+w{1000 * jitter:.1f}ms" if jitter is not None else ""))
            hits.append(_what_was_hit(out) if out.exists() else {"tmp": False, "split": False, "pre": True})
            pre = not (out / "ensemble.json").exists()
            cmd = _command(out) if pre else _resume_command(out)
            actions.append("rerun" if pre else "resume")
        if ended is None:
            final = _run(cmd)
            ended, stderr = final.returncode, final.stderr
        else:
            stderr = "(the process the kill was meant for)"
        if ended != 0:
            failure = f"exit {ended}: {stderr.strip()[-200:]}"
        diffs = [] if failure else compare(out, reference)
        verdict = "failure" if failure else ("identical" if not diffs else "different")
        row = {"trial": trial, "kills": " ".join(kills) or "-",
               "inside_write": any(h["tmp"] for h in hits), "members_split": any(h["split"] for h in hits),
               "before_listing": any(h["pre"] for h in hits), "continued_by": " ".join(actions) or "-",
               "verdict": verdict, "detail": failure or "; ".join(diffs)}
        rows.append(row)
        print(f"trial {trial:>2}: kills (step+delay) {row['kills']:>30}  tmp={int(row['inside_write'])} "
              f"split={int(row['members_split'])} pre={int(row['before_listing'])}  "
              f"{row['continued_by']:<13} {verdict} {row['detail'][:120]}", flush=True)
        if verdict == "identical":
            shutil.rmtree(out, ignore_errors=True)

    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("identical", "different", "failure")}
    killed = sum(r["kills"] != "-" for r in rows)
    print(f"trials {len(rows)} (killed {killed}; inside a write {sum(r['inside_write'] for r in rows)}, "
          f"members at different steps {sum(r['members_split'] for r in rows)}, before ensemble.json "
          f"{sum(r['before_listing'] for r in rows)}): identical {counts['identical']}, "
          f"different {counts['different']}, failures {counts['failure']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if args.workdir is None and counts["identical"] == len(rows):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if counts["identical"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
