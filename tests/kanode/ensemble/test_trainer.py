"""Ensemble training: each member trains as its single fit, diverging members are frozen,
runs resume (as ensembles and as single fits), the ``--seeds`` command line, packing.

Everything runs classic RK4 (fixed steps: a member's solve is its single solve, to
rounding) on a short Lotka–Volterra window with small networks.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from kanode.config import ConfigError, FitConfig, load_config
from kanode.ensemble.packing import check_packable, pack_groups, pack_key
from kanode.fit import fit, main
from kanode.fitting import fit_ensemble
from kanode.lifecycle import make_trainer as make_ensemble_trainer
from kanode.runs import load_checkpoint, read_metrics
from kanode.train import StepRecord, Trainer, TrainStep

# t <= 1.3 (14 points), [2, 5, 2] networks: a step of a 4-member ensemble is a few ms.
SMALL = dict(method="rk4", train_fraction=0.1, widths=[2, 5, 2], grid_size=5, n_test_traj=1,
             eval_every=4, plots=False)
ADAM_LBFGS = dict(optimizer="adam+lbfgs", steps=15, lbfgs_steps=5, **SMALL)
LRS = (1e-2, 2e-2, 3e-2, 5e-3)           # one learning rate per member
LBFGS_LRS = (1.0, 0.8, 0.6, 0.9)         # and one L-BFGS step scale


def rel_err(a: float, b: float) -> float:
    """|a - b| / |b| (0 for two equal values)."""
    return 0.0 if a == b else abs(a - b) / abs(b)


def member_configs(n: int = 4, **settings: Any) -> list[FitConfig]:
    """Member m: seed m, learning rate LRS[m], L-BFGS step scale LBFGS_LRS[m]."""
    return [FitConfig(seed=m, lr=LRS[m], lbfgs_lr=LBFGS_LRS[m], **settings) for m in range(n)]


def run_ensemble(configs: Sequence[FitConfig]) -> tuple[Trainer, list[TrainStep]]:
    trainer = make_ensemble_trainer(configs)
    return trainer, list(trainer.steps())


def member_records(steps: Sequence[TrainStep], m: int) -> list[StepRecord]:
    return [s.records[m] for s in steps if m in s.records]


def assert_close_records(got: Sequence[StepRecord], want: Sequence[StepRecord], rel: float) -> None:
    """Same steps, phases and learning rates; losses (and evaluations) within ``rel``."""
    assert [(r.step, r.phase, r.lr) for r in got] == [(r.step, r.phase, r.lr) for r in want]
    for g, w in zip(got, want):
        assert rel_err(g.train_loss, w.train_loss) <= rel, (g.step, g.train_loss, w.train_loss)
        for name in ("val_loss", "extrap_loss"):
            a, b = getattr(g, name), getattr(w, name)
            assert (a is None) == (b is None), (g.step, name)
            if b is not None:
                assert rel_err(a, b) <= rel, (g.step, name, a, b)


# ------------------------------------------------------------ members = single fits
@pytest.mark.parametrize("model", ["kan", "mlp", pytest.param("rswaf", marks=pytest.mark.slow)])
def test_members_train_as_their_single_fits(model: str) -> None:
    configs = member_configs(model=model, **ADAM_LBFGS)
    trainer, steps = run_ensemble(configs)
    assert len(steps) == 20 and all(not s.diverged for s in steps)
    final = trainer.evaluate()
    for m, config in enumerate(configs):
        single, alone = run_ensemble([config])  # its single fit: an ensemble of one
        records = member_records(alone, 0)
        assert [r.phase for r in records] == ["adam"] * 15 + ["lbfgs"] * 5
        assert_close_records(member_records(steps, m), records, rel=1e-8)
        want = single.evaluate()[0]
        assert rel_err(final[m].train_loss, want.train_loss) <= 1e-8
        assert rel_err(final[m].val_loss, want.val_loss) <= 1e-8
        assert rel_err(final[m].extrap_loss, want.extrap_loss) <= 1e-8
    # the members really are different fits (their own seeds and learning rates)
    last = [steps[-1].records[m].train_loss for m in range(4)]
    assert len({round(v, 6) for v in last}) == 4, last
    assert last[0] < steps[0].records[0].train_loss / 2  # and they learn


def test_members_draw_their_own_random_windows() -> None:
    configs = member_configs(model="kan", optimizer="adam", steps=15, batch_time=5, batch_size=4,
                             **SMALL)
    trainer, steps = run_ensemble(configs)
    final = trainer.evaluate()
    for m, config in enumerate(configs):
        single, alone = run_ensemble([config])
        assert_close_records(member_records(steps, m), member_records(alone, 0), rel=1e-8)
        want = single.evaluate()[0]
        assert rel_err(final[m].train_loss, want.train_loss) <= 1e-8
        assert rel_err(final[m].extrap_loss, want.extrap_loss) <= 1e-8


def test_members_that_share_data_simulate_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fit_module = sys.modules["kanode.lifecycle"]
    calls: list[int] = []
    real = fit_module.load_data
    monkeypatch.setattr(fit_module, "load_data", lambda c: calls.append(c.data_seed) or real(c))
    configs = member_configs(model="mlp", optimizer="adam", steps=1, **SMALL)
    configs[3] = configs[3].replace(data_seed=7)
    trainer = make_ensemble_trainer(configs)
    assert sorted(calls) == [0, 7]
    for m, config in enumerate(configs):  # each member still has its own config's data
        want = real(config)
        assert torch.equal(trainer.data.members[m].y, want.y.to(torch.float64))
        assert torch.equal(trainer.data.members[m].y_held_out, want.y_held_out.to(torch.float64))
    assert not torch.equal(trainer.data.members[0].y_held_out, trainer.data.members[3].y_held_out)


# ---------------------------------------------------------------------- divergence
DIVERGING_LR = 1e3  # Adam moves every KAN coefficient by ~1e3: the RK4 solution overflows


def test_a_diverging_member_is_frozen_and_the_others_go_on() -> None:
    settings = dict(model="kan", **ADAM_LBFGS)
    configs = member_configs(**settings)
    configs[2] = configs[2].replace(lr=DIVERGING_LR)
    trainer, steps = run_ensemble(configs)
    assert len(steps) == 20  # the run went on to the end
    hit = [i for i, s in enumerate(steps) if s.diverged]
    assert hit == [1] and list(steps[1].diverged) == [2]
    assert "non-finite" in steps[1].diverged[2]
    assert trainer.frozen == {2: steps[1].diverged[2]}
    assert [s.step for s in member_records(steps, 2)] == [1]  # no record from the step it failed
    # its single fit fails at the same step, from the same first loss and parameters
    single, single_steps = run_ensemble([configs[2]])
    assert [list(s.diverged) for s in single_steps] == [[], [0]]  # alone, it diverges there too
    assert "non-finite" in single_steps[1].diverged[0]
    assert_close_records(member_records(steps, 2), member_records(single_steps, 0), rel=1e-8)
    frozen = trainer.field.member_state_dict(2)
    for name, value in single.field.member_state_dict(0).items():
        assert torch.allclose(frozen[name], value, rtol=1e-10, atol=0), name
    assert trainer.states[2].step == single.states[0].step == 1
    # the other three: bitwise the course they take beside a member 2 that does not diverge
    # (same M, same kernels), and to rounding that of an ensemble of the three alone
    healthy, steps_healthy = run_ensemble(member_configs(**settings))
    without, steps_without = run_ensemble([configs[m] for m in (0, 1, 3)])
    final, final_healthy, final_without = trainer.evaluate(), healthy.evaluate(), without.evaluate()
    for k, m in enumerate((0, 1, 3)):
        got = member_records(steps, m)
        assert len(got) == 20
        assert_close_records(got, member_records(steps_healthy, m), rel=0.0)
        assert_close_records(got, member_records(steps_without, k), rel=1e-8)
        assert final[m] == final_healthy[m]
        assert rel_err(final[m].train_loss, final_without[k].train_loss) <= 1e-8
    assert all(math.isfinite(e.train_loss) for e in final)  # frozen at finite parameters


def test_fit_ensemble_reports_the_diverged_member() -> None:
    configs = member_configs(n=3, model="kan", **{**ADAM_LBFGS, "steps": 4, "lbfgs_steps": 1})
    configs[1] = configs[1].replace(lr=DIVERGING_LR)
    results = fit_ensemble(configs)
    assert [r.summary["status"] for r in results] == ["finished", "diverged", "finished"]
    assert results[1].summary["reason"].startswith("step 2: ")
    assert results[1].summary["steps"] == 1 and len(results[1].history) == 1
    assert [r.summary["steps"] for r in (results[0], results[2])] == [5, 5]


# -------------------------------------------------------------------------- resume
# Random windows in the Adam phase (generator state), a grid extension at step 4
# (checkpoints of grid 5 and 10), checkpoints only when asked (stop) and at the end.
RESUMABLE = dict(model="kan", optimizer="adam+lbfgs", steps=6, lbfgs_steps=4, batch_time=5,
                 batch_size=4, grid_extend=[[4, 10]], checkpoint_every=100,
                 **{**SMALL, "eval_every": 2})
RESUME_MEMBERS = 3


def member_dirs(root: Path) -> list[Path]:
    return [root / f"seed-{m}" for m in range(RESUME_MEMBERS)]


def metric_rows(run_dir: Path) -> list[tuple]:
    """metrics.csv without the wall times."""
    return [tuple(v for k, v in row.items() if k != "wall_time")
            for row in read_metrics(run_dir / "metrics.csv")]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-member ensemble of RESUMABLE (10 steps)."""
    root = tmp_path_factory.mktemp("whole")
    # the function-scoped float64 / one-thread defaults of conftest.py are not set yet here, and
    # the initial weights depend on torch's default dtype (not only on config.dtype)
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    try:
        results = fit_ensemble(member_configs(RESUME_MEMBERS, **RESUMABLE), outs=member_dirs(root))
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_num_threads(old_threads)
    assert [r.summary["status"] for r in results] == ["finished"] * RESUME_MEMBERS
    return root


