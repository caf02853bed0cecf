"""``python -m kanode.analysis``: outputs of each command and its bad-input errors."""

from __future__ import annotations

import csv
import json
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
from tests.kanode.drawn import panels, record_figures


def read_csv(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kanode: error: ") and "\n" not in err
    return err


def test_cost_writes_table_and_figures(tmp_path, monkeypatch):
    drawn = record_figures(monkeypatch)
    assert main(["cost", "--sizes", "2", "8", "--batches", "1", "16", "--grids", "3", "5", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "cost.csv")
    assert tuple(rows[0]) == COST_COLUMNS and len(rows) == 8
    for r in rows:
        r = {k: int(v) for k, v in r.items()}
        assert r["saved_dense_elements"] == dense_saved_elements(r["in_features"], r["out_features"], r["batch"],
                                                                 r["grid_size"], r["spline_order"])
    assert sorted(drawn) == ["cost_heatmap_G5.png", "saved_vs_grid.png"]
    assert json.loads((tmp_path / "cost_summary.json").read_text())["rows"] == 8
    ints = [{k: int(v) for k, v in r.items()} for r in rows]
    heat = panels(drawn["cost_heatmap_G5.png"])
    assert [ax.get_title() for ax in heat] == ["Eq. 1 (predicted)", "dense layer (measured)",
                                               "kanode KANLayer (measured)"]
    assert heat[0].get_ylabel() == "I = O" and all(ax.get_xlabel() == "batch B" for ax in heat)
    kanode = np.asarray(heat[2].images[0].get_array())  # (sizes, batches) at G = 5
    want = {(r["in_features"], r["batch"]): r["params_kan"] + r["saved_kanode_elements"] - r["params_fc"]
            - r["saved_fc_elements"] for r in ints if r["grid_size"] == 5}
    assert kanode.tolist() == [[want[(i, b)] for b in (1, 16)] for i in (2, 8)]
    (saved,) = panels(drawn["saved_vs_grid.png"])
    assert (saved.get_xlabel(), saved.get_ylabel()) == ("grid size G", "elements saved for backward")
    assert len(saved.lines) == 3 * 2  # dense, kanode, Linear+SiLU for each I = O
    dense8 = next(line for line in saved.lines if line.get_label() == "I=O=8 dense")
    assert list(dense8.get_xdata()) == [3, 5]
    assert list(dense8.get_ydata()) == [r["saved_dense_elements"] for r in ints
                                        if r["in_features"] == 8 and r["batch"] == 16]


def test_peak_bytes_of_known_allocations():
    def step():
        a = torch.empty(1000, dtype=torch.float64)  # 8000 bytes
        b = torch.empty(3000, dtype=torch.float32)  # + 12000 = 20000 at the peak
        del a, b
        torch.empty(2000, dtype=torch.float64)  # 16000, after the others were freed

    assert peak_bytes(step) == 20000


def test_memory_writes_table_and_figure(tmp_path, monkeypatch):
    drawn = record_figures(monkeypatch)
    argv = ["memory", "--systems", "lotka_volterra", "--hidden", "4", "16", "--models", "mlp",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = read_csv(tmp_path / "step_memory.csv")
    assert len(rows) == 2 * 2
    peak = {(r["adjoint"], int(r["hidden"])): int(r["peak_bytes"]) for r in rows}
    direct, adjoint = panels(drawn["step_memory.png"])
    assert (direct.get_title(), adjoint.get_title()) == ("lotka_volterra, direct", "lotka_volterra, adjoint")
    assert direct.get_ylabel() == "peak MiB of one step" and direct.get_xlabel() == "hidden width"
    for ax, flag in ((direct, "False"), (adjoint, "True")):
        (line,) = ax.lines  # one model
        assert line.get_label() == "mlp" and list(line.get_xdata()) == [4, 16]
        assert list(line.get_ydata()) == [peak[(flag, 4)] / 2**20, peak[(flag, 16)] / 2**20]
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
