"""Abstract base class for a dynamical system ``y' = f(t, y)``.

A system is a frozen dataclass whose fields are its parameters. Everything
else — name, state names, canonical initial value and time grid — is a class
attribute. Only :meth:`System.rhs` is required; :meth:`System.jacobian`
falls back to central finite differences and :meth:`System.invariants` to
``{}``.

Example: a user-defined damped harmonic oscillator ``x'' + 2ζωx' + ω²x = 0``

>>> from dataclasses import dataclass
>>> import numpy as np
>>> import systems
>>> @dataclass(frozen=True)
... class DampedOscillator(systems.System):
...     omega: float = 1.0
...     zeta: float = 0.1
...     name = "damped_oscillator"
...     state_names, initial_state = ("x", "v"), (1.0, 0.0)
...     t_span, n_t = (0.0, 20.0), 201
...     def rhs(self, t, y):  # (..., 2) -> (..., 2)
...         x, v = y[..., 0], y[..., 1]
...         return np.stack([v, -2 * self.zeta * self.omega * v - self.omega**2 * x], axis=-1)
>>> traj = systems.simulate(DampedOscillator(zeta=0.2))
>>> traj.y.shape
(1, 201, 2)

``systems.register(DampedOscillator)`` then makes it available as
``systems.get("damped_oscillator", zeta=0.2)`` and on the command line.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["System"]


@dataclass(frozen=True)
class System(abc.ABC):
    """A dynamical system ``y' = rhs(t, y)`` with state ``y`` of shape ``(dim,)``.

    Subclasses are frozen dataclasses: parameters are fields, and they set
    the class attributes below (plain assignments, no annotation).

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"lotka_volterra"``.
    state_names : tuple of str
        One name per state component; ``dim == len(state_names)``.
    initial_state : tuple of float
        Canonical initial value; :attr:`y0` returns it as an array.
    t_span : tuple of float
        ``(t0, t1)`` of the default time grid.
    n_t : int
        Number of points of the default (uniform) time grid.
    description : str
        One line: the equations, shown by ``python -m systems list``.
    """

    name: ClassVar[str]
    state_names: ClassVar[tuple[str, ...]]
    initial_state: ClassVar[tuple[float, ...]]
    t_span: ClassVar[tuple[float, float]]
    n_t: ClassVar[int]
    description: ClassVar[str] = ""

    # ------------------------------------------------------------------ basics
    @property
    def dim(self) -> int:
        """Dimension of the state vector."""
        return len(self.state_names)

    @property
    def y0(self) -> np.ndarray:
        """Canonical initial value, shape ``(dim,)`` (a fresh float64 copy)."""
        return np.array(self.initial_state, dtype=np.float64)

    @property
    def params(self) -> dict[str, Any]:
        """Parameters as ``{field name: value}``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def phase_pairs(self) -> tuple[tuple[int, int], ...]:
        """State index pairs drawn against each other in a phase portrait."""
        return ((0, 1),) if self.dim >= 2 else ()

    def default_t(self) -> np.ndarray:
        """Default time grid: ``n_t`` uniform points on ``t_span``, shape ``(n_t,)``."""
        return np.linspace(self.t_span[0], self.t_span[1], self.n_t)

    # ---------------------------------------------------------------- dynamics
    @abc.abstractmethod
    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """Vector field ``f(t, y)``: ``y`` of shape ``(..., dim)`` -> ``(..., dim)``."""

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``∂f_i/∂y_k`` of shape ``(..., dim, dim)`` for ``y`` of shape ``(..., dim)``.

        The base class uses central finite differences (accurate to about
        1e-10 relative); the built-in systems override it analytically.
        """
        y = np.asarray(y, dtype=np.float64)
        step = np.cbrt(np.finfo(np.float64).eps) * np.maximum(1.0, np.abs(y))  # (..., dim)
        columns = []
        for k in range(self.dim):
            dy = np.zeros_like(y)
            dy[..., k] = step[..., k]
            columns.append((self.rhs(t, y + dy) - self.rhs(t, y - dy)) / (2 * step[..., k, None]))
        return np.stack(columns, axis=-1)  # (..., dim, dim): column k = ∂f/∂y_k

    def invariants(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """First integrals ``{name: array of shape y.shape[:-1]}``; ``{}`` if none."""
        return {}

    # ------------------------------------------------------------ data helpers
    def sample_y0(self, rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
        """Draw ``n`` initial values around :attr:`y0`, shape ``(n, dim)``.

        Default: additive uniform, ``y0 + spread * scale * U(-1, 1)`` with the
        per-dimension scale ``max(|y0_i|, 1)``. Override where the domain
        matters (e.g. positive populations).
        """
        scale = np.maximum(np.abs(self.y0), 1.0)  # (dim,)
        return self.y0 + spread * scale * rng.uniform(-1.0, 1.0, size=(n, self.dim))
