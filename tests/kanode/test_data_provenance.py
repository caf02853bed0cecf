"""Where a run's data came from: a user-data run's config.toml names its file (no built-in
system) and reruns the fit; the truth of a file is the system the file records, if any."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

import systems
from kanode.compare import load_run as load_run_data
from kanode.config import FitConfig
from kanode.data import load_data
from kanode.fit import main as fit_main
from kanode.runs import read_metrics, read_summary


def write_measured(path: Path) -> Path:
    """A CSV as an instrument writes it: no line saying which system made it."""
    lv = systems.get("lotka_volterra")
    t = np.linspace(0.0, 3.0, 16)
    y = systems.simulate(lv, t, y0=np.array([1.0, 1.0])).y[0]
    y = y + np.random.default_rng(1).normal(0.0, 0.02, y.shape)
    path.write_text("traj,t,prey,predator\n" + "".join(f"0,{a:g},{b:.5f},{c:.5f}\n" for a, (b, c) in zip(t, y)))
    return path


def test_user_data_config_names_the_file_and_reruns_the_fit(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    write_measured(tmp_path / "counts.csv")
    flags = ["--n-test-traj", "0", "--train-fraction", "0.75", "--steps", "3", "--lbfgs-steps", "2",
             "--no-plots", "--quiet"]
    assert fit_main(["--data", "counts.csv", *flags, "--out", "run"]) == 0  # a relative path
    config = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert config["data"] == str(tmp_path / "counts.csv") and config["system"] == ""
    assert read_summary(tmp_path / "run" / "summary.json")["system"] == "counts"
    assert load_run_data(tmp_path / "run").system == "counts"  # kanode.compare groups it by its file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert fit_main(["--config", str(tmp_path / "run" / "config.toml"), "--out", "again", "--quiet"]) == 0
    again = elsewhere / "again"
    assert (again / "config.toml").read_text() == (tmp_path / "run" / "config.toml").read_text()
    first, second = read_metrics(tmp_path / "run" / "metrics.csv"), read_metrics(again / "metrics.csv")
    assert [r["train_loss"] for r in second] == [r["train_loss"] for r in first]
    assert [r["extrap_loss"] for r in second] == [r["extrap_loss"] for r in first]
    assert read_summary(again / "summary.json")["final_train_loss"] == \
        read_summary(tmp_path / "run" / "summary.json")["final_train_loss"]


def test_a_data_file_never_takes_the_default_systems_truth(tmp_path: Path) -> None:
    config = FitConfig(data=str(write_measured(tmp_path / "m.csv")), n_test_traj=0)
    assert config.system == ""
    assert FitConfig(system="rigid_body", data=config.data).system == ""
    assert load_data(config).system is None


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_a_file_that_records_its_system_keeps_that_truth(tmp_path: Path, suffix: str) -> None:
    """A file saved by ``Trajectories.save`` says which system (and parameters) made it:
    that is its truth, not the default Lotka–Volterra (a FitzHugh–Nagumo file is 2-D too)."""
    fhn = systems.get("fitzhugh_nagumo", a=0.6)
    path = systems.simulate(fhn, np.linspace(0.0, 10.0, 21)).save(tmp_path / f"fhn{suffix}")
    data = load_data(FitConfig(data=str(path), n_test_traj=0))
    assert data.system == fhn and data.system.a == 0.6
