"""kanode.load_run and ``python -m kanode.predict``: the forecast CSV holds the loaded field's
ODE solution (checked against scipy), an ensemble's median and band are those of its
members' own solves, bad input exits 2 with one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import kanode
import systems
from kanode import FitConfig
from kanode.config import ConfigError
from kanode.fit import fit
from kanode.fit import main as fit_main
from kanode.predict import Forecast, LoadedEnsemble, LoadedRun, band_names, load_run
from kanode.predict.__main__ import main as predict_main
from kanode.train import solver_options

YEARS = np.arange(1900.0, 1916.0)  # yearly data, as measured series come


def measured_csv(path: Path) -> Path:
    """Lotka–Volterra-like yearly counts in a CSV without metadata: measured data, no known truth."""
    lv = systems.get("lotka_volterra", alpha=0.55, beta=0.028, gamma=0.84, delta=0.026)
    y = systems.simulate(lv, YEARS - YEARS[0], y0=np.array([30.0, 4.0])).y[0]  # (16, 2)
    noise = np.random.default_rng(0).normal(0.0, 1.0, y.shape)
    rows = ["traj,t,hare,lynx"] + [f"0,{t:g},{h:.3f},{l:.3f}" for t, (h, l) in zip(YEARS, y + noise)]
    path.write_text("\n".join(rows) + "\n")
    return path


TINY = dict(n_test_traj=0, train_fraction=1.0, steps=4, lbfgs_steps=2, plots=False)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("single")
    config = FitConfig(data=str(measured_csv(root / "hl.csv")), model="mlp", widths=[2, 8, 2], **TINY)
    assert fit(config, out=root / "run").summary["status"] == "finished"
    return root / "run"


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ensemble")
    data = measured_csv(root / "hl.csv")
    code = fit_main(["--data", str(data), "--model", "mlp", "--widths", "2", "8", "2", "--n-test-traj", "0",
                     "--train-fraction", "1", "--steps", "4", "--lbfgs-steps", "2", "--no-plots",
                     "--seeds", "0-2", "--out", str(root / "E"), "--quiet"])
    assert code == 0
    return root / "E"


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open() as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def scipy_solve(field: torch.nn.Module, y0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The field's ODE solution at times t (n,) by scipy's DOP853: (n, dim), independent of kanode.solve."""
    def rhs(time: float, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return field(torch.tensor(time, dtype=torch.float64), torch.from_numpy(y)).numpy()

    sol = solve_ivp(rhs, (t[0], t[-1]), y0, t_eval=t, method="DOP853", rtol=1e-11, atol=1e-9)
    assert sol.success
    return sol.y.T


def test_load_run_returns_the_trained_field_data_and_config(single_run: Path) -> None:
    run = kanode.load_run(single_run)
    assert isinstance(run, LoadedRun) and run.members == (run,)
    assert run.config.data.endswith("hl.csv") and run.config.system == ""
    assert run.data.state_names == ("hare", "lynx") and run.data.system is None
    assert np.array_equal(run.data.t.numpy(), YEARS)
    # the loaded field reproduces the run's own final training loss
    with torch.no_grad():
        pred = kanode.solve(run.field, run.data.y[:, 0], run.data.t, adjoint=False,
                            **solver_options(run.config, run.data))
    mse = float(((pred.transpose(0, 1) - run.data.y) ** 2).mean())
    summary = json.loads((single_run / "summary.json").read_text())
    assert mse == pytest.approx(summary["final_train_loss"], rel=1e-10)


def test_forecast_csv_is_the_loaded_fields_solution(single_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "f.csv"
    assert predict_main([str(single_run), "--until", "1925", "--points", "101", "--out", str(out)]) == 0
    header, rows = read_csv(out)
    assert header == ["traj", "t", "hare", "lynx"]
    run = load_run(single_run)
    t = np.linspace(1900.0, 1925.0, 101)
    assert np.array_equal(rows[:, 0], np.zeros(101)) and np.allclose(rows[:, 1], t, rtol=0, atol=1e-9)
    want = scipy_solve(run.field, run.data.y[0, 0].numpy(), t)
    scale = np.abs(want).max()
    assert np.abs(rows[:, 2:] - want).max() < 1e-6 * scale  # rk4 on the dense grid: the ODE, not a chord
    assert systems.load(out).y.shape == (1, 101, 2)  # a trajectory file, like the data
    assert (tmp_path / "f.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "1900 to 1925" in printed and str(out) in printed


def test_forecast_from_a_given_state_and_time(single_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "from1915.csv"
    args = [str(single_run), "--until", "1920", "--t0", "1915", "--y0", "20", "50", "5", "3",
            "--points", "21", "--out", str(out)]
    assert predict_main(args) == 0
    _, rows = read_csv(out)
    run = load_run(single_run)
    t = np.linspace(1915.0, 1920.0, 21)
    for k, y0 in enumerate(([20.0, 50.0], [5.0, 3.0])):
        mine = rows[rows[:, 0] == k]
        assert np.array_equal(mine[0, 2:], y0)
        assert np.abs(mine[:, 2:] - scipy_solve(run.field, np.array(y0), t)).max() < 1e-6 * 50


@pytest.mark.parametrize("band, suffixes, quantiles", [("100", ("min", "max"), (0.0, 1.0)),
                                                       ("50", ("q25", "q75"), (0.25, 0.75))])
def test_ensemble_forecast_median_and_band_are_the_members_own_solves(
        ensemble_dir: Path, tmp_path: Path, band: str, suffixes: tuple[str, str],
        quantiles: tuple[float, float], capsys) -> None:
    out = tmp_path / "e.csv"
    assert predict_main([str(ensemble_dir), "--until", "1920", "--points", "41", "--band", band,
                         "--out", str(out)]) == 0
    header, rows = read_csv(out)
    lo, hi = suffixes
    assert header == ["traj", "t", "hare", "lynx", f"hare_{lo}", f"hare_{hi}", f"lynx_{lo}", f"lynx_{hi}"]
    loaded = load_run(ensemble_dir)
    assert isinstance(loaded, LoadedEnsemble) and len(loaded.members) == 3
    t = np.linspace(1900.0, 1920.0, 41)
    members = []
    for seed in range(3):  # each member loaded on its own, as a single run, and solved by the run's rk4
        member = load_run(ensemble_dir / f"seed-{seed}")
        assert member.config.seed == seed and member.config.method == "rk4"
        with torch.no_grad():
            y = kanode.solve(member.field, member.data.y[:, 0], torch.from_numpy(t), method="rk4",
                             step_size=0.5, adjoint=False)  # (41, 1, 2)
        members.append(y[:, 0].numpy())
        assert np.abs(members[-1] - scipy_solve(member.field, member.data.y[0, 0].numpy(), t)).max() < 1e-3
    members = np.stack(members)  # (3, 41, 2)
    assert np.ptp(members, axis=0).max() > 1.0  # the members differ, so the band is not trivial
    tol = 1e-12 * np.abs(members).max()
    assert np.abs(rows[:, 2:4] - np.median(members, axis=0)).max() < tol
    low, high = np.quantile(members, quantiles, axis=0)
    assert np.abs(rows[:, [4, 6]] - low).max() < tol and np.abs(rows[:, [5, 7]] - high).max() < tol
    assert "median of 3 members" in capsys.readouterr().out


def run_cli(args: list[str]) -> int:
    """The command's exit status, whether main returns it or argparse exits with it."""
    try:
        return predict_main(args)
    except SystemExit as exc:
        return int(exc.code)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kanode: error: "), err
    return err[0]


@pytest.mark.parametrize("args, says", [
    (["--until", "1800"], "must end after it starts"),
    (["--until", "1920", "--y0", "1", "2", "3"], "y0 must give the 2 states (hare, lynx)"),
    (["--until", "1920", "--t0", "1910"], "--t0 needs --y0"),
    (["--until", "1920", "--points", "1"], "--points must be between 2"),
    (["--until", "1920", "--band", "0"], "--band must be a percentage"),
    (["--until", "1920", "--checkpoint", "first"], "invalid choice"),
    (["--until", "nan"], "must end after it starts"),
])
def test_bad_input_exits_2_with_one_line(single_run: Path, tmp_path: Path, capsys, args, says) -> None:
    assert run_cli([str(single_run), *args, "--out", str(tmp_path / "f.csv")]) == 2
    assert says in _one_error_line(capsys)
    assert not (tmp_path / "f.csv").exists()


def test_bad_run_directory_or_output_exits_2(tmp_path: Path, single_run: Path, capsys) -> None:
    assert predict_main([str(tmp_path / "nope"), "--until", "2", "--out", str(tmp_path / "f.csv")]) == 2
    assert "does not exist" in _one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert predict_main([str(tmp_path / "empty"), "--until", "2", "--out", str(tmp_path / "f.csv")]) == 2
    assert "no config.toml" in _one_error_line(capsys)
    assert predict_main([str(single_run), "--until", "1920", "--out", str(tmp_path / "f.txt")]) == 2
    assert "--out must name a .csv file" in _one_error_line(capsys)


def test_load_run_refuses_a_run_whose_data_is_gone(tmp_path: Path) -> None:
    data = measured_csv(tmp_path / "gone.csv")
    fit(FitConfig(data=str(data), model="mlp", widths=[2, 4, 2], **{**TINY, "steps": 1, "lbfgs_steps": 0}),
        out=tmp_path / "run")
    data.unlink()
    with pytest.raises(ConfigError, match="its data cannot be loaded .*does not exist"):
        load_run(tmp_path / "run")


def test_a_member_whose_solve_failed_is_left_out_of_median_and_band() -> None:
    rng = np.random.default_rng(3)
    members = rng.normal(size=(3, 2, 5, 2))
    members[1] = np.nan  # what solve_states returns for a failed solve
    result = Forecast(t=np.arange(5.0), members=members, state_names=("a", "b"), member_paths=("m0", "m1", "m2"))
    assert result.failed == (1,)
    assert np.array_equal(result.median(), 0.5 * (members[0] + members[2]))
    low, high = result.band()
    assert np.array_equal(low, np.minimum(members[0], members[2]))
    assert np.array_equal(high, np.maximum(members[0], members[2]))
    members[:] = np.nan
    with pytest.raises(ValueError, match="every member's solve failed"):
        result.median()


def test_band_column_names_state_the_band() -> None:
    assert band_names(1.0) == ("min", "max")
    assert band_names(0.9) == ("q05", "q95")
    assert band_names(0.95) == ("q2.5", "q97.5")


def test_solver_gap_measures_a_fit_to_the_discretisation_error() -> None:
    """y' = a y solved by RK4: each step of length h multiplies y by R(a h), R(z) = 1 + z + z²/2
    + z³/6 + z⁴/24. Data made by the step-1 map fits the step-1 solve exactly (MSE 0); with 16×
    shorter steps the solve is R(a/16)^(16 k), the ODE's exp(a k) to RK4 accuracy."""
    from kanode.data import FitData
    from kanode.predict import solver_gap

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rate = torch.nn.Parameter(torch.tensor(-1.5, dtype=torch.float64))

        def forward(self, t, y):
            return self.rate * y

    def rk4_factor(z: float) -> float:
        return 1 + z + z ** 2 / 2 + z ** 3 / 6 + z ** 4 / 24

    k = np.arange(6.0)
    y = torch.tensor(2.0 * rk4_factor(-1.5) ** k)[None, :, None]  # (1, 6, 1)
    data = FitData(torch.tensor(k), y, y[:0], 6, None, ("y",))
    solver = dict(method="rk4", step_size=1.0, rtol=1e-5, atol=1e-7, max_num_steps=100)
    coarse, fine = solver_gap(Linear(), data, solver)
    assert coarse < 1e-28
    assert fine == pytest.approx(np.mean((2.0 * rk4_factor(-1.5 / 16) ** (16 * k) - y[0, :, 0].numpy()) ** 2),
                                 rel=1e-10)
    assert fine > 1e-3  # R(-1.5) = 0.297 against exp(-1.5) = 0.223: a fit a coarse step hides
    assert solver_gap(Linear(), data, dict(solver, method="dopri5")) is None
