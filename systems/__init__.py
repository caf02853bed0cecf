"""Dynamical systems that generate trajectories (numpy + scipy only, never torch).

>>> import systems
>>> lv = systems.get("lotka_volterra")
>>> traj = systems.simulate(lv)              # Trajectories, y: (1, 141, 2)
>>> data = systems.make_dataset(lv, n_traj=4, noise=0.01)
"""

from ._io import TrajectoryFileError, load, read_regular_file
from ._registry import UnknownSystemError, get, names, register
from .base import System
from .dataset import Dataset, make_dataset, split
from .fitzhugh_nagumo import FitzHughNagumo
from .lotka_volterra import LotkaVolterra
from .pleiades import Pleiades
from .rigid_body import RigidBody
from .simulate import IntegrationError, IntegrationLimitError, simulate
from .spiral import Spiral
from .trajectories import Trajectories

from . import textbook  # noqa: E402 - registers the textbook systems (after the five)

__all__ = [
    "Dataset",
    "FitzHughNagumo",
    "IntegrationError",
    "IntegrationLimitError",
    "LotkaVolterra",
    "Pleiades",
    "RigidBody",
    "Spiral",
    "System",
    "Trajectories",
    "TrajectoryFileError",
    "UnknownSystemError",
    "get",
    "load",
    "make_dataset",
    "names",
    "read_regular_file",
    "register",
    "simulate",
    "split",
    "textbook",
]