@pytest.mark.parametrize("stop_at", [3, 8], ids=["adam-phase", "lbfgs-phase"])
def test_an_ensemble_resumes_as_if_uninterrupted(whole_run: Path, tmp_path: Path, stop_at: int) -> None:
    dirs = member_dirs(tmp_path)
    part = fit_ensemble(member_configs(RESUME_MEMBERS, **RESUMABLE), outs=dirs, stop_at=stop_at)
    assert [r.summary["status"] for r in part] == ["stopped"] * RESUME_MEMBERS
    for d in dirs:
        assert len(read_metrics(d / "metrics.csv")) == stop_at
        assert load_checkpoint(d / "checkpoints" / "last.pt")["grid_size"] == (5 if stop_at <= 4 else 10)
    single_dir = tmp_path / "member-1-alone"
    shutil.copytree(dirs[1], single_dir)
    resumed = fit_ensemble(resume=dirs)
    assert [r.summary["status"] for r in resumed] == ["finished"] * RESUME_MEMBERS
    for d, w in zip(dirs, member_dirs(whole_run)):
        assert metric_rows(d) == metric_rows(w)
    # a stopped member's directory also resumes as a single fit, on the ensemble's course
    alone = fit(resume=single_dir)
    assert alone.summary["status"] == "finished"
    got = read_metrics(single_dir / "metrics.csv")
    want = read_metrics(member_dirs(whole_run)[1] / "metrics.csv")
    assert [r["step"] for r in got] == list(range(1, 11))
    for g, w in zip(got, want):
        assert rel_err(g["train_loss"], w["train_loss"]) <= 1e-8, (g["step"], g["train_loss"],
                                                                   w["train_loss"])


