"""kanode.sweep with an injected fake runner: grid expansion, results, resume, failures, CLI."""

from __future__ import annotations

import csv
import io
import math
import shutil
import sys
import threading
from pathlib import Path

import pytest

from kanode.config import ConfigError, FitConfig, load_config
from kanode.sweep import (COLUMNS, LocalBackend, PackTask, RunOutcome, RunTask, SweepConfig, SweepError,
                          estimate_params, expand, load_sweep, plan, run_sweep)
from kanode.sweep.__main__ import main as sweep_main
from tests.kanode.test_compare import exit_code, write_run

TINY = """
name = "tiny"
systems = ["lotka_volterra", "rigid_body"]
seeds = [0, 1]

[base]
optimizer = "adam"
steps = 4
lbfgs_steps = 0

[per_system.rigid_body]
rtol = 1e-6

[models.kan]
model = "kan"
grid_size = 3
hidden = [4]

[models.mlp]
model = "mlp"
hidden = { default = [16], rigid_body = [12] }

[grid]
lr = [0.01, 0.001]

[smoke]
steps = 2
"""


def tiny(tmp_path: Path, text: str = TINY) -> SweepConfig:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return load_sweep(path)


class FakeRunner:
    """Writes a finished run whose loss is ``lr * (seed + 1) / step``; lr >= 100 diverges.

    Records the tasks it got; a key in ``crash`` raises instead.
    """

    def __init__(self, crash: tuple[str, ...] = ()) -> None:
        self.tasks: list[RunTask] = []
        self.crash = crash
        self._lock = threading.Lock()

    def __call__(self, task: RunTask | PackTask) -> RunOutcome | list[RunOutcome]:
        if isinstance(task, PackTask):  # a packed job: its members in one call (one crash fails all)
            return [self(member) for member in task.members]
        with self._lock:
            self.tasks.append(task)
        if task.key in self.crash:
            raise RuntimeError("simulated crash")
        run_dir = Path(task.run_dir)
        cfg = load_config(run_dir / "config.toml" if task.resume else task.config_path)
        if task.resume:  # an interrupted run: this fake simply redoes it
            shutil.rmtree(run_dir)
        losses = [cfg.lr * (cfg.seed + 1) / step for step in range(1, cfg.steps + 1)]
        diverged = cfg.lr >= 100
        if diverged:
            losses[-1] = math.inf
        write_run(run_dir, losses, system=cfg.system, model=cfg.model, seed=cfg.seed,
                  status="diverged" if diverged else "finished", n_params=7,
                  **{k: v for k, v in cfg.to_dict().items()
                     if k not in ("system", "model", "seed")})
        return RunOutcome(task.key, "diverged" if diverged else "finished",
                          "non-finite loss" if diverged else "", 3 if diverged else 0, 0.01)


# ------------------------------------------------------------------ expansion
def test_expand_grid(tmp_path: Path) -> None:
    specs = expand(tiny(tmp_path))
    assert len(specs) == 2 * 2 * 2 * 2  # systems x models x lr values x seeds
    assert specs[0].key == "lotka_volterra/kan_lr=0.01_/seed0"
    assert specs[0].label == "kan[lr=0.01]"
    by_key = {s.key: s.config for s in specs}
    rb_mlp = by_key["rigid_body/mlp_lr=0.001_/seed1"]
    assert (rb_mlp.widths, rb_mlp.lr, rb_mlp.seed, rb_mlp.rtol) == ([3, 12, 3], 0.001, 1, 1e-6)
    lv_mlp = by_key["lotka_volterra/mlp_lr=0.01_/seed0"]
    assert (lv_mlp.widths, lv_mlp.rtol, lv_mlp.steps) == ([2, 16, 2], FitConfig().rtol, 4)
    assert by_key["rigid_body/kan_lr=0.01_/seed0"].widths == [3, 4, 3]
    assert by_key["rigid_body/kan_lr=0.01_/seed0"].grid_size == 3


def test_expand_smoke_uses_first_seed_and_overrides(tmp_path: Path) -> None:
    specs = expand(tiny(tmp_path), smoke=True)
    assert len(specs) == 8
    assert {s.seed for s in specs} == {0}
    assert {s.config.steps for s in specs} == {2}


def test_estimate_params_matches_design_formulas() -> None:
    assert estimate_params(FitConfig(model="kan", widths=[2, 10, 2], grid_size=5), 2) == 400
    assert estimate_params(FitConfig(model="kan", widths=[28, 8, 28]), 28) == 4480
    assert estimate_params(FitConfig(model="mlp", widths=[2, 80, 2]), 2) == 402
    assert estimate_params(FitConfig(model="mlp"), 3) == 50 * 4 + 3 * 51  # default [3, 50, 3]
    assert estimate_params(FitConfig(model="rswaf"), 2) == 2 * 10 * (5 + 2) * 2  # in·out·(G + 2)
    # time_input adds one input to the first layer, for default and for rule-made widths
    assert estimate_params(FitConfig(model="kan", time_input=True), 2) == 3 * 10 * 10 + 10 * 2 * 10


