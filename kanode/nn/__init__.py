"""KAN and MLP layers.

``KAN(widths, basis="bspline" | "rswaf", **layer_kwargs)`` stacks
:class:`KANLayer` (B-spline) or :class:`RSWAFLayer` layers; ``RSWAF(widths,
**kw)`` is a shorthand for ``KAN(widths, basis="rswaf", **kw)``.
"""

from kanode.nn.kan import KAN, KANLayer
from kanode.nn.mlp import MLP
from kanode.nn.rswaf import RSWAFLayer


def RSWAF(widths=(2, 10, 2), **layer_kwargs) -> KAN:  # noqa: N802 (reads as a class)
    """KAN network of :class:`RSWAFLayer` s."""
    return KAN(widths, basis="rswaf", **layer_kwargs)


__all__ = ["KAN", "KANLayer", "MLP", "RSWAF", "RSWAFLayer"]
