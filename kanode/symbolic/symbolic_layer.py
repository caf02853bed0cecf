"""A KAN layer whose edges are each pruned, a B-spline, or a trainable formula.

Edge ``(o, i)`` of a :class:`SymbolicKANLayer` is

* ``PRUNED``: exactly 0, its spline parameters masked out of every gradient;
* ``SPLINE``: the edge of the wrapped :class:`~kanode.nn.KANLayer`;
* ``SYMBOLIC``: ``c · f(a·x + b) + d`` with ``f`` from the library and
  ``(a, b, c, d) = sym_params[o, i]`` trainable, so the constants are
  fine-tuned through the ODE loss like any other parameter.

Output ``o`` is ``bias[o] + Σ_i edge_{o,i}(x_i)``; ``bias`` (trainable)
collects the constants of pruned edges. A :class:`kanode.nn.KAN` built from
these layers (:func:`as_mixed`) mixes spline and symbolic edges freely and
trains with :class:`kanode.train.Trainer` as is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from kanode.nn import KAN, KANLayer

from .library import LIBRARY

__all__ = ["SymbolicKANLayer", "PRUNED", "SPLINE", "SYMBOLIC", "FUNCTION_NAMES", "as_mixed",
           "assemble", "set_edge"]

PRUNED, SPLINE, SYMBOLIC = 0, 1, 2
FUNCTION_NAMES: tuple[str, ...] = tuple(LIBRARY)
"""Index of ``SymbolicKANLayer.function`` → library name."""


class SymbolicKANLayer(nn.Module):
    """(..., in_features) → (..., out_features), edges pruned, spline or symbolic.

    Buffers: ``mode`` (out, in) int64 in {PRUNED, SPLINE, SYMBOLIC};
    ``function`` (out, in) int64 index into :data:`FUNCTION_NAMES`.
    Parameters: ``sym_params`` (out, in, 4) = (a, b, c, d); ``bias`` (out,);
    and those of ``spline`` (a :class:`KANLayer` of the same shape).
    """

    def __init__(self, spline: KANLayer) -> None:
        super().__init__()
        if not isinstance(spline, KANLayer):
            raise TypeError(f"SymbolicKANLayer wraps a B-spline KANLayer, got {type(spline).__name__}")
        self.spline = spline
        self.in_features, self.out_features = spline.in_features, spline.out_features
        shape = (spline.out_features, spline.in_features)
        dtype = spline.spline_coef.dtype
        self.register_buffer("mode", torch.full(shape, SPLINE, dtype=torch.int64))
        self.register_buffer("function", torch.zeros(shape, dtype=torch.int64))
        init = torch.zeros(*shape, 4, dtype=dtype)
        init[..., 0] = 1.0
        self.sym_params = nn.Parameter(init)
        self.bias = nn.Parameter(torch.zeros(spline.out_features, dtype=dtype))

    # ------------------------------------------------------------ delegation
    @property
    def grid_size(self) -> int:
        return self.spline.grid_size

    @property
    def spline_order(self) -> int:
        return self.spline.spline_order

    def update_grid(self, x: Tensor) -> None:
        """Refit the spline edges' grids to samples x (..., in)."""
        self.spline.update_grid(x)

    def extend_grid(self, new_grid_size: int) -> None:
        self.spline.extend_grid(new_grid_size)

    def extra_repr(self) -> str:
        counts = [int((self.mode == m).sum()) for m in (PRUNED, SPLINE, SYMBOLIC)]
        return (f"{self.in_features}, {self.out_features}, pruned={counts[0]}, spline={counts[1]}, "
                f"symbolic={counts[2]}")

    # --------------------------------------------------------------- forward
    def _masked_spline(self) -> dict[str, Tensor]:
        keep = (self.mode == SPLINE).to(self.spline.spline_coef.dtype)
        return {"spline_coef": self.spline.spline_coef * keep.unsqueeze(-1),
                "base_weight": self.spline.base_weight * keep,
                "spline_scale": self.spline.spline_scale * keep}

    def symbolic_edges(self, x: Tensor) -> Tensor:
        """Symbolic edges' values, zero elsewhere. x: (batch, in) → (batch, out, in)."""
        a, b, c, d = self.sym_params.unbind(-1)                      # (out, in) each
        u = a * x.unsqueeze(1) + b                                    # (batch, out, in)
        out = torch.zeros_like(u)
        symbolic = self.mode == SYMBOLIC
        for index in torch.unique(self.function[symbolic]).tolist():
            chosen = symbolic & (self.function == index)
            f = LIBRARY[FUNCTION_NAMES[index]].torch
            safe_u = torch.where(chosen, u, torch.ones_like(u))      # no inf/NaN off the chosen edges
            out = out + torch.where(chosen, c * f(safe_u) + d, torch.zeros_like(u))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., in) → (..., out)."""
        shape = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        out = self.bias.expand(flat.shape[0], -1)
        n_spline = int((self.mode == SPLINE).sum())
        if n_spline == self.mode.numel():
            out = out + self.spline(flat)
        elif n_spline:
            out = out + functional_call(self.spline, self._masked_spline(), (flat,))
        if bool((self.mode == SYMBOLIC).any()):
            out = out + self.symbolic_edges(flat).sum(-1)
        return out.reshape(*shape, self.out_features)

    def edge_activations(self, x: Tensor) -> Tensor:
        """Every edge's output (pruned: 0). x: (batch, in) → (batch, out, in); differentiable."""
        flat = x.reshape(-1, self.in_features)
        spline = self.spline.edge_activations(flat) * (self.mode == SPLINE).to(flat.dtype)
        return spline + self.symbolic_edges(flat)