def test_a_member_directory_continues_as_a_single_fit(whole_run: Path, tmp_path: Path) -> None:
    ensemble_dirs = member_dirs(tmp_path / "ensemble")
    for src, dst in zip(member_dirs(whole_run), ensemble_dirs):
        shutil.copytree(src, dst)
    single_dir = tmp_path / "single"
    shutil.copytree(member_dirs(whole_run)[2], single_dir)
    more = RESUMABLE["lbfgs_steps"] + 3
    continued = fit_ensemble(resume=ensemble_dirs, lbfgs_steps=more)
    assert [r.summary["steps"] for r in continued] == [13] * RESUME_MEMBERS
    alone = fit(resume=single_dir, lbfgs_steps=more)
    assert alone.summary["status"] == "finished" and alone.summary["steps"] == 13
    got = read_metrics(single_dir / "metrics.csv")
    want = read_metrics(ensemble_dirs[2] / "metrics.csv")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 14))
    assert metric_rows(single_dir)[:10] == metric_rows(member_dirs(whole_run)[2])  # history kept
    for g, w in zip(got[10:], want[10:]):
        assert g["phase"] == w["phase"] == "lbfgs"
        assert rel_err(g["train_loss"], w["train_loss"]) <= 1e-8, (g["step"], g["train_loss"],
                                                                   w["train_loss"])
    assert got[-1]["train_loss"] < got[9]["train_loss"]  # the extra steps did something
    assert rel_err(alone.summary["final_train_loss"], continued[2].summary["final_train_loss"]) <= 1e-8


# ----------------------------------------------------------------------------- CLI
CLI_FAST = ["--quiet", "--no-plots", "--widths", "2", "5", "2", "--train-fraction", "0.1"]


