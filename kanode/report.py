"""The figures of a finished run, written to its ``plots/`` directory.

:func:`save_run_plots` computes what the figures show with
:mod:`kanode.predict` (trajectories from the data's initial states, the
vector field on a grid) and draws them with :mod:`kanode.plots.run`:

* ``loss_curves.png`` — training, held-out and extrapolation MSE per step;
* ``trajectory_fit.png`` — data as markers, the prediction as a dense curve
  (solved between the observations), training window shaded;
* ``phase_portrait.png`` — first two states (Pleiades: the seven orbits);
* ``vector_field.png`` — 2-D data: learned and true fields and the error
  map where the true system is known (simulated data, or a file that records
  the system that made it); the learned field alone otherwise (measured data).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .plots.run import learned_vector_field, loss_curves, phase_portrait, trajectory_fit, vector_field_error
from .predict import dense_solver, dense_times, predict_trajectories, vector_field_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .result import FitResult

__all__ = ["PlotsSkipped", "run_figures", "save_run_plots"]


class PlotsSkipped(RuntimeError):
    """Some figures could not be drawn; the others were written.

    ``paths``: the files written; ``skipped``: file name → why it was skipped.
    """

    def __init__(self, paths: list[Path], skipped: dict[str, str]) -> None:
        self.paths, self.skipped = paths, skipped
        super().__init__("; ".join(f"{name}: {why}" for name, why in skipped.items()))


def run_figures(result: "FitResult") -> dict[str, Callable[[], "Figure"]]:
    """The run's figures by file name, each drawn when called (the trajectories are solved
    here, once): what :func:`save_run_plots` writes."""
    from .train import solver_options

    data = result.data
    if data is None:
        raise ValueError("the figures of a run need the FitResult of a fit (its data is None)")
    settings = solver_options(result.config, data) if result.config is not None else None  # the losses' solver
    t_dense = dense_times(float(data.t[0]), float(data.t[-1]), like=data.t)
    dense = dense_solver(settings, t_dense) if settings is not None else None
    pred = predict_trajectories(result.field, data, dense, t_dense)  # (n_traj, n_dense, dim)
    t, y = data.t.cpu().double().numpy(), data.y.cpu().double().numpy()
    t_pred = t_dense.cpu().double().numpy()
    system = data.system.name if data.system is not None else None
    title = f"{result.summary['model']} on {result.summary['system']}"
    figures: dict[str, Callable[[], "Figure"]] = {
        "loss_curves.png": lambda: loss_curves(result.history, title=title),
        "trajectory_fit.png": lambda: trajectory_fit(t, y, pred, data.n_train, data.labels, t_pred=t_pred),
        "phase_portrait.png": lambda: phase_portrait(y, pred, data.labels, system),
    }
    if data.dim == 2:
        def vector_field() -> "Figure":
            grid = vector_field_grid(result.field, data)
            if grid.true is None:  # measured data: no truth to compare with
                return learned_vector_field(grid.xs, grid.ys, grid.learned, grid.states, data.labels)
            return vector_field_error(grid.xs, grid.ys, grid.learned, grid.true, grid.states, data.labels)

        figures["vector_field.png"] = vector_field
    return figures


def save_run_plots(result: "FitResult", directory: str | Path) -> list[Path]:
    """Write the run's figures (:func:`run_figures`) into ``directory``; returns their paths.

    Raises
    ------
    PlotsSkipped : a figure could not be drawn (e.g. a phase portrait of
        1-dimensional data); every other figure has been written.
    """
    figures = run_figures(result)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    skipped: dict[str, str] = {}
    for filename, draw in figures.items():
        try:
            draw().savefig(directory / filename, dpi=110)
        except Exception as exc:  # noqa: BLE001 - one figure must not cost the others
            skipped[filename] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        else:
            paths.append(directory / filename)
    if skipped:
        raise PlotsSkipped(paths, skipped)
    return paths