@pytest.mark.parametrize("edit, message", [
    (("[base]", "[base]\nbogus = 1"), "unknown key(s) bogus"),
    (("[base]", "[base]\nseed = 3"), "sets seed"),
    (('name = "tiny"', 'name = "tiny"\nextra = 1'), "unknown top-level key(s) extra"),
    (('systems = ["lotka_volterra"', 'systems = ["nope"'), "unknown system 'nope'"),
    (('"rigid_body"]', '"spiral"]'), "[per_system.rigid_body] names a system that is not in"),
    (("hidden = [4]", "hidden = [4]\nwidths = [2, 4, 2]"), "both hidden and widths"),
    (("hidden = [4]", "widths = [2, 4, 2]"), "must start and end with the state dimension 3"),
    (("hidden = [4]", "hidden = [0]"), "hidden must be a list of positive integers"),
    (("seeds = [0, 1]", "seeds = [0, 0]"), "lists a seed twice"),
    (("[smoke]", "[smoke]\nlr = -1.0"), "lr must be a positive number"),
    (("default = [16], ", ""), "no entry for lotka_volterra"),
    (("rigid_body = [12]", "rigid_bodi = [12]"), "names unknown system(s) rigid_bodi"),
])
def test_bad_sweep_configs_say_what_is_wrong(edit: tuple[str, str], message: str,
                                             tmp_path: Path) -> None:
    old, new = edit
    text = TINY.replace(old, new, 1)
    assert text != TINY
    with pytest.raises(ConfigError) as err:  # SweepError is a ConfigError
        expand(tiny(tmp_path, text), smoke=True)
    assert message in str(err.value)


