"""Which code path the B-spline KAN layer takes: one table, one rule.

Every forward of :class:`kanode.nn.KANLayer` asks :func:`choose_path` for a
name and runs ``PATHS[name].run``; :meth:`KANLayer.contraction_for` asks the
same function, so it reports exactly what forward does. All the numbers are
equal up to rounding whichever path runs; the paths differ in speed and in
what they save for backward.

=========  ==============================================  =====================================
name       what runs                                       taken by ``contraction="auto"`` when
=========  ==============================================  =====================================
"small"    :mod:`kanode.nn._small`: all bases by ~15       uniform float64 grid, spline_order
           plain ops on truncated powers, one autograd     >= 2, n_coef <= DENSE_MAX_COEF,
           node (:class:`SmallLayerFn`) whose backward     batch × in <= SMALL_ELEMENTS, x of
           uses the kept bases. The tiny-batch path: a     the knots' dtype and not wrapped by
           neural-ODE solve evaluates at batch 1.          a torch.func transform
"fused"    :mod:`kanode.nn._fused_fn`: one C++ call for    else: CPU, uniform grid, x, knots and
           forward and one for the first-order backward;   coefficients of one dtype (float32 or
           saves only the input                            float64), spline_order + 1 <=
                                                           _native.MAX_WIDTH, no torch.func
                                                           transform, kernel switched on and built
"kept"     :mod:`kanode.nn._member_fn`: dense features    else: a graph is recorded (grad on),
           and one GEMM, features kept for the first-      x not wrapped, batch × in <=
           order backward (per-op overhead dominates,      SMALL_ELEMENTS
           memory is tiny); a single layer runs it at
           M = 1
"dense"    :class:`SplineLayerFn`, scatter + one GEMM;     else: n_coef <= DENSE_MAX_COEF, or
           saves x and its cells, recomputes the bases     n_coef <= DENSE_MAX_COEF_SMALL_BATCH
                                                           and batch × in <= SMALL_BATCH_ELEMENTS
"sparse"   :class:`SplineLayerFn`, gather of the k + 1     otherwise
           non-zero bases (cost independent of the grid)
=========  ==============================================  =====================================

``contraction="fused"`` is "auto" without the two tiny-batch paths ("small",
"kept"); ``"dense"`` and ``"sparse"`` always take that path. Without a
recorded graph (``torch.no_grad``) each path calls its plain function instead
of its autograd node. The thresholds were measured with
``experiments/bench_layers.py`` on a 2-core CPU.

**Member axis** (``KANLayer(members=M)``, x (M, batch, in)): the same
table on M · batch rows; "small" and "fused" take the member axis as they
are; "kept", "dense" and "sparse" run the member-axis eager Function of
:mod:`kanode.nn._member_fn` (dense features and one batched GEMM; it keeps
the features for a first-order backward and recomputes them otherwise).

The fused kernel's switch ``KANODE_NATIVE`` is read once
(:func:`kanode.nn._native.enabled`; ``_native.refresh`` / ``set_enabled``
change it in a running process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from kanode.nn import _native
from kanode.nn._contract import DENSE_MAX_COEF
from kanode.nn._fused_fn import FusedLayerFn, fused_forward
from kanode.nn._member_fn import MemberSplineFn, member_grid, spline_forward
from kanode.nn._small import MIN_ORDER, SmallConstants, SmallLayerFn, small_constants, small_layer
from kanode.nn._spline_fn import SplineLayerFn, spline_layer

if TYPE_CHECKING:
    from kanode.nn.kan import KANLayer

CONTRACTIONS = ("auto", "fused", "dense", "sparse")  # the layer's ``contraction`` argument
DENSE_MAX_COEF_SMALL_BATCH = 32
SMALL_BATCH_ELEMENTS = 65536  # batch × in below which the sparse path's sort and CSR set-up do not pay off
SMALL_ELEMENTS = 1024  # batch × in of the tiny-batch paths: ≤ 1024 · (n_coef + k + 3) kept values


class CodePath(NamedTuple):
    """One entry of :data:`PATHS`."""

    run: Callable[["KANLayer", torch.Tensor, bool], torch.Tensor]
    """``run(layer, x (batch, in), graph) → (batch, out)``; ``graph``: record an autograd node."""
    summary: str


def eager_contraction(n_coef: int, elements: int) -> str:
    """The faster PyTorch contraction, "dense" or "sparse", for ``n_coef`` coefficients
    per input and ``elements`` = batch × in input values."""
    if n_coef <= DENSE_MAX_COEF:
        return "dense"
    small = elements <= SMALL_BATCH_ELEMENTS
    return "dense" if small and n_coef <= DENSE_MAX_COEF_SMALL_BATCH else "sparse"


def small_constants_for(layer: "KANLayer") -> SmallConstants | None:
    """The "small" path's constants for the layer's current knots, or None where the
    path never applies (non-uniform grid, float32 knots — its truncated powers lose
    ~10 ulp(grid_size) —, spline_order < 2, more than DENSE_MAX_COEF coefficients)."""
    if (layer.uniform and layer.spline_order >= MIN_ORDER and layer.knots.dtype == torch.float64
            and layer.grid_size + layer.spline_order <= DENSE_MAX_COEF):
        return small_constants(layer.knots, layer.spline_order)
    return None


def choose_path(layer: "KANLayer", batch: int, x: torch.Tensor, graph: bool, wrapped: bool) -> str:
    """Name in :data:`PATHS` of the path for ``batch`` rows of x (batch, in).

    ``graph``: autograd records (``torch.is_grad_enabled()``); ``wrapped``: x is
    wrapped by a torch.func transform. Host-side checks only (no device sync).
    """
    mode = layer.contraction
    if mode == "dense" or mode == "sparse":
        return mode
    elements = batch * layer.in_features
    auto = mode == "auto"
    if (auto and layer._small is not None and elements <= SMALL_ELEMENTS and not wrapped
            and x.dtype == layer.knots.dtype):
        return "small"
    if (layer.uniform and x.device.type == "cpu" and x.dtype == layer.knots.dtype == layer.spline_coef.dtype
            and x.dtype in (torch.float32, torch.float64) and layer.spline_order < _native.MAX_WIDTH
            and not wrapped and not torch._C._are_functorch_transforms_active() and _native.kernel() is not None):
        return "fused"
    if auto and graph and not wrapped and elements <= SMALL_ELEMENTS:
        return "kept"
    return eager_contraction(layer.grid_size + layer.spline_order, elements)


_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # a type check, no sync


def _run_kept(layer: "KANLayer", x: torch.Tensor, graph: bool) -> torch.Tensor:
    """The member-axis eager Function that keeps its dense features for backward:
    x ([M,] batch, in) → ([M,] batch, out) (the single layer runs it at M = 1)."""
    args = (x, layer.spline_coef, layer.spline_scale, layer.base_weight, member_grid(layer, x.dtype),
            layer.base_activation)
    if torch.is_grad_enabled() and not _is_wrapped(x):  # old-style Function: not under torch.func
        return MemberSplineFn.apply(*args)
    return spline_forward(*args, differentiable=graph)


def _run_small(layer: "KANLayer", x: torch.Tensor, graph: bool) -> torch.Tensor:
    # SmallLayerFn is an old-style Function (cheap apply) without torch.func support
    if graph and not torch._C._are_functorch_transforms_active():
        return SmallLayerFn.apply(x, layer.spline_coef, layer.spline_scale, layer.base_weight, layer._small,
                                  layer.base_activation)
    return small_layer(x, layer.spline_coef, layer.spline_scale, layer.base_weight, layer._small, layer._act)


def _run_fused(layer: "KANLayer", x: torch.Tensor, graph: bool) -> torch.Tensor:
    if graph:  # a backward that builds a graph recomputes with the eager path's contraction
        mode = eager_contraction(layer.grid_size + layer.spline_order, x.shape[0] * layer.in_features)
        return FusedLayerFn.apply(x, layer.spline_coef, layer.spline_scale, layer.base_weight, layer.knots,
                                  layer._grid_shift, layer._grid_inv_h, layer.spline_order,
                                  layer.base_activation, mode)
    return fused_forward(x, layer.spline_coef, layer.spline_scale, layer.base_weight, layer._grid_shift,
                         layer._grid_inv_h, layer.spline_order, layer.base_activation)


def _eager(mode: str) -> Callable[["KANLayer", torch.Tensor, bool], torch.Tensor]:
    def run(layer: "KANLayer", x: torch.Tensor, graph: bool) -> torch.Tensor:
        if layer.members is not None:
            return _run_kept(layer, x, graph)
        args = (x, layer.spline_coef, layer.spline_scale, layer.base_weight, layer.knots, layer._grid_shift,
                layer._grid_inv_h, layer.spline_order, layer.uniform, layer.base_activation, mode)
        return SplineLayerFn.apply(*args)[0] if graph else spline_layer(*args)[0]

    return run


PATHS: dict[str, CodePath] = {
    "small": CodePath(_run_small, "tiny batch, uniform float64 grid: truncated powers by plain ops"),
    "fused": CodePath(_run_fused, "fused C++ CPU kernel, uniform grid"),
    "kept": CodePath(_run_kept, "tiny batch: the member-axis eager Function, keeping its dense features for backward"),
    "dense": CodePath(_eager("dense"), "eager Function: scatter + GEMM, bases recomputed in backward"),
    "sparse": CodePath(_eager("sparse"), "eager Function: gather of the k+1 non-zero bases"),
}
