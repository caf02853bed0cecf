"""Textbook ODEs for the equations-from-data benchmark (``experiments/discovery_suite.py``).

Each is a small :class:`TextbookSystem`: a :class:`systems.System` (frozen dataclass, parameters
as fields, vectorised ``rhs`` and analytic ``jacobian``) that also states its law as text
(:meth:`TextbookSystem.equations`) and a second initial state for the generalisation check
(:attr:`TextbookSystem.test_state`). All are registered: ``systems.get("van_der_pol")``.

>>> import systems
>>> vdp = systems.get("van_der_pol")
>>> vdp.equations()
('v', '1.5*(1 - x**2)*v - x')
>>> "lorenz" in systems.textbook.names()
True
"""

from .._registry import get
from .._registry import names as _all_names
from ._base import TextbookSystem
from .chaotic import Lorenz, Rossler
from .chemical import Brusselator, LengyelEpstein, Selkov, ThermalRunaway
from .growth import Bistable, Gompertz, Logistic, SpruceBudworm
from .interactions import SIR, Competition, HollingPredatorPrey, ToggleSwitch
from .oscillators import DampedHarmonic, DoubleWell, Duffing, VanDerPol
from .pendulums import DampedPendulum, Glider, NonuniformOscillator, OverdampedHoop, Pendulum, TorquePendulum

__all__ = [
    "SIR", "Bistable", "Brusselator", "Competition", "DampedHarmonic", "DampedPendulum", "DoubleWell",
    "Duffing", "Glider", "Gompertz", "HollingPredatorPrey", "LengyelEpstein", "Logistic", "Lorenz",
    "NonuniformOscillator", "OverdampedHoop", "Pendulum", "Rossler", "Selkov", "SpruceBudworm",
    "TextbookSystem", "ThermalRunaway", "ToggleSwitch", "TorquePendulum", "VanDerPol", "names",
]


def names() -> list[str]:
    """Registered systems that state their law (:class:`TextbookSystem`), sorted."""
    return [name for name in _all_names() if isinstance(get(name), TextbookSystem)]
