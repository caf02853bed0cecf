"""kanode.predict (arrays from a field), kanode.report (a run's figures) and the plots' data-only interface."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import systems
from kanode.data import FitData
from kanode.fit import FitResult
from kanode.plots.run import phase_portrait, vector_field_error
from kanode.predict import DENSE_POINTS, predict_trajectories, state_bounds, vector_field_grid
from kanode.report import PlotsSkipped, run_figures, save_run_plots
from tests.kanode.drawn import panels, record_figures


class TrueField(nn.Module):
    """The Lotka–Volterra right-hand side in torch: a 'perfectly trained' field."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))
        self.lv = systems.get("lotka_volterra")

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, v = y[..., 0], y[..., 1]
        lv = self.lv
        return self.scale * torch.stack([lv.alpha * x - lv.beta * x * v, lv.delta * x * v - lv.gamma * v], -1)


def lv_data(n_t: int = 41) -> FitData:
    lv = systems.get("lotka_volterra")
    t = np.linspace(0.0, 4.0, n_t)
    traj = systems.simulate(lv, t, y0=np.array([[1.0, 1.0], [1.2, 0.8]]))
    y = torch.tensor(traj.y)
    return FitData(torch.as_tensor(t), y, y[:0], n_t // 2, lv, lv.state_names)


def result_for(data: FitData, field: nn.Module) -> FitResult:
    history = [dict(step=s, phase="adam", train_loss=1.0 / s, val_loss=None, extrap_loss=2.0 / s)
               for s in range(1, 6)]
    return FitResult(field=field, history=history, summary={"model": "kan", "system": "lotka_volterra"},
                     data=data)


def test_predicted_trajectories_of_the_true_field_match_the_data() -> None:
    data = lv_data()
    pred = predict_trajectories(TrueField(), data, dict(method="dopri5", rtol=1e-10, atol=1e-12))
    assert pred.shape == tuple(data.y.shape) and pred.dtype == np.float64
    assert np.abs(pred - data.y.numpy()).max() < 1e-6


def test_a_failed_solve_predicts_nan_not_an_error() -> None:
    data = lv_data()
    blowup = TrueField()
    with torch.no_grad():
        blowup.scale.fill_(1e6)  # stiff beyond any step budget
    pred = predict_trajectories(blowup, data, dict(method="dopri5", max_num_steps=5))
    assert pred.shape == tuple(data.y.shape) and np.isnan(pred).all()


def test_vector_field_grid_of_the_true_field_has_zero_error() -> None:
    data = lv_data()
    grid = vector_field_grid(TrueField(), data, n=7)
    assert grid.xs.shape == (7,) and grid.ys.shape == (7,) and grid.learned.shape == (7, 7, 2)
    assert np.abs(grid.learned - grid.true).max() < 1e-12
    gx, gy = np.meshgrid(grid.xs, grid.ys)  # the true field at the grid points, meshgrid order
    want = data.system.rhs(0.0, np.stack([gx, gy], -1))
    assert np.abs(grid.true - want).max() < 1e-12
    states = data.y.numpy().reshape(-1, 2)
    span = states.max(0) - states.min(0)
    assert grid.xs[0] == pytest.approx(states[:, 0].min() - 0.15 * span[0])
    assert grid.ys[-1] == pytest.approx(states[:, 1].max() + 0.15 * span[1])


def test_vector_field_grid_without_a_known_system_has_the_learned_field_only() -> None:
    data = lv_data()
    measured = FitData(data.t, data.y, data.y_held_out, data.n_train, None, data.state_names)
    grid = vector_field_grid(TrueField(), measured, n=5)
    assert grid.true is None
    gx, gy = np.meshgrid(grid.xs, grid.ys)
    want = data.system.rhs(0.0, np.stack([gx, gy], -1))  # TrueField is Lotka–Volterra
    assert np.abs(grid.learned - want).max() < 1e-12


def test_vector_field_grid_needs_2d_data() -> None:
    data = lv_data()
    one_d = FitData(data.t, data.y[..., :1], data.y_held_out[..., :1], data.n_train, None, ("x",))
    with pytest.raises(ValueError, match="needs 2-D data; this data has dim 1"):
        vector_field_grid(TrueField(), one_d)


def test_state_bounds_widen_ranges_without_spread() -> None:
    states = np.array([[2.0, -1.0], [4.0, -1.0]])
    assert state_bounds(states) == pytest.approx((1.7, 4.3, -1.15, -0.85))
    assert state_bounds(np.zeros((3, 2))) == pytest.approx((-0.15, 0.15, -0.15, 0.15))


def test_save_run_plots_draws_the_four_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each figure's panels, labels and lines, and the data the lines carry."""
    drawn = record_figures(monkeypatch)
    data, result = lv_data(), result_for(lv_data(), TrueField())
    paths = save_run_plots(result, tmp_path / "plots")
    names = ["loss_curves.png", "trajectory_fit.png", "phase_portrait.png", "vector_field.png"]
    assert paths == [tmp_path / "plots" / n for n in names] and sorted(drawn) == sorted(names)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)

    (loss,) = panels(drawn["loss_curves.png"])
    assert (loss.get_xlabel(), loss.get_ylabel(), loss.get_yscale()) == ("step", "MSE", "log")
    assert loss.get_title() == "kan on lotka_volterra"
    train, extrap = loss.lines  # no held-out losses in the history: two curves
    assert (train.get_label(), extrap.get_label()) == ("train", "extrapolation")
    assert list(train.get_xdata()) == [1, 2, 3, 4, 5]
    assert np.allclose(train.get_ydata(), [1.0 / s for s in range(1, 6)])
    assert np.allclose(extrap.get_ydata(), [2.0 / s for s in range(1, 6)])

    fit_axes = panels(drawn["trajectory_fit.png"])
    assert [ax.get_ylabel() for ax in fit_axes] == list(data.state_names)
    assert fit_axes[-1].get_xlabel() == "t"
    y, pred = data.y.numpy(), predict_trajectories(result.field, data, None)  # the plots' own solve
    assert np.abs(pred - y).max() < 1e-3  # the true field fits the data (RK4 at the data's spacing)
    for d, ax in enumerate(fit_axes):
        predicted, observed = ax.lines  # the dense solution, then the data as markers
        assert np.array_equal(observed.get_ydata(), y[0, :, d])
        t_dense = np.asarray(predicted.get_xdata())
        assert t_dense.shape == (DENSE_POINTS,) and t_dense[-1] == float(data.t[-1])
        at_data = np.interp(data.t.numpy(), t_dense, np.asarray(predicted.get_ydata()))
        assert np.abs(at_data - pred[0, :, d]).max() < 1e-3

    (phase,) = panels(drawn["phase_portrait.png"])
    assert (phase.get_xlabel(), phase.get_ylabel()) == tuple(data.state_names)
    assert len(phase.lines) == 2 * y.shape[0]  # data and model for each trajectory
    assert np.array_equal(phase.lines[2].get_xdata(), y[1, :, 0])

    field_axes = panels(drawn["vector_field.png"])
    assert [ax.get_title() for ax in field_axes] == ["learned vector field", "true vector field", "error"]
    assert len(drawn["vector_field.png"].axes) == 4  # and the error's colorbar
    assert all((ax.get_xlabel(), ax.get_ylabel()) == tuple(data.state_names) for ax in field_axes)


