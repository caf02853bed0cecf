"""Packed sweeps (``--pack auto``): cells that can share a solve run as one ensemble, and give
each cell the numbers of its own fit (``--pack off``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kanode.sweep import LocalBackend, PackTask, RunTask, expand, load_sweep, run_sweep
from kanode.sweep.__main__ import main as sweep_main

SWEEP = """
name = "pack"
systems = ["lotka_volterra"]
seeds = [0, 1, 2, 3]

[base]
optimizer = "adam+lbfgs"
steps = 8
lbfgs_steps = 2
method = "rk4"
eval_every = 5
checkpoint_every = 5
plots = false

[models.kan]
model = "kan"
hidden = [5]

[models.mlp]
model = "mlp"
hidden = [16]
"""


def _final_losses(sweep_dir: Path) -> dict[str, float]:
    return {str(p.parent.relative_to(sweep_dir)): json.loads(p.read_text())["final_train_loss"]
            for p in sorted(sweep_dir.glob("lotka_volterra/*/seed*/summary.json"))}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("pack")
    (tmp / "pack.toml").write_text(SWEEP)
    for mode in ("auto", "off"):
        code = sweep_main([str(tmp / "pack.toml"), "--out", str(tmp / mode), "--pack", mode,
                           "--workers", "2", "--no-progress"])
        assert code == 0
    return tmp / "auto", tmp / "off"


def test_packed_and_unpacked_sweeps_agree_cell_by_cell(sweeps: tuple[Path, Path]) -> None:
    packed, unpacked = (_final_losses(d) for d in sweeps)
    assert sorted(packed) == sorted(unpacked) and len(packed) == 8
    for key, loss in packed.items():
        assert loss == pytest.approx(unpacked[key], rel=1e-8), key
    # not a trivially shared number: the seeds differ
    assert len({round(v, 12) for v in packed.values()}) == 8


def test_packed_cells_keep_their_own_run_directories(sweeps: tuple[Path, Path]) -> None:
    packed, unpacked = sweeps
    for name in ("results.csv", "summary.md"):
        assert (packed / name).read_text().count("lotka_volterra") == (
            (unpacked / name).read_text().count("lotka_volterra"))
    run = packed / "lotka_volterra" / "kan" / "seed2"
    assert {p.name for p in run.iterdir()} >= {"config.toml", "metrics.csv", "checkpoints", "summary.json"}
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 10  # header + 8 Adam + 2 L-BFGS steps
    assert json.loads((run / "summary.json").read_text())["seed"] == 2


class _Recorder:
    """Records what the sweep hands the runner; fails a pack that holds ``crash``."""

    def __init__(self, crash: str = "") -> None:
        self.tasks: list[RunTask | PackTask] = []
        self.crash = crash

    def __call__(self, task):  # noqa: ANN001, ANN204
        self.tasks.append(task)
        members = task.members if isinstance(task, PackTask) else (task,)
        if any(m.key == self.crash for m in members):
            raise RuntimeError("simulated crash")
        raise RuntimeError("not run")


def test_packing_groups_only_cells_that_can_share_a_solve(tmp_path: Path) -> None:
    text = SWEEP.replace('[models.mlp]', '[models.kan_wide]\nmodel = "kan"\nhidden = [7]\n\n[models.mlp]')
    (tmp_path / "s.toml").write_text(text)
    specs = expand(load_sweep(tmp_path / "s.toml"))
    recorder = _Recorder(crash=specs[0].key)
    rows = run_sweep(specs, tmp_path / "sw", LocalBackend(1), runner=recorder, progress=False)
    packs = sorted(tuple(m.key for m in t.members) for t in recorder.tasks)
    assert packs == sorted(tuple(f"lotka_volterra/{label}/seed{s}" for s in range(4))
                           for label in ("kan", "kan_wide", "mlp"))
    status = {r.run_dir: (r.status, r.reason) for r in rows}
    # one process per pack: a crash fails every member of that pack, and only those
    assert [k for k, (_, reason) in status.items() if "simulated crash" in reason] == list(packs[0])
    recorder_off = _Recorder()
    run_sweep(specs, tmp_path / "sw2", LocalBackend(1), runner=recorder_off, progress=False, pack=False)
    assert all(isinstance(t, RunTask) for t in recorder_off.tasks) and len(recorder_off.tasks) == 12


def test_a_longer_lbfgs_phase_extends_finished_runs(sweeps: tuple[Path, Path], tmp_path: Path) -> None:
    """Rerunning a finished sweep with more lbfgs_steps resumes every run (packed, no refitting of
    the Adam phase) and ends where a fresh sweep of the longer schedule ends."""
    import shutil

    extended = tmp_path / "extended"
    shutil.copytree(sweeps[0], extended)
    longer = SWEEP.replace("lbfgs_steps = 2", "lbfgs_steps = 4")
    (tmp_path / "longer.toml").write_text(longer)
    for out in (extended, tmp_path / "fresh"):
        assert sweep_main([str(tmp_path / "longer.toml"), "--out", str(out), "--no-progress"]) == 0
    grown, fresh = _final_losses(extended), _final_losses(tmp_path / "fresh")
    assert sorted(grown) == sorted(fresh) and len(grown) == 8
    for key, loss in grown.items():
        assert loss == pytest.approx(fresh[key], rel=1e-10), key
        rows = (extended / key / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + 12 and rows[-1].split(",")[1] == "lbfgs"
