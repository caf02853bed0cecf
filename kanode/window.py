"""The training loss of a fixed-step solve in one C++ call: forward and gradient (CPU).

On the default protocol a training step is 34 RK4 steps, 136 evaluations of a
[2, 10, 2] KAN, forward and backward: under 1 MFLOP, which eager PyTorch
spreads over thousands of tiny operations. :func:`window_losses` hands the
whole window — every member's solve on the solver grid, its MSE against the
observed values, and the reverse pass through the discrete solve — to one
call of a C++ kernel (``kanode/csrc/window_cpu.cpp``, built once per machine
like the layer kernel, :mod:`kanode.native_build`), wrapped as one autograd
node whose backward scales the gradients the call already computed.

The numbers are the eager solve's to rounding: the same Runge–Kutta tableaux
as torchdiffeq's fixed-grid solvers (:data:`TABLEAUX`, torchdiffeq's ``rk4``
is the 3/8 rule), the same grid (every output time a grid point, see
:func:`kanode.ode.output_grid`), the same B-spline bases (closed form on a
uniform grid, continued linearly outside it) and the same loss
(:func:`kanode.data.observed_mse`: missing values excluded; positive fields
solved in log coordinates and compared in states). It covers B-spline KANs
on uniform grids (the state of every KAN before a grid update) and MLPs with
torch's activations, in float32 and float64; anything else returns None and
the caller takes its other route. The gradient is first order only (what
training needs); ``KANODE_NATIVE=0`` switches the kernel off with the other
C++ kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kanode.native_build import Kernel
from kanode.net_tensors import ActivationSpec, KANSpec, LinearSpec
from kanode.nn import _native
from kanode.nn.bspline import grid_scale, value_slope_matrix
from kanode.nn.mlp import _ACTIVATIONS as MLP_ACTIVATIONS

__all__ = ["TABLEAUX", "MAX_STORED", "available", "window_losses", "window_solution"]

MAX_WIDTH = 8  # spline order + 1 <= kMaxWidth in the C++ source
# Stage states kept for the reverse pass (members × steps × stages × batch × dim values)
# beyond which the caller takes another route (8 bytes each in float64: 256 MB).
MAX_STORED = 32 * 2 ** 20

_third = 1.0 / 3.0
# method → (a (stages × stages, row-major), b, c): torchdiffeq's fixed-grid solvers
TABLEAUX: dict[str, tuple[list[float], list[float], list[float]]] = {
    "euler": ([0.0], [1.0], [0.0]),
    "midpoint": ([0.0, 0.0, 0.5, 0.0], [0.0, 1.0], [0.0, 0.5]),
    "heun2": ([0.0, 0.0, 1.0, 0.0], [0.5, 0.5], [0.0, 1.0]),
    "heun3": ([0.0, 0.0, 0.0, _third, 0.0, 0.0, 0.0, 2 * _third, 0.0], [0.25, 0.0, 0.75], [0.0, _third, 2 * _third]),
    "rk4": ([0.0, 0.0, 0.0, 0.0, _third, 0.0, 0.0, 0.0, -_third, 1.0, 0.0, 0.0, 1.0, -1.0, 1.0, 0.0],
            [0.125, 0.375, 0.375, 0.125], [0.0, _third, 2 * _third, 1.0]),
}
# activation module class → the kernel's activation code (kanode.nn._native.ACTIVATION_CODES)
_MODULE_ACTIVATIONS = {module: name for name, module in MLP_ACTIVATIONS.items()}  # kanode.nn.MLP's table, inverted
_KINDS = {"kan": 0, "linear": 1, "activation": 2}


KERNEL = Kernel(Path(__file__).with_name("csrc") / "window_cpu.cpp", "kanode_window", "the fused CPU solve kernel",
                _native.enabled)


def available() -> bool:
    """Whether the kernel is switched on and built (builds it on first call)."""
    return KERNEL.get() is not None


def _activation_code(spec: ActivationSpec) -> str | None:
    module = spec.module
    name = _MODULE_ACTIVATIONS.get(type(module))
    if name == "gelu" and getattr(module, "approximate", "none") != "none":
        return None
    if name == "softplus" and (module.beta != 1 or module.threshold != 20):
        return None
    return name


def _layer_arguments(layers: list[tuple[Any, list[Tensor]]], dtype: torch.dtype
                     ) -> tuple[list[int], list[int], list[Tensor | None]] | None:
    """(kinds, activation codes, tensors) for the kernel; None where a layer has no kernel form.
    In ``tensors`` the trainable ones are left as given, the grid constants filled in."""
    kinds, acts, tensors = [], [], []
    for spec, layer in layers:
        if isinstance(spec, KANSpec):
            if not spec.uniform or spec.order + 1 > MAX_WIDTH or spec.order < 1:
                return None
            coef, scale, base, knots = layer
            n_members, n_in, n_knots = knots.shape
            shift, inv_h = grid_scale(knots.detach().reshape(n_members * n_in, n_knots).to(dtype), spec.order)
            kinds.append(_KINDS["kan"])
            acts.append(_native.ACTIVATION_CODES[spec.activation])
            tensors += [coef, scale, base, shift.reshape(n_members, n_in), inv_h.reshape(n_members, n_in),
                        value_slope_matrix(spec.order, dtype, knots.device)]
        elif isinstance(spec, LinearSpec):
            kinds.append(_KINDS["linear"])
            acts.append(0)
            tensors += list(layer)
        else:
            name = _activation_code(spec)
            if name is None:
                return None
            kinds.append(_KINDS["activation"])
            acts.append(_native.ACTIVATION_CODES[name])
    return kinds, acts, tensors


class _WindowLoss(torch.autograd.Function):
    """(M,) losses of the fixed-step solve; inputs y0 and the trainable layer tensors."""

    @staticmethod
    def forward(ctx: Any, call: dict[str, Any], y0: Tensor, *trainable: Tensor) -> Tensor:
        tensors, it = [], iter(trainable)
        for t in call["tensors"]:
            tensors.append(next(it).detach() if t is None else t)
        need_grad = call["need_grad"]
        outputs = call["kernel"].window_loss(
            y0.detach(), call["grid"], call["out_index"], call["target"], call["in_weight"], call["in_bias"],
            call["out_scale"], *call["tableau"], call["kinds"], call["acts"], tensors, call["time_input"],
            call["log_coordinates"], need_grad, False)
        ctx.grads = outputs[1:] if need_grad else None
        return outputs[0]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.grads is None:
            raise RuntimeError("the fused window loss was computed without gradients")
        scaled = [g * grad.view((-1,) + (1,) * (g.ndim - 1)) for g in ctx.grads]
        return (None, *scaled)


def _prepare(layers: list[tuple[Any, list[Tensor]]], y0: Tensor, grid: Tensor, method: str
             ) -> tuple[Any, list[int], list[int], list[Tensor | None], list[Tensor]] | None:
    """(kernel, kinds, acts, fixed tensors (None where trainable), trainable tensors), or None
    where the kernel does not apply."""
    kernel = None if method not in TABLEAUX else KERNEL.get()
    if kernel is None or y0.device.type != "cpu" or y0.dtype not in (torch.float32, torch.float64):
        return None
    n_members, batch, dim = y0.shape
    if n_members * (grid.numel() - 1) * len(TABLEAUX[method][1]) * batch * dim > MAX_STORED:
        return None
    described = _layer_arguments(layers, y0.dtype)
    if described is None:
        return None
    kinds, acts, tensors = described
    positions = _trainable_positions(kinds)
    trainable = [tensors[i] for i in positions]
    if any(t.dtype != y0.dtype for t in trainable):
        return None
    fixed = [None if i in positions else t for i, t in enumerate(tensors)]
    return kernel, kinds, acts, fixed, trainable


def window_losses(layers: list[tuple[Any, list[Tensor]]], in_weight: Tensor, in_bias: Tensor, out_scale: Tensor,
                  y0: Tensor, grid: Tensor, out_index: list[int], target: Tensor, method: str,
                  time_input: bool, log_coordinates: bool) -> Tensor | None:
    """(M,) MSE of every member's fixed-step solve, differentiable in its parameters and y0,
    or None where the kernel does not apply (then nothing was computed).

    layers : :func:`kanode.net_tensors.network_tensors` of the field's network.
    in_weight, in_bias, out_scale : (M, dim) the field's normalisation (output scale times
        the live mask of an ensemble with frozen members).
    y0 : (M, B, dim) initial states (in log coordinates when ``log_coordinates``).
    grid : (n_grid,) the solver grid; ``out_index`` (n_t,) the grid index of each output time.
    target : (n_t, M, B, dim) observed states, NaN where missing.
    method : a key of :data:`TABLEAUX`.
    log_coordinates : the solve runs in z = log y and the loss compares exp(z).
    """
    prepared = _prepare(layers, y0, grid, method)
    if prepared is None:
        return None
    kernel, kinds, acts, fixed, trainable = prepared
    need_grad = torch.is_grad_enabled() and (y0.requires_grad or any(t.requires_grad for t in trainable))
    call = dict(kernel=kernel, grid=grid.detach().to(y0.dtype), out_index=torch.as_tensor(out_index, dtype=torch.long),
                target=target, in_weight=in_weight.detach(), in_bias=in_bias.detach(), out_scale=out_scale.detach(),
                tableau=TABLEAUX[method], kinds=kinds, acts=acts, tensors=fixed, time_input=time_input,
                log_coordinates=log_coordinates, need_grad=need_grad)
    return _WindowLoss.apply(call, y0, *trainable)


@torch.no_grad()
def window_solution(layers: list[tuple[Any, list[Tensor]]], in_weight: Tensor, in_bias: Tensor,
                    out_scale: Tensor, y0: Tensor, grid: Tensor, out_index: list[int], method: str,
                    time_input: bool, log_coordinates: bool) -> Tensor | None:
    """(n_t, M, B, dim) every member's fixed-step solution at the output times (states:
    exp of the solved coordinates when ``log_coordinates``), without gradients; None where
    the kernel does not apply. Arguments as :func:`window_losses`."""
    prepared = _prepare(layers, y0, grid, method)
    if prepared is None:
        return None
    kernel, kinds, acts, fixed, trainable = prepared
    it = iter(trainable)
    tensors = [next(it).detach() if t is None else t for t in fixed]
    shape = torch.empty(len(out_index), *y0.shape, dtype=y0.dtype)
    return kernel.window_loss(y0.detach(), grid.to(y0.dtype), torch.as_tensor(out_index, dtype=torch.long), shape,
                              in_weight, in_bias, out_scale, *TABLEAUX[method], kinds, acts, tensors, time_input,
                              log_coordinates, False, True)[0]


def _trainable_positions(kinds: list[int]) -> list[int]:
    """Indices into the kernel's tensor list of the trainable tensors (KAN: coef, scale, base;
    linear: weight, bias)."""
    positions, at = [], 0
    for kind in kinds:
        if kind == _KINDS["kan"]:
            positions += [at, at + 1, at + 2]
            at += 6
        elif kind == _KINDS["linear"]:
            positions += [at, at + 1]
            at += 2
    return positions
