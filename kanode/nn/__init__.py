"""KAN and MLP layers and networks.

``KAN(widths, basis="bspline" | "rswaf", **layer_kwargs)`` stacks
:class:`KANLayer` (B-spline) or :class:`RSWAFLayer` layers (the table
``kanode.nn.network.LAYERS``); :class:`RSWAF` is the KAN subclass with
``basis="rswaf"``. Which code path a ``KANLayer`` runs is decided by the one
table of :mod:`kanode.nn._dispatch`. Every layer and network also takes
``members=M``: M models on a leading member axis, by the same code
(:mod:`kanode.ensemble` stacks single models into them); :class:`Linear` is
:class:`torch.nn.Linear` with that option.
"""

from kanode.nn.dense import DenseKAN, DenseKANLayer
from kanode.nn.kan import KANLayer
from kanode.nn.linear import Linear
from kanode.nn.mlp import MLP
from kanode.nn.network import KAN, RSWAF
from kanode.nn.rswaf import RSWAFLayer


__all__ = ["KAN", "KANLayer", "Linear", "MLP", "RSWAF", "RSWAFLayer"]