def assemble(layers: list[SymbolicKANLayer]) -> KAN:
    """A :class:`KAN` whose layers are ``layers`` (widths read from them)."""
    kan = KAN.__new__(KAN)
    nn.Module.__init__(kan)
    kan.widths = [layers[0].in_features] + [layer.out_features for layer in layers]
    kan.basis = "bspline"
    kan.layers = nn.ModuleList(layers)
    return kan


def as_mixed(kan: KAN) -> KAN:
    """A copy of ``kan`` made of :class:`SymbolicKANLayer` s (all edges spline), computing the same."""
    import copy

    if not isinstance(kan, KAN):
        raise TypeError(f"expected a kanode.nn.KAN, got {type(kan).__name__}; symbolic regression needs a KAN")
    layers = []
    for layer in copy.deepcopy(kan).layers:
        if isinstance(layer, SymbolicKANLayer):
            layers.append(layer)
        elif isinstance(layer, KANLayer):
            layers.append(SymbolicKANLayer(layer))
        else:
            raise TypeError(f"symbolic regression supports B-spline KAN layers, got {type(layer).__name__}")
    return assemble(layers)


@torch.no_grad()
def set_edge(layer: SymbolicKANLayer, out_index: int, in_index: int, name: str,
             params: tuple[float, float, float, float] | None = None) -> None:
    """Make edge (out_index, in_index) ``"pruned"``, ``"spline"`` or the library function ``name``."""
    if name == "pruned":
        layer.mode[out_index, in_index] = PRUNED
    elif name == "spline":
        layer.mode[out_index, in_index] = SPLINE
    else:
        if name not in LIBRARY:
            raise ValueError(f"unknown function {name!r}; choose from {', '.join(LIBRARY)}")
        layer.mode[out_index, in_index] = SYMBOLIC
        layer.function[out_index, in_index] = FUNCTION_NAMES.index(name)
        if params is not None:
            layer.sym_params[out_index, in_index] = torch.tensor(params, dtype=layer.sym_params.dtype)
    if name != "spline":
        layer.spline.spline_coef[out_index, in_index] = 0.0
        layer.spline.base_weight[out_index, in_index] = 0.0
        layer.spline.spline_scale[out_index, in_index] = 0.0