def test_seeds_command_line_writes_one_run_per_seed(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ens"
    code = main(["--seeds", "0-2", "--out", str(out), "--steps", "3", "--lbfgs-steps", "1", *CLI_FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads((out / "ensemble.json").read_text())["members"] == ["seed-0", "seed-1", "seed-2"]
    finals = []
    for seed in range(3):
        run = out / f"seed-{seed}"
        for name in ("config.toml", "metrics.csv", "checkpoints/last.pt", "summary.json"):
            assert (run / name).is_file(), (seed, name)
        assert not (run / "plots").exists() or not any((run / "plots").iterdir())
        assert load_config(run / "config.toml").seed == seed
        summary = json.loads((run / "summary.json").read_text())
        assert summary["seed"] == seed and summary["status"] == "finished" and summary["steps"] == 4
        assert [r["phase"] for r in read_metrics(run / "metrics.csv")] == ["adam"] * 3 + ["lbfgs"]
        assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
        finals.append(summary["final_train_loss"])
    assert len(set(finals)) == 3  # three seeds, three fits
    assert "3 × kan" in captured.out


@pytest.mark.parametrize("spec", ["3-1", "a", "0,0", "", "1-", "-1"])
def test_bad_seed_lists_exit_2_with_one_line(spec: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ens"
    code = main(["--seeds", spec, "--out", str(out), "--steps", "1", "--lbfgs-steps", "0", *CLI_FAST])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kanode: error:"), err
    assert not out.exists()


@pytest.mark.parametrize(("change", "field"), [(dict(widths=[2, 6, 2]), "widths"),
                                                (dict(method="euler"), "method"),
                                                (dict(sparsity=1e-3), "sparsity")])
def test_fit_ensemble_refuses_configs_that_cannot_share_a_solve(change: dict[str, Any], field: str,
                                                                 tmp_path: Path) -> None:
    configs = member_configs(n=3, model="kan", **ADAM_LBFGS)
    configs[1] = configs[1].replace(**change)
    outs = [tmp_path / f"seed-{m}" for m in range(3)]
    with pytest.raises(ConfigError, match=f"member 1 has (a )?{field}") as info:
        fit_ensemble(configs, outs)
    assert "\n" not in str(info.value)
    assert not any(o.exists() for o in outs)  # refused before any directory is written


# ------------------------------------------------------------------------- packing
def test_check_packable_allows_member_fields_only() -> None:
    base = FitConfig(**ADAM_LBFGS)
    check_packable([base, base.replace(seed=3, lr=0.1, lbfgs_lr=0.5, grad_clip=1.0, noise=0.01,
                                       data_seed=4, y0_spread=0.2, lr_schedule="step")])
    with pytest.raises(ConfigError, match="member 2 has steps=16 but member 0 has 15"):
        check_packable([base, base.replace(seed=1), base.replace(steps=16)])
    with pytest.raises(ConfigError, match="member 1 has coef_l1=0.001 but member 0 has 0.0"):
        check_packable([base, base.replace(coef_l1=1e-3)])
    check_packable([base.replace(sparsity=1e-3), base.replace(sparsity=1e-3, seed=1)])  # sparsity packs
    with pytest.raises(ConfigError, match="at least one config"):
        check_packable([])
    assert pack_key(base.replace(sparsity=1e-3)) == pack_key(base.replace(sparsity=1e-3, seed=2))
    assert pack_key(base.replace(sparsity=1e-3)) != pack_key(base)
    assert pack_key(base) == pack_key(base.replace(seed=9, lr=1.0))
    assert pack_key(base) != pack_key(base.replace(grid_size=6))


def test_pack_groups_by_shape_in_order_and_split_at_max_members() -> None:
    a = FitConfig(**ADAM_LBFGS)
    b = a.replace(widths=[2, 7, 2])
    sparse = a.replace(sparsity=1e-3)
    configs = [a, b, a.replace(seed=1), sparse, a.replace(seed=2, lr=0.1), b.replace(seed=1),
               a.replace(seed=3), sparse.replace(seed=1)]
    assert pack_groups(configs) == [[0, 2, 4, 6], [1, 5], [3, 7]]
    assert pack_groups(configs, max_members=2) == [[0, 2], [1, 5], [3, 7], [4, 6]]
    assert pack_groups(configs, max_members=1) == [[i] for i in (0, 1, 2, 3, 4, 5, 6, 7)]
    assert pack_groups([]) == []
    for group in pack_groups(configs):
        check_packable([configs[i] for i in group])


@pytest.mark.parametrize("text", ["", "{}", '{"members": []}', '{"members": [{"run_dir": "x"}]}',
                                  '{"members": [{"run_dir": "a", "config_path": "b", "resume": true}, '
                                  '{"run_dir": "c", "config_path": "d", "resume": false}]}'])
def test_a_bad_pack_manifest_is_one_error_line(tmp_path, capsys, text: str) -> None:
    from kanode.ensemble.__main__ import main as pack_main

    path = tmp_path / "manifest.json"
    path.write_text(text)
    assert pack_main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kanode: error:")
    assert "manifest" in err[0] or "all start or all resume" in err[0]
