"""Bad inputs to the newer commands, run as real processes (issue 24's harness).

Families: ``fit --seeds``, ``python -m kanode.ensemble`` (pack manifests),
``kanode.analysis`` (hessian, cost, memory options and files) and
``kanode.symbolic`` options. Each family has hand-listed cases (the issue's
findings and their neighbours) and hypothesis-generated ones; a generated
input is kept only when this script's own oracle (written here, independent
of kanode's validators) says it is invalid, so every case is a bad input.

Every case runs as ``python -m ...`` with a timeout and is classified:

* ``clean``: exit 2 and exactly one stderr line ``kanode: error: ...``;
* ``traceback``: a Python traceback on stderr;
* ``silent``: exit 0 (the bad input was accepted);
* ``hang``: still running at the timeout (killed);
* ``other``: anything else (another status, several stderr lines).

Bad inputs must fail before any work, so each case is cheap; the timeout
bounds the ones that do not (a silent accept starts real work).

Usage: python experiments/fuzz_commands.py [--examples 25] [--timeout 60] [--jobs 2]
       [--families seeds,ensemble,analysis,symbolic] [--out experiments/results]
Writes ``fuzz_commands.csv`` (one row per case) and prints the counts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("clean", "traceback", "silent", "hang", "other")
TINY_FIT = ["--widths", "2", "3", "2", "--grid-size", "3", "--steps", "1", "--lbfgs-steps", "0",
            "--optimizer", "adam", "--no-plots", "--quiet"]


@dataclass(frozen=True)
class Case:
    family: str
    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    case: Case
    outcome: str
    returncode: int | None
    seconds: float
    stderr_tail: str


# ---------------------------------------------------------------- fixtures
def make_fixtures(root: Path) -> dict[str, Path]:
    """A finished tiny run, a file, an ensemble parent, a big run's config (no checkpoint)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = root / "run"
    subprocess.run([sys.executable, "-m", "kanode.fit", *TINY_FIT, "--out", str(run)], env=env,
                   check=True, capture_output=True, timeout=600)
    a_file = root / "file.txt"
    a_file.write_text("not a directory\n")
    ensemble = root / "ensemble"
    ensemble.mkdir()
    (ensemble / "ensemble.json").write_text(json.dumps({"members": ["seed-0"]}))
    big = root / "big"
    big.mkdir()
    config = (run / "config.toml").read_text()
    config = re.sub(r"(?m)^widths = .*$", "widths = [2, 2500, 2]", config)
    config = re.sub(r"(?m)^grid_size = .*$", "grid_size = 995", config)  # 10,000,000 parameters
    (big / "config.toml").write_text(config)
    (big / "metrics.csv").write_text((run / "metrics.csv").read_text().splitlines()[0] + "\n")
    return {"root": root, "run": run, "file": a_file, "ensemble": ensemble, "big": big,
            "config": run / "config.toml"}


# ---------------------------------------------------------------- oracles
SEEDS_RE = re.compile(r"\s*\d+\s*(-\s*\d+\s*)?")


