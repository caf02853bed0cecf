"""Trained runs as predictions: reload a run, forecast past its data, arrays for figures.

* :func:`load_run` — a run directory's trained field, data and config (an
  ensemble directory: its members), also ``kanode.load_run``;
* :func:`forecast` — dense trajectories of a loaded run from the data's (or
  given) initial states to any time; for an ensemble the members' median and a
  band (:class:`Forecast`); :func:`write_forecast_csv` writes them in the data's
  CSV format;
* :func:`predict_trajectories`, :func:`vector_field_grid` — the arrays a
  run's figures show (:mod:`kanode.report`).

``python -m kanode.predict RUN_DIR --until T --out F.csv`` is the command
(:mod:`kanode.predict.__main__`, which nothing imports).
"""

from .arrays import VectorFieldGrid, predict_trajectories, solve_states, state_bounds, vector_field_grid
from .dense import DENSE_POINTS, GAP_REFINE, dense_solver, dense_times, solver_gap
from .forecast import Forecast, band_names, forecast
from .load import CHECKPOINTS, LoadedEnsemble, LoadedRun, load_run
from .table import write_forecast_csv

__all__ = ["CHECKPOINTS", "DENSE_POINTS", "GAP_REFINE", "Forecast", "LoadedEnsemble", "LoadedRun", "VectorFieldGrid",
           "band_names", "dense_solver", "dense_times", "forecast", "load_run", "predict_trajectories",
           "solve_states", "solver_gap", "state_bounds", "vector_field_grid", "write_forecast_csv"]
