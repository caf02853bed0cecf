"""``discover``: the recipe of ``python -m kanode.symbolic``, by its start.

* ``SymbolicConfig.start = "sparse"`` (the default): derivative estimates, sparse regression on
  the default candidate terms, trajectory polish (:func:`kanode.symbolic.sparse_recipe.discover_sparse`);
* ``"kan"``, or a trained KAN field given as ``start``: sparsify, prune and symbolify a KAN, then
  the same polish (:func:`kanode.symbolic.pipeline.discover_kan`).
"""

from __future__ import annotations

from collections.abc import Callable

from kanode.config import FitConfig
from kanode.data import FitData
from kanode.ode import VectorField

from .pipeline import Discovery, discover_kan
from .settings import SymbolicConfig
from .sparse_recipe import discover_sparse

__all__ = ["discover"]


def discover(data: FitData, config: FitConfig, sym: SymbolicConfig | None = None,
             start: VectorField | None = None, progress: Callable[[str], None] | None = None) -> Discovery:
    """Equations from ``data`` (module docstring). Raises
    :class:`~kanode.symbolic.pipeline.DiscoveryError` when a stage cannot reach a formula."""
    sym = sym or SymbolicConfig()
    if start is None and sym.start == "sparse":
        return discover_sparse(data, config, sym, progress)
    return discover_kan(data, config, sym, start, progress)