def test_constant_data_still_gets_its_vector_field(tmp_path: Path) -> None:
    data = lv_data()
    lv = data.system
    fixed = torch.tensor([lv.gamma / lv.delta, lv.alpha / lv.beta], dtype=torch.float64)  # equilibrium
    y = fixed.expand(2, data.t.shape[0], 2).clone()
    still = FitData(data.t, y, y[:0], data.n_train, lv, data.state_names)
    paths = save_run_plots(result_for(still, TrueField()), tmp_path)
    assert (tmp_path / "vector_field.png") in paths


def test_one_dimensional_data_skips_only_the_phase_portrait(tmp_path: Path) -> None:
    data = lv_data()
    one_d = FitData(data.t, data.y[..., :1], data.y_held_out[..., :1], data.n_train, None, ("x",))

    class Decay(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rate = nn.Parameter(torch.tensor(-0.5, dtype=torch.float64))

        def forward(self, t, y):
            return self.rate * y

    with pytest.raises(PlotsSkipped, match="phase_portrait.png: ValueError: a phase portrait needs at least 2") as info:
        save_run_plots(result_for(one_d, Decay()), tmp_path)
    assert info.value.paths == [tmp_path / "loss_curves.png", tmp_path / "trajectory_fit.png"]
    assert list(info.value.skipped) == ["phase_portrait.png"]
    assert all(p.is_file() for p in info.value.paths) and not (tmp_path / "phase_portrait.png").exists()


def test_vector_field_error_draws_the_error_of_the_arrays() -> None:
    xs, ys = np.linspace(0, 1, 4), np.linspace(0, 2, 5)
    true = np.ones((5, 4, 2))
    learned = true.copy()
    learned[2, 3] += [3.0, 4.0]  # error 5 at (xs[3], ys[2])
    fig = vector_field_error(xs, ys, learned, true)
    values = fig.axes[2].collections[0].get_array().reshape(5, 4)
    assert values[2, 3] == pytest.approx(np.log10(5.0))
    assert np.sort(values.ravel())[-2] == pytest.approx(-16.0)


def test_phase_portrait_refuses_one_dimensional_states() -> None:
    with pytest.raises(ValueError, match="at least 2 state dimensions, got 1"):
        phase_portrait(np.zeros((1, 3, 1)), np.zeros((1, 3, 1)), ("x",))


def test_run_plots_module_imports_no_solver_and_no_cli() -> None:
    source = Path(__file__).parents[2] / "kanode" / "plots" / "run.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert imported <= {"__future__", "collections.abc", "typing", "numpy", "matplotlib.figure"}, imported


def _texts(fig) -> list[str]:
    """Every title, axis label and legend entry of a figure."""
    texts = []
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]:
        texts += [t.get_text() for t in legend.get_texts()]
    return [t for t in texts if t]


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_measured_data_draws_the_learned_field_alone_and_nothing_true() -> None:
    data = lv_data()
    measured = FitData(data.t, data.y, data.y_held_out, data.n_train, None, data.state_names)
    figures = {name: draw() for name, draw in run_figures(result_for(measured, TrueField())).items()}
    assert list(figures) == ["loss_curves.png", "trajectory_fit.png", "phase_portrait.png", "vector_field.png"]
    field = figures["vector_field.png"]
    assert [ax.get_title() for ax in _panels(field)] == ["learned vector field"]
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in _panels(field)] == [("x", "y")]
    for name, fig in figures.items():
        assert not [t for t in _texts(fig) if "true" in t.lower() or "error" in t.lower()], name


