"""Replace every live edge of a KAN by its best library function.

Each live edge is sampled at ``n_samples`` evenly spaced points over the
range its input visits on the samples ``z`` (the training states), all edges
of all layers are fitted against the library in one vectorised call
(:func:`kanode.symbolic.edge_fit.fit_candidates`), and the selection rule of
:func:`kanode.symbolic.edge_fit.select` picks each edge's function; live
edges never become ``"0"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from kanode.nn import KAN

from .edge_fit import fit_candidates, select
from .scores import attribution, layer_inputs
from .symbolic_layer import PRUNED, SPLINE, as_mixed, set_edge

__all__ = ["EdgeReport", "edge_samples", "symbolify"]


@dataclass(frozen=True)
class EdgeReport:
    """The symbolic choice for edge (out_index, in_index) of layer ``layer``."""

    layer: int
    out_index: int
    in_index: int
    function: str
    params: tuple[float, float, float, float]
    r2: float
    complexity: int
    below_threshold: bool
    attribution: float
    input_range: tuple[float, float]
    r2_all: dict[str, float | None]

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def edge_samples(kan: KAN, z: Tensor, n_samples: int = 101
                 ) -> list[tuple[int, int, int, np.ndarray, np.ndarray]]:
    """(layer, out, in, x (n_samples,), φ(x) (n_samples,)) for every live spline edge."""
    out = []
    for l, (layer, x) in enumerate(zip(kan.layers, layer_inputs(kan, z))):
        lo, hi = x.min(dim=0).values, x.max(dim=0).values                  # (in,)
        frac = torch.linspace(0, 1, n_samples, dtype=x.dtype).unsqueeze(1)
        grid = lo + (hi - lo) * frac                                        # (n_samples, in)
        phi = layer.edge_activations(grid)                                  # (n_samples, out, in)
        for o, i in (layer.mode == SPLINE).nonzero().tolist():
            out.append((l, o, i, grid[:, i].double().numpy(), phi[:, o, i].double().numpy()))
    return out


@torch.no_grad()
def symbolify(kan: KAN, z: Tensor, complexity_weight: float = 2.0, names: Sequence[str] | None = None,
              n_samples: int = 101, r2_threshold: float = 0.99) -> tuple[KAN, list[EdgeReport]]:
    """A copy of ``kan`` with every live spline edge made symbolic, and one report per edge.

    z : (n, widths[0]) network inputs of the training states.
    """
    mixed = as_mixed(kan)
    samples = edge_samples(mixed, z, n_samples)
    if not samples:
        return mixed, []
    attr = attribution(mixed, z).attribution
    x = np.stack([s[3] for s in samples])
    y = np.stack([s[4] for s in samples])
    fits = fit_candidates(x, y, names=names)
    choices = select(fits, complexity_weight=complexity_weight, r2_threshold=r2_threshold)
    reports = []
    for (l, o, i, xs, _), choice in zip(samples, choices):
        layer = mixed.layers[l]
        if choice.name == "none":       # nothing fits: keep the spline edge
            continue
        set_edge(layer, o, i, choice.name, choice.params)
        reports.append(EdgeReport(l, o, i, choice.name, choice.params, choice.r2, choice.complexity,
                                  choice.below_threshold, float(attr[l][o, i]),
                                  (float(xs[0]), float(xs[-1])), choice.r2_all))
    return mixed, reports
