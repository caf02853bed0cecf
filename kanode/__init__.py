"""kanode: neural ODEs with KAN and MLP vector fields.

Layers live in :mod:`kanode.nn`, solving in :mod:`kanode.ode`, the training
loop in :mod:`kanode.train`; ``kanode.fit.fit`` (and ``python -m
kanode.fit``) runs one complete fit. ``kanode.fit`` is not re-exported here, so
that ``python -m kanode.fit`` runs its module exactly once.
"""

from .config import ConfigError, FitConfig, load_config
from .nn import KAN, MLP, RSWAF, KANLayer
from .ode import SolverError, VectorField, solve

__version__ = "0.1.0"

__all__ = ["ConfigError", "FitConfig", "KAN", "KANLayer", "MLP", "RSWAF", "SolverError",
           "VectorField", "load_config", "solve"]