def test_simulated_data_compares_learned_and_true_fields() -> None:
    fig = run_figures(result_for(lv_data(), TrueField()))["vector_field.png"]()
    assert [ax.get_title() for ax in _panels(fig)] == ["learned vector field", "true vector field", "error"]


def test_trajectory_plot_is_the_solution_between_observations_with_data_as_markers() -> None:
    """Yearly-like data (11 points): the model's curve is the ODE solution on a dense grid,
    not straight segments between the observations."""
    data = lv_data(n_t=11)
    fig = run_figures(result_for(data, TrueField()))["trajectory_fit.png"]()
    panels = _panels(fig)
    assert [ax.get_ylabel() for ax in panels] == ["x", "y"]
    for d, ax in enumerate(panels):
        curve, markers = ax.lines
        assert markers.get_linestyle() == "None" and markers.get_marker() == "o"
        assert np.array_equal(markers.get_xdata(), data.t.numpy())
        assert np.array_equal(markers.get_ydata(), data.y[0, :, d].numpy())
        t_dense = np.asarray(curve.get_xdata())
        assert t_dense.shape == (DENSE_POINTS,) and t_dense[0] == 0.0 and t_dense[-1] == 4.0
        want = systems.simulate(systems.get("lotka_volterra"), t_dense, y0=data.y[0, 0].numpy()).y[0, :, d]
        assert np.abs(np.asarray(curve.get_ydata()) - want).max() < 1e-6
        halfway = np.interp(0.5 * (data.t[1] + data.t[2]), t_dense, want)
        chord = 0.5 * (data.y[0, 1, d] + data.y[0, 2, d])
        assert abs(halfway - float(chord)) > 1e-3  # a straight segment would be this far off


def test_units_label_the_axes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """States with units (a CSV header ``hare [thousands]``) label every state axis as
    ``name [unit]``; a state without a unit keeps its bare name."""
    drawn = record_figures(monkeypatch)
    base = lv_data()
    data = FitData(base.t, base.y, base.y_held_out, base.n_train, None, ("hare", "lynx"), ("thousands", ""))
    assert data.labels == ("hare [thousands]", "lynx")
    save_run_plots(result_for(data, TrueField()), tmp_path / "plots")
    assert [ax.get_ylabel() for ax in panels(drawn["trajectory_fit.png"])] == ["hare [thousands]", "lynx"]
    (phase,) = panels(drawn["phase_portrait.png"])
    assert (phase.get_xlabel(), phase.get_ylabel()) == ("hare [thousands]", "lynx")
