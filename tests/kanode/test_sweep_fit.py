"""kanode.sweep end to end with the real ``python -m kanode.fit``: local pool, Ray, smoke.

The runs are tiny (an MLP [2, 8, 2] on Lotka–Volterra, 3 Adam steps); each
costs about a process start-up.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kanode.sweep import expand, load_sweep, make_backend, run_sweep

REPO = Path(__file__).resolve().parents[2]

SWEEP = """
name = "e2e"
systems = ["lotka_volterra"]
seeds = [0, 1]

[base]
optimizer = "adam"
steps = 3
lbfgs_steps = 0
eval_every = 2
checkpoint_every = 2

[models.mlp]
model = "mlp"
hidden = [8]

[models.blowup]                 # forced divergence: Adam moves every weight by ~1e9,
model = "mlp"                   # and the adaptive solver then runs out of steps
hidden = [8]
lr = 1e9
method = "dopri5"
max_num_steps = 200

[models.nodata]                 # forced failure: the fit rejects its input (exit 2)
model = "mlp"
hidden = [8]
data = "does/not/exist.npz"
"""


def _specs(tmp_path: Path, labels: tuple[str, ...]):
    path = tmp_path / "e2e.toml"
    path.write_text(SWEEP)
    specs = expand(load_sweep(path))
    return [s for s in specs if s.label in labels and (s.label == "mlp" or s.seed == 0)]


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("local")
    specs = _specs(tmp, ("mlp", "blowup", "nodata"))
    rows = run_sweep(specs, tmp / "sweep", make_backend("local", 2), threads=1, progress=False)
    return tmp / "sweep", rows


def test_local_backend_records_failures_and_finishes_the_rest(local_rows) -> None:
    sweep_dir, rows = local_rows
    status = {r.run_dir: r for r in rows}
    assert len(rows) == 4
    for seed in (0, 1):
        row = status[f"lotka_volterra/mlp/seed{seed}"]
        assert row.status == "finished" and row.steps == 3
        assert row.n_params == 8 * 3 + 2 * 9
        assert 0 < row.best_train_loss <= row.final_train_loss < math.inf
    assert status["lotka_volterra/blowup/seed0"].status == "diverged"
    assert status["lotka_volterra/blowup/seed0"].reason
    failed = status["lotka_volterra/nodata/seed0"]
    assert failed.status == "failed" and "exit 2: kanode: error:" in failed.reason
    with (sweep_dir / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 4
    # The two seeds differ (different initialisation), so the runs really are separate.
    assert status["lotka_volterra/mlp/seed0"].final_train_loss != \
        status["lotka_volterra/mlp/seed1"].final_train_loss


@pytest.fixture
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_backend_gives_the_same_losses_as_local(local_rows, ray_session,
                                                    tmp_path: Path) -> None:
    local_dir, local = local_rows
    specs = _specs(tmp_path, ("mlp",))
    assert len(specs) == 2
    rows = run_sweep(specs, tmp_path / "sweep", make_backend("ray", 2), threads=1,
                     progress=False)
    assert [r.status for r in rows] == ["finished", "finished"]
    by_key = {r.run_dir: r for r in local}
    for row in rows:
        twin = by_key[row.run_dir]
        assert (row.final_train_loss, row.best_train_loss, row.final_val_loss) == (
            twin.final_train_loss, twin.best_train_loss, twin.final_val_loss)
        ours = (tmp_path / "sweep" / row.run_dir / "metrics.csv").read_text().splitlines()
        theirs = (local_dir / row.run_dir / "metrics.csv").read_text().splitlines()
        assert [ln.split(",")[2] for ln in ours] == [ln.split(",")[2] for ln in theirs]


@pytest.mark.slow
def test_figure2_smoke_sweep_and_figure(tmp_path: Path) -> None:
    """The CI smoke run of experiments/figure2.toml: 10 runs, all finished, figure drawn.

    Its wall time (budget: 3 minutes with 2 workers) is not asserted here:
    timings belong in benchmarks, not in unit tests (see experiments/README.md).
    """
    out = tmp_path / "figure2-smoke"
    proc = subprocess.run([sys.executable, "-m", "kanode.sweep", "experiments/figure2.toml",
                           "--smoke", "--workers", "2", "--out", str(out), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10
    assert {r["system"] for r in rows} == {"lotka_volterra", "pleiades", "fitzhugh_nagumo",
                                           "rigid_body", "spiral"}
    assert {r["status"] for r in rows} == {"finished"}
    fig = tmp_path / "figure2.png"
    proc = subprocess.run([sys.executable, "experiments/figure2.py", str(out), "--results",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fig.read_bytes()[:4] == b"\x89PNG"
