"""Pleiades: seven bodies in the plane under Newtonian gravity (Hairer et al.)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._registry import register
from .base import System

__all__ = ["Pleiades"]

N_BODIES = 7


@register
@dataclass(frozen=True)
class Pleiades(System):
    """``x_i'' = Σ_{j≠i} m_j (x_j − x_i) / r_ij³`` (same for ``y``), G = 1.

    State order ``x (7), y (7), x' (7), y' (7)``, so ``dim == 28``.
    Invariants: energy, linear momentum (two components), angular momentum.
    """

    masses: tuple[float, ...] = tuple(float(j) for j in range(1, N_BODIES + 1))

    name = "pleiades"
    state_names = tuple(f"{q}{i}" for q in ("x", "y", "vx", "vy")
                        for i in range(1, N_BODIES + 1))
    initial_state = (3.0, 3.0, -1.0, -3.0, 2.0, -2.0, 2.0,
                     3.0, -3.0, 2.0, 0.0, 0.0, -4.0, 4.0,
                     0.0, 0.0, 0.0, 0.0, 0.0, 1.75, -1.5,
                     0.0, 0.0, 0.0, -1.25, 1.0, 0.0, 0.0)
    t_span = (0.0, 3.0)
    n_t = 301
    description = "7 bodies, m_j = j: x_i'' = Σ_{j≠i} m_j (x_j − x_i)/r_ij³ (same for y)"

    def __post_init__(self) -> None:
        masses = tuple(float(m) for m in self.masses)
        if len(masses) != N_BODIES or not all(m > 0 for m in masses):
            raise ValueError(f"pleiades: masses must be {N_BODIES} positive numbers, got {masses}")
        object.__setattr__(self, "masses", masses)

    @property
    def phase_pairs(self) -> tuple[tuple[int, int], ...]:
        """The seven orbits in the plane: ``(x_i, y_i)``."""
        return tuple((i, N_BODIES + i) for i in range(N_BODIES))

    def _geometry(self, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """Pairwise ``dx[i, j] = x_j − x_i``, ``dy``, and ``1/r³`` (0 on the diagonal)."""
        x, yy = y[..., :N_BODIES], y[..., N_BODIES:2 * N_BODIES]  # (..., 7)
        dx = x[..., None, :] - x[..., :, None]  # (..., 7, 7)
        dy = yy[..., None, :] - yy[..., :, None]
        r2 = dx**2 + dy**2
        np.einsum("...ii->...i", r2)[...] = np.inf  # no self-interaction
        inv_r3 = r2**-1.5
        return dx, dy, r2, inv_r3

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 28) -> (..., 28)."""
        y = np.asarray(y, dtype=np.float64)
        m = np.asarray(self.masses)
        dx, dy, _, inv_r3 = self._geometry(y)
        ax = np.sum(m * dx * inv_r3, axis=-1)  # (..., 7)
        ay = np.sum(m * dy * inv_r3, axis=-1)
        return np.concatenate([y[..., 2 * N_BODIES:], ax, ay], axis=-1)

    def jacobian(self, t: float, y: np.ndarray) -> np.ndarray:
        """``y`` (..., 28) -> (..., 28, 28)."""
        y = np.asarray(y, dtype=np.float64)
        n = N_BODIES
        m = np.asarray(self.masses)
        dx, dy, r2, inv_r3 = self._geometry(y)
        inv_r5 = inv_r3 / r2  # (..., 7, 7), 0 on the diagonal
        # ∂a_i/∂q_k for k ≠ i: m_k (δ r⁻³ − 3 d d r⁻⁵); diagonal = −(row sum)
        blocks = {}
        for key, da, db, delta in (("xx", dx, dx, 1.0), ("xy", dx, dy, 0.0), ("yy", dy, dy, 1.0)):
            off = m * (delta * inv_r3 - 3 * da * db * inv_r5)  # (..., 7, 7)
            blocks[key] = off - _diag(off.sum(-1))
        jac = np.zeros(y.shape[:-1] + (4 * n, 4 * n))
        eye = np.eye(n)
        jac[..., :n, 2 * n:3 * n] = eye
        jac[..., n:2 * n, 3 * n:] = eye
        jac[..., 2 * n:3 * n, :n] = blocks["xx"]
        jac[..., 2 * n:3 * n, n:2 * n] = blocks["xy"]
        jac[..., 3 * n:, :n] = blocks["xy"]
        jac[..., 3 * n:, n:2 * n] = blocks["yy"]
        return jac

    def invariants(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Energy, ``momentum_x``, ``momentum_y``, ``angular_momentum``; each ``y.shape[:-1]``."""
        y = np.asarray(y, dtype=np.float64)
        n = N_BODIES
        m = np.asarray(self.masses)
        x, yy, vx, vy = (y[..., k * n:(k + 1) * n] for k in range(4))
        _, _, r2, _ = self._geometry(y)
        iu = np.triu_indices(n, k=1)
        potential = -np.sum((m[:, None] * m[None, :])[iu] / np.sqrt(r2[..., iu[0], iu[1]]), axis=-1)
        kinetic = 0.5 * np.sum(m * (vx**2 + vy**2), axis=-1)
        return {"energy": kinetic + potential,
                "momentum_x": np.sum(m * vx, axis=-1),
                "momentum_y": np.sum(m * vy, axis=-1),
                "angular_momentum": np.sum(m * (x * vy - yy * vx), axis=-1)}


def _diag(values: np.ndarray) -> np.ndarray:
    """``(..., n)`` -> diagonal matrices ``(..., n, n)``."""
    return values[..., :, None] * np.eye(values.shape[-1])