# -------------------------------------------------------- running and results
def test_results_csv_and_summary(tmp_path: Path) -> None:
    specs = [s for s in expand(tiny(tmp_path)) if s.system == "lotka_volterra"]
    runner = FakeRunner()
    rows = run_sweep(specs, tmp_path / "sw", LocalBackend(2), runner=runner, progress=False)
    assert len(runner.tasks) == 8 and not any(t.resume for t in runner.tasks)
    with (tmp_path / "sw" / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == COLUMNS
    assert len(table) == 8 and {r["status"] for r in table} == {"finished"}
    row = next(r for r in table if r["run_dir"] == "lotka_volterra/mlp_lr=0.001_/seed1")
    # loss lr*(seed+1)/step at the last step (4): 0.001 * 2 / 4
    assert (row["model"], float(row["final_train_loss"]), row["steps"]) == (
        "mlp[lr=0.001]", 0.0005, "4")
    assert float(row["best_train_loss"]) == 0.0005 and row["n_params"] == "7"
    assert [r.final_train_loss for r in rows] == [float(r["final_train_loss"]) for r in table]
    summary = (tmp_path / "sw" / "summary.md").read_text()
    # kan[lr=0.01]: seeds 0, 1 -> final 0.0025, 0.005 -> median 0.00375
    assert "| lotka_volterra | kan[lr=0.01] | 7 | 2/2 | 0.00375 [0.0025, 0.005]" in summary
    assert (tmp_path / "sw" / "cells" / "lotka_volterra" / "kan_lr=0.01_" / "seed0.toml").exists()


def test_rerun_skips_finished_and_resumes_interrupted(tmp_path: Path) -> None:
    specs = expand(tiny(tmp_path), smoke=True)[:4]
    run_sweep(specs, tmp_path / "sw", LocalBackend(2), runner=FakeRunner(), progress=False)
    again = FakeRunner()
    run_sweep(specs, tmp_path / "sw", LocalBackend(2), runner=again, progress=False)
    assert again.tasks == []
    # Simulate a run killed mid-way: config, partial metrics and a checkpoint, no summary.
    victim = tmp_path / "sw" / specs[1].key
    (victim / "summary.json").unlink()
    (victim / "checkpoints").mkdir()
    (victim / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
    assert [a.kind for a in plan(specs, tmp_path / "sw")] == ["skip", "resume", "skip", "skip"]
    # A start that died before its first checkpoint is started afresh.
    (tmp_path / "sw" / specs[2].key / "summary.json").unlink()
    third = FakeRunner()
    rows = run_sweep(specs, tmp_path / "sw", LocalBackend(1), runner=third, progress=False)
    assert sorted((t.key, t.resume) for t in third.tasks) == sorted(
        [(specs[1].key, True), (specs[2].key, False)])
    assert [r.status for r in rows] == ["finished"] * 4


def test_failed_and_diverged_runs_are_recorded_and_others_finish(tmp_path: Path) -> None:
    text = TINY.replace("lr = [0.01, 0.001]", "lr = [0.01, 1000.0]")
    specs = expand(tiny(tmp_path, text), smoke=True)
    assert len(specs) == 8
    crash = specs[0].key
    rows = run_sweep(specs, tmp_path / "sw", LocalBackend(2), runner=FakeRunner(crash=(crash,)),
                     progress=False, pack=False)  # one process per run: a crash fails that run only
    status = {r.run_dir: (r.status, r.reason) for r in rows}
    assert status[crash] == ("failed", "RuntimeError: simulated crash")
    diverged = [k for k, (s, _) in status.items() if s == "diverged"]
    assert sorted(diverged) == sorted(s.key for s in specs if s.config.lr == 1000.0)
    assert sum(s == "finished" for s, _ in status.values()) == 3
    summary = (tmp_path / "sw" / "summary.md").read_text()
    assert f"`{crash}`: failed — RuntimeError: simulated crash" in summary
    # Rerun: the failed run is retried, the diverged and finished ones are kept.
    retry = FakeRunner()
    rows = run_sweep(specs, tmp_path / "sw", LocalBackend(2), runner=retry, progress=False)
    assert [t.key for t in retry.tasks] == [crash]
    assert sum(r.status == "finished" for r in rows) == 4


def test_changed_config_is_refused(tmp_path: Path) -> None:
    specs = expand(tiny(tmp_path), smoke=True)[:1]
    run_sweep(specs, tmp_path / "sw", LocalBackend(1), runner=FakeRunner(), progress=False)
    changed = expand(tiny(tmp_path, TINY.replace("steps = 2", "steps = 3")), smoke=True)[:1]
    with pytest.raises(SweepError, match="different configuration .steps differ"):
        run_sweep(changed, tmp_path / "sw", LocalBackend(1), runner=FakeRunner(),
                  progress=False)


def test_progress_prints_one_line_per_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    stream = io.StringIO()
    specs = expand(tiny(tmp_path), smoke=True)[:3]
    run_sweep(specs, tmp_path / "sw", LocalBackend(1), runner=FakeRunner(), stream=stream)
    lines = [ln for ln in stream.getvalue().replace("\r", "\n").splitlines() if "] finished" in ln]
    assert len(lines) == 3 and lines[0].startswith("[1/3] finished")


# ------------------------------------------------------------------------ CLI
def test_cli_list_prints_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    assert sweep_main([str(path), "--list", "--out", str(tmp_path / "sw")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 16
    assert any("rigid_body/mlp_lr=0.01_/seed0" in ln and "[3, 12, 3]" in ln and ln.endswith(" 87")
               for ln in out)  # 12*(3+1) + 3*(12+1)


@pytest.mark.parametrize("argv, message", [
    (["missing.toml"], "does not exist"),
    (["{cfg}", "--workers", "0"], "--workers must be at least 1"),
    (["{cfg}", "--backend", "slurm"], "invalid choice"),
    (["{cfg}", "--ray-address", "auto"], "--ray-address needs --backend ray"),
])
def test_cli_bad_input_exits_2(argv: list[str], message: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    args = [a.format(cfg=path) for a in argv] + ["--out", str(tmp_path / "sw")]
    assert exit_code(sweep_main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("kanode: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "sw").exists()


def test_ray_backend_without_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from kanode.sweep import make_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SweepError, match=r"needs Ray; install it with pip install 'kanode\[ray\]'"):
        make_backend("ray", 2)


def test_summary_head_to_head_states_winner_factor_and_seeds(tmp_path: Path) -> None:
    text = (TINY.replace("[grid]\nlr = [0.01, 0.001]\n", "")
            .replace('model = "mlp"\n', 'model = "mlp"\nlr = 0.08\n')
            .replace('model = "kan"\n', 'model = "kan"\nlr = 0.02\n'))
    specs = [s for s in expand(tiny(tmp_path, text)) if s.system == "lotka_volterra"]
    run_sweep(specs, tmp_path / "sw", LocalBackend(2), runner=FakeRunner(), progress=False)
    summary = (tmp_path / "sw" / "summary.md").read_text()
    # final losses kan 0.02*(seed+1)/4, mlp 0.08*(seed+1)/4: medians 0.0075, 0.03
    assert ("- lotka_volterra: **kan** lower by 4× (median 0.0075 vs 0.03); "
            "lower in 2/2 seeds") in summary