def seeds_valid(text: str) -> bool:
    """The --seeds grammar: comma-separated N or LO-HI (LO <= HI), no repeats, <= 4096 seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        if not SEEDS_RE.fullmatch(part):
            return False
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi) if hi.strip() else int(lo)
        if last < first or last - first > 5000:
            return False
        seeds += range(first, last + 1)
    return 0 < len(seeds) <= 4096 and len(set(seeds)) == len(seeds)


def member_valid(m: object, config: str) -> bool:
    if not isinstance(m, dict) or set(m) - {"run_dir", "config_path", "resume", "lbfgs_steps"}:
        return False
    if not isinstance(m.get("resume"), bool):
        return False
    rd, cp, steps = m.get("run_dir"), m.get("config_path"), m.get("lbfgs_steps")
    ok_path = lambda v: isinstance(v, str) and v.strip() != "" and "\0" not in v  # noqa: E731
    if not ok_path(rd) or len(rd.encode()) > 255:
        return False
    if not (ok_path(cp) or (cp is None and m["resume"])):
        return False
    return steps is None or (isinstance(steps, int) and not isinstance(steps, bool) and 0 <= steps)


ANALYSIS_RANGES = {"--chunk": (1, 5000), "--k": (1, 1000), "--probes": (1, 100_000),
                   "--slq-probes": (0, 10_000), "--slq-steps": (1, 10_000), "--threads": (0, 1024)}


# ---------------------------------------------------------------- cases
def seeds_cases(fx: dict[str, Path], examples: int) -> list[Case]:
    out = str(fx["root"] / "seeds-out")
    hand = {
        "empty": [""], "negative": ["-1"], "reversed": ["3-1"], "twice": ["0,0"], "letters": ["a"],
        "too many": ["0-5000"], "huge": ["99999999999999999999"], "trailing comma": ["0-1,"],
    }
    cases = [Case("seeds", f"--seeds {k}", ("kanode.fit", *TINY_FIT, "--seeds", *v, "--out", out))
             for k, v in hand.items()]
    bad_options = {"--lr 0": ["--lr", "0"], "--steps -1": ["--steps=-1"], "--method tsit5": ["--method", "tsit5"],
                   "--method scipy_solver": ["--method", "scipy_solver"], "--threads 1e9": ["--threads", "1000000000"],
                   "--grid-size 0": ["--grid-size", "0"], "--widths 2 0 2": ["--widths", "2", "0", "2"]}
    cases += [Case("seeds", f"--seeds 0-1 {k}", ("kanode.fit", *TINY_FIT, *v, "--seeds", "0-1", "--out", out))
              for k, v in bad_options.items()]
    outs = {"a finished run": str(fx["run"]), "inside a run": str(fx["run"] / "inner"),
            "a file": str(fx["file"]), "256-byte name": str(fx["root"] / ("a" * 256)), "empty": ""}
    cases += [Case("seeds", f"--out {k}", ("kanode.fit", *TINY_FIT, "--seeds", "0-1", "--out", v))
              for k, v in outs.items()]
    cases.append(Case("seeds", "--seeds with --resume", ("kanode.fit", "--seeds", "0-1", "--resume", str(fx["run"]))))
    cases.append(Case("seeds", "single fit --out 256-byte name",
                      ("kanode.fit", *TINY_FIT, "--out", str(fx["root"] / ("b" * 256)))))
    generated: list[str] = []

    @settings(max_examples=examples * 4, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.text(alphabet="0123456789-, x", min_size=0, max_size=12))
    def collect(text: str) -> None:
        if not seeds_valid(text) and text not in generated and len(generated) < examples:
            generated.append(text)

    collect()
    cases += [Case("seeds", f"generated --seeds {t!r}", ("kanode.fit", *TINY_FIT, "--seeds", t, "--out", out))
              for t in generated]
    return cases


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12)
                           | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


def ensemble_cases(fx: dict[str, Path], examples: int) -> list[Case]:
    root, config = fx["root"] / "manifests", str(fx["config"])
    root.mkdir(exist_ok=True)

    def write(name: str, content: object) -> str:
        path = root / f"{len(list(root.iterdir())):03d}-{name}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    def one(**changes: object) -> dict:
        return {"members": [{"run_dir": str(fx["root"] / "pack" / "r0"), "config_path": config,
                             "resume": False, "lbfgs_steps": None, **changes}]}

    hand = {
        "run_dir null": one(run_dir=None), "run_dir int": one(run_dir=3), "run_dir list": one(run_dir=["a"]),
        "run_dir empty": one(run_dir=""), "config_path null": one(config_path=None),
        "config_path missing file": one(config_path=str(fx["root"] / "none.toml")),
        "run_dir inside a run": one(run_dir=str(fx["run"] / "inner")),
        "run_dir 256 bytes": one(run_dir=str(fx["root"] / ("c" * 256))),
        "resume string": one(resume="no"), "lbfgs_steps negative": one(lbfgs_steps=-1),
        "5000 members": {"members": [{"run_dir": f"r{i}", "config_path": config, "resume": False}
                                     for i in range(5000)]},
        "100000-deep": "[" * 100_000 + "]" * 100_000, "not json": "garbage", "list": [1],
        "empty members": {"members": []},
    }
    cases = [Case("ensemble", k, ("kanode.ensemble", write(k.replace(" ", "_"), v))) for k, v in hand.items()]
    ok = write("ok_but_threads", one(config_path=str(fx["root"] / "none.toml")))
    cases += [Case("ensemble", f"--threads {t}", ("kanode.ensemble", ok, f"--threads={t}"))
              for t in ("1000000000", "-1")]
    cases.append(Case("ensemble", "manifest missing", ("kanode.ensemble", str(root / "missing.json"))))
    cases.append(Case("ensemble", "manifest is a directory", ("kanode.ensemble", str(root))))
    generated: list[object] = []

    @settings(max_examples=examples * 3, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(["run_dir", "config_path", "resume", "lbfgs_steps", "x"]),
                           JSON_VALUES, max_size=5))
    def collect(member: dict) -> None:
        if len(generated) < examples and not member_valid(member, config):
            generated.append({"members": [member]})

    collect()
    cases += [Case("ensemble", f"generated {json.dumps(m)[:60]}", ("kanode.ensemble", write("gen", m)))
              for m in generated]
    return cases


def analysis_cases(fx: dict[str, Path], examples: int) -> list[Case]:
    run, out = str(fx["run"]), str(fx["root"] / "analysis-out")
    hessian = ("kanode.analysis", "hessian", run, "--out", out)
    hand = {"--chunk 0": ["--chunk", "0"], "--k 0": ["--k", "0"], "--probes 0": ["--probes", "0"],
            "--slq-steps 0": ["--slq-steps", "0"], "--threads=-1": ["--threads=-1"],
            "--method svd": ["--method", "svd"], "--k x": ["--k", "x"]}
    cases = [Case("analysis", f"hessian {k}", (*hessian, *v)) for k, v in hand.items()]
    cases += [
        Case("analysis", "hessian --out a file", ("kanode.analysis", "hessian", run, "--out", str(fx["file"]))),
        Case("analysis", "hessian --out inside the run", ("kanode.analysis", "hessian", run, "--out", run + "/h")),
        Case("analysis", "hessian --out 256-byte name",
             ("kanode.analysis", "hessian", run, "--out", str(fx["root"] / ("d" * 256)))),
        Case("analysis", "hessian of a missing run", ("kanode.analysis", "hessian", str(fx["root"] / "none"), "--out", out)),
        Case("analysis", "hessian of a directory without runs",
             ("kanode.analysis", "hessian", str(fx["ensemble"]), "--out", out)),
        Case("analysis", "exact Hessian of 10M parameters", ("kanode.analysis", "hessian", str(fx["big"]), "--out", out)),
        Case("analysis", "Lanczos of 10M parameters, k 1000",
             ("kanode.analysis", "hessian", str(fx["big"]), "--method", "lanczos", "--k", "1000",
              "--probes", "100000", "--out", out)),
        Case("analysis", "cost --sizes 0", ("kanode.analysis", "cost", "--sizes", "0", "--out", out)),
        Case("analysis", "cost --spline-order 99", ("kanode.analysis", "cost", "--spline-order", "99", "--out", out)),
        Case("analysis", "memory --hidden 0", ("kanode.analysis", "memory", "--hidden", "0", "--out", out)),
        Case("analysis", "memory --systems nope", ("kanode.analysis", "memory", "--systems", "nope", "--out", out)),
        Case("analysis", "memory --device tpu", ("kanode.analysis", "memory", "--device", "tpu", "--out", out)),
    ]
    # damaged files: a copy of the run with a garbage summary.json; resumes with bad row.json
    damaged = fx["root"] / "damaged"
    if not damaged.exists():
        import shutil
        shutil.copytree(fx["run"], damaged)
        (damaged / "summary.json").write_text("{{{ garbage")
    cases.append(Case("analysis", "garbage summary.json", ("kanode.analysis", "hessian", str(damaged), "--out", out)))
    for label, text in {"garbage row.json": "garbage", "row.json without keys": "{}",
                        "row.json a list": "[1]", "row.json n_params string": json.dumps(
                            {"n_params": "x", "method": "exact", "lambda_max": 1, "lambda_min": 0,
                             "trace": 1, "time_s": 0})}.items():
        resume_out = fx["root"] / f"resume-{label.replace(' ', '_')}"
        (resume_out / "run").mkdir(parents=True, exist_ok=True)
        (resume_out / "run" / "row.json").write_text(text)
        cases.append(Case("analysis", f"--resume with {label}",
                          ("kanode.analysis", "hessian", run, "--resume", "--out", str(resume_out))))
    generated: list[tuple[str, str]] = []

    @settings(max_examples=examples * 4, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(ANALYSIS_RANGES)),
           st.one_of(st.integers(-10**12, 10**12), st.sampled_from(["", "1.5", "nan", "x", "1e3"])))
    def collect(option: str, value: object) -> None:
        lo, hi = ANALYSIS_RANGES[option]
        bad = not isinstance(value, int) or not lo <= value <= hi
        if bad and (option, str(value)) not in generated and len(generated) < examples:
            generated.append((option, str(value)))

    collect()
    cases += [Case("analysis", f"generated hessian {o}={v}", (*hessian, f"{o}={v}")) for o, v in generated]
    return cases


def symbolic_cases(fx: dict[str, Path], examples: int) -> list[Case]:
    out = str(fx["root"] / "symbolic-out")
    hand = {"--lr 0": ["--lr", "0"], "--finetune-lr inf": ["--finetune-lr", "inf"],
            "--sparse-steps=-3": ["--sparse-steps=-3"], "--grid-size 0": ["--grid-size", "0"],
            "--hidden 100000000": ["--hidden", "100000000"], "--digits 0": ["--digits", "0"],
            "--library x,x": ["--library", "x,x"], "--digits 1000": ["--digits", "1000"],
            "--polish-rounds=-1": ["--polish-rounds=-1"], "--sparsity nan": ["--sparsity", "nan"]}
    cases = [Case("symbolic", k, ("kanode.symbolic", *v, "--out", out)) for k, v in hand.items()]
    cases.append(Case("symbolic", "--out a file", ("kanode.symbolic", "--out", str(fx["file"]))))
    cases.append(Case("symbolic", "--out inside a run", ("kanode.symbolic", "--out", str(fx["run"] / "sym"))))
    return cases  # hand-listed only: the symbolic options' validation is another branch's work


FAMILIES = {"seeds": seeds_cases, "ensemble": ensemble_cases, "analysis": analysis_cases,
            "symbolic": symbolic_cases}


# ---------------------------------------------------------------- running
def classify(returncode: int | None, stderr: str) -> str:
    if returncode is None:
        return "hang"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if returncode == 0:
        return "silent"
    lines = stderr.strip().splitlines()
    if returncode == 2 and len(lines) == 1 and lines[0].startswith("kanode: error: "):
        return "clean"
    return "other"


def run_case(case: Case, timeout: float, cwd: Path) -> Outcome:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", *case.argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the case's own process group only
        _, stderr = proc.communicate()
        code = None
    seconds = time.perf_counter() - start
    return Outcome(case, classify(code, stderr), code, seconds, " | ".join(stderr.strip().splitlines()[-2:])[:300])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=25, help="hypothesis cases per family")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kanode-fuzz-") as tmp:
        root = Path(tmp)
        fx = make_fixtures(root)
        cases = [c for name in args.families.split(",") for c in FAMILIES[name](fx, args.examples)]
        work = root / "cwd"  # a silent accept's default output lands here, not in the repository
        work.mkdir()
        with ThreadPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(lambda c: run_case(c, args.timeout, work), cases))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "fuzz_commands.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["family", "case", "outcome", "returncode", "seconds", "stderr_tail"])
        for o in outcomes:
            writer.writerow([o.case.family, o.case.name, o.outcome, o.returncode, f"{o.seconds:.1f}", o.stderr_tail])
    print(f"{'family':<10} {'cases':>5} " + " ".join(f"{k:>9}" for k in OUTCOMES))
    for family in [*args.families.split(","), "all"]:
        picked = [o for o in outcomes if family in ("all", o.case.family)]
        counts = Counter(o.outcome for o in picked)
        print(f"{family:<10} {len(picked):>5} " + " ".join(f"{counts[k]:>9}" for k in OUTCOMES))
    for o in outcomes:
        if o.outcome != "clean":
            print(f"  {o.outcome:<9} {o.case.family}: {o.case.name}: {o.stderr_tail[:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
