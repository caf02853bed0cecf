"""``python -m kanode.analysis``: outputs of each command and its bad-input errors."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from kanode.analysis import peak_bytes
from kanode.analysis.cli import main
from kanode.analysis.cost import COST_COLUMNS
from kanode.analysis.memory_model import dense_saved_elements
from kanode.analysis.spectra import TABLE_COLUMNS
from kanode.fit import fit
from tests.kanode.analysis.conftest import TINY


def read_csv(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kanode: error: ") and "\n" not in err
    return err


def test_cost_writes_table_and_figures(tmp_path):
    assert main(["cost", "--sizes", "2", "8", "--batches", "1", "16", "--grids", "3", "5", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "cost.csv")
    assert tuple(rows[0]) == COST_COLUMNS and len(rows) == 8
    for r in rows:
        r = {k: int(v) for k, v in r.items()}
        assert r["saved_dense_elements"] == dense_saved_elements(r["in_features"], r["out_features"], r["batch"],
                                                                 r["grid_size"], r["spline_order"])
    for name in ("cost_heatmap_G5.png", "saved_vs_grid.png", "cost_summary.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_peak_bytes_of_known_allocations():
    def step():
        a = torch.empty(1000, dtype=torch.float64)  # 8000 bytes
        b = torch.empty(3000, dtype=torch.float32)  # + 12000 = 20000 at the peak
        del a, b
        torch.empty(2000, dtype=torch.float64)  # 16000, after the others were freed

    assert peak_bytes(step) == 20000


def test_memory_writes_table_and_figure(tmp_path):
    argv = ["memory", "--systems", "lotka_volterra", "--hidden", "4", "16", "--models", "mlp",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = read_csv(tmp_path / "step_memory.csv")
    assert len(rows) == 2 * 2 and (tmp_path / "step_memory.png").stat().st_size > 0
    peak = {(r["adjoint"], int(r["hidden"])): int(r["peak_bytes"]) for r in rows}
    assert 0 < peak[("True", 16)] < peak[("False", 16)]  # the adjoint keeps no trajectory
    assert peak[("False", 4)] < peak[("False", 16)]


def test_memory_rejects_unknown_system(tmp_path, capsys):
    err = one_line_error(capsys, ["memory", "--systems", "nosuch", "--out", str(tmp_path)])
    assert "nosuch" in err


def test_hessian_of_a_sweep_directory(tiny_runs, tmp_path):
    sweep = tiny_runs["kan"].parents[1]  # .../lotka_volterra, holding kan/seed0 and mlp/seed0
    assert main(["hessian", str(sweep), "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "hessian_table.csv")
    assert tuple(rows[0]) == TABLE_COLUMNS
    assert {r["run"]: int(r["n_params"]) for r in rows} == {"kan-seed0": 96, "mlp-seed0": 42}  # unique names
    saved = np.load(tmp_path / "kan-seed0" / "hessian.npz")
    assert str(saved["method"]) == "exact" and int(saved["n_params"]) == 96
    values = saved["eigenvalues"]
    assert values.shape == (96,) and np.all(np.diff(values) >= 0)
    kan = next(r for r in rows if r["run"] == "kan-seed0")
    assert float(kan["lambda_max"]) == values[-1] and float(kan["trace"]) == pytest.approx(values.sum())
    assert int(kan["n_pos_1e-8"]) >= int(kan["n_pos_1e-6"]) >= int(kan["n_pos_1e-4"]) >= 1
    assert (tmp_path / "kan-seed0" / "spectrum.png").exists() and (tmp_path / "spectra.png").exists()
    assert "Median over seeds" in (tmp_path / "hessian_table.md").read_text()


def test_hessian_lanczos_matches_exact_extremes(tiny_runs, tmp_path):
    exact, lanczos = tmp_path / "exact", tmp_path / "lanczos"
    assert main(["hessian", str(tiny_runs["mlp"]), "--out", str(exact)]) == 0
    assert main(["hessian", str(tiny_runs["mlp"]), "--method", "lanczos", "--k", "4", "--out", str(lanczos)]) == 0
    full = np.load(exact / "seed0" / "hessian.npz")["eigenvalues"]
    ends = np.load(lanczos / "seed0" / "hessian.npz")["eigenvalues"]
    np.testing.assert_allclose(ends, np.concatenate([full[:4], full[-4:]]), rtol=1e-8)


def test_hessian_bad_input(tiny_runs, tmp_path, capsys):
    err = one_line_error(capsys, ["hessian", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert "does not exist" in err
    broken = tmp_path / "broken"
    shutil.copytree(tiny_runs["mlp"], broken)
    (broken / "checkpoints" / "last.pt").unlink()
    err = one_line_error(capsys, ["hessian", str(broken), "--out", str(tmp_path / "o")])
    assert "checkpoint" in err and "last.pt" in err
    big = tmp_path / "big"
    fit(out=big, **{**TINY, "steps": 1, "eval_every": 1, "checkpoint_every": 1}, model="mlp", widths=[2, 1300, 2])
    err = one_line_error(capsys, ["hessian", str(big), "--out", str(tmp_path / "o")])
    assert "6502 parameters" in err and "--method lanczos" in err
