"""The training loss of a fixed-step solve with a compiled solver step (``torch.compile``).

A neural-ODE training step on a small problem is hundreds of tiny tensor
operations (the default protocol: 34 RK4 steps, 136 evaluations of a
[2, 10, 2] KAN, forward and backward); eager PyTorch pays its per-operation
overhead on each. :class:`CompiledLoss` writes one solver step of every member
— the stages of the method through the whole vector field (normalisation,
network, output scale) — as one pure-torch function of the field's tensors and
hands it to ``torch.compile`` (inductor, ``fullgraph``): its forward and
backward each become one generated C++ function. The time loop, the output
interpolation and each member's MSE stay in Python (34 calls per window).
Compiling the whole window instead (one graph of 136 evaluations) took over
5 minutes cold on the loaded 2-core machine; the step compiles in ~15 s from
the inductor cache and 40–190 s cold. :class:`kanode.train.Trainer` calls it
(for ensembles, and single fits as ensembles of one).

The numbers are the eager path's to rounding: the steps are torchdiffeq's own
step functions (``_step_func`` of the solver classes in :data:`STEPPERS`), on
the eager solve's grid (:func:`kanode.ode.output_grid`: every output time a grid point); the KAN layer
is the closed-form local B-spline bases of :func:`kanode.nn.bspline.local_basis`
(linear continuation outside the grid included) scattered into dense bases
and contracted in one batched GEMM, as the ensemble layer does.

Compiled: B-spline KANs (uniform or updated grids) and MLPs, fixed-step
methods of :data:`STEPPERS` with direct backpropagation. Everything else
(adjoint, adaptive and Adams methods, RSWAF, positive fields, data with missing
values, windows of an irregular grid, evaluation without gradients) runs eagerly. The compile cost is paid once per shape and process (and
reported by :func:`compile_report`); across processes the inductor and
AOTAutograd caches (``TORCHINDUCTOR_CACHE_DIR``) turn it into a cache lookup.
Where compilation fails (no C++ compiler, an unsupported torch), kanode warns
once and the caller trains eagerly.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq._impl.odeint import SOLVERS

from kanode.config import COMPILED_METHODS, FitConfig
from kanode.data import observed_mse
from kanode.nn.activations import ACTIVATIONS
from kanode.nn.bspline import local_basis, value_slope_matrix
from kanode.net_tensors import KANSpec, LinearSpec, network_tensors
from kanode.ode import output_grid
from kanode.solvers import SOLVERS as SOLVER_COSTS
from kanode.window import window_losses, window_solution

__all__ = ["CompiledLoss", "STEPPERS", "compile_report", "compiles", "torch_compiles", "AUTO_MIN_MEMBER_STEPS"]

# method name → torchdiffeq solver class whose stateless ``_step_func`` the compiled solve calls
STEPPERS = {name: SOLVERS[name] for name in COMPILED_METHODS}

_BACKEND = "inductor"  # torch.compile backend (tests replace it to exercise the fallback)
_WARNED = False        # the fallback warning is given once per process
_REPORT: dict[str, float] = {"compile_s": 0.0, "compiles": 0}
# Distinct shapes one process may compile the step for (torch's default, 8, is soon reached by a
# test session or a sweep of model sizes; past it dynamo would refuse and kanode fall back).
_RECOMPILE_LIMIT = 64

# compile = "auto" compiles when the run takes at least this many member-steps (optimiser
# steps × members). Measured on the default protocol (experiments/bench_engine.py, 2 loaded
# cores): a compiled step saves ~30-80 ms of a 60-140 ms eager step, and the one-off compile
# of the step's forward and backward costs ~15 s with a warm cache and 40-190 s cold; below
# ~2000 member-steps a cold compile does not pay, so the default fit (300 steps) stays eager.
AUTO_MIN_MEMBER_STEPS = 2000


def compiles(config: FitConfig, n_members: int = 1) -> bool:
    """Whether a run of ``config`` trains with :class:`CompiledLoss` at all: ``compile = "on"``;
    or ``"auto"`` with a compiled method, direct backpropagation and a B-spline KAN or MLP.
    Which route it then takes per call: the fused window kernel (:mod:`kanode.window`) where
    it applies, else ``torch.compile`` when :func:`torch_compiles`, else the eager loss."""
    if config.compile == "off":
        return False
    if config.compile == "on":
        return True  # FitConfig.validate checked that it can
    return config.method in STEPPERS and not config.adjoint and config.model in ("kan", "mlp")


def torch_compiles(config: FitConfig, n_members: int = 1) -> bool:
    """Whether :class:`CompiledLoss` may fall back on ``torch.compile`` (paid once per shape):
    ``compile = "on"``, or ``"auto"`` with at least :data:`AUTO_MIN_MEMBER_STEPS` member-steps."""
    if config.compile == "on":
        return True
    return compiles(config, n_members) and config.total_steps * n_members >= AUTO_MIN_MEMBER_STEPS


def compile_report() -> dict[str, float]:
    """Seconds this process spent in first calls of compiled losses (tracing and compiling,
    or loading them from the cache) and how many were compiled."""
    return dict(_REPORT)


# ------------------------------------------------------------------ the network as a function
def _kan_layer(spec: KANSpec, x: Tensor, coef: Tensor, scale: Tensor, weight: Tensor, knots: Tensor,
               matrix: Tensor | None) -> Tensor:
    """x (M, B, in) → (M, B, out); coef (M, out, in, n_coef), scale and weight (M, out, in),
    knots (M, in, n_knots)."""
    n_members, batch, n_in = x.shape
    n_coef = coef.shape[-1]
    flat = x.transpose(0, 1).reshape(batch, n_members * n_in)                        # (B, M·in)
    cell, values, _ = local_basis(flat, knots.reshape(n_members * n_in, -1), spec.order, spec.uniform,
                                  matrix=matrix)                                     # (B, M·in, k+1)
    idx = cell.unsqueeze(-1) + torch.arange(spec.order + 1, device=x.device)
    bases = x.new_zeros(batch, n_members * n_in, n_coef).scatter(-1, idx, values)
    bases = bases.reshape(batch, n_members, n_in, n_coef).transpose(0, 1)            # (M, B, in, n_coef)
    act = ACTIVATIONS[spec.activation][0](x).unsqueeze(-1)                           # (M, B, in, 1)
    features = torch.cat([bases, act], dim=-1).reshape(n_members, batch, -1)         # (M, B, in·(n_coef+1))
    weights = torch.cat([coef * scale.unsqueeze(-1), weight.unsqueeze(-1)], dim=-1)  # (M, out, in, n_coef+1)
    return torch.bmm(features, weights.reshape(n_members, weights.shape[1], -1).transpose(1, 2))


def _network(specs: tuple[Any, ...], tensors: list[list[Tensor]], matrices: dict[int, Tensor],
             x: Tensor) -> Tensor:
    """x (M, B, in) → (M, B, out) through the layers of :func:`kanode.net_tensors.network_tensors`."""
    for spec, layer in zip(specs, tensors):
        if isinstance(spec, KANSpec):
            x = _kan_layer(spec, x, *layer, matrices.get(spec.order) if spec.uniform else None)
        elif isinstance(spec, LinearSpec):
            weight, bias = layer
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        else:
            x = spec.module(x)
    return x


# ------------------------------------------------------------------ the window loss
@dataclass(frozen=True)
class _Plan:
    """What the traced function takes as structure (a new plan compiles anew)."""

    specs: tuple[Any, ...]
    method: str
    time_input: bool
    outputs: tuple[tuple[tuple[int, str], ...], ...]  # per solver step: (j, "start" | "end" | "interp")
    stepper: Any  # the torchdiffeq solver whose _step_func steps


def _time_plan(stepper: Any, t: Tensor) -> tuple[Tensor, tuple[tuple[tuple[int, str], ...], ...]]:
    """torchdiffeq's time grid for ``t`` (n_t,) and, per step, the outputs its integrate()
    writes, each with how ``_linear_interp`` makes it (host decisions, made once)."""
    grid = stepper.grid_constructor(None, None, t)
    outputs, j = [], 1
    for i in range(grid.numel() - 1):
        step = []
        while j < t.numel() and bool(grid[i + 1] >= t[j]):
            how = "start" if bool(t[j] == grid[i]) else "end" if bool(t[j] == grid[i + 1]) else "interp"
            step.append((j, how))
            j += 1
        outputs.append(tuple(step))
    return grid, tuple(outputs)


def _step(plan: _Plan, tensors: list[list[Tensor]], in_weight: Tensor, in_bias: Tensor, out_scale: Tensor,
          matrices: dict[int, Tensor], t0: Tensor, t1: Tensor, y: Tensor) -> Tensor:
    """One solver step of every member from t0 to t1 (0-dim): y (M, B, dim) → (M, B, dim);
    in_weight, in_bias, out_scale (M, 1, dim). The function that is compiled."""
    def field(t_now: Tensor, state: Tensor, perturb: Any = None) -> Tensor:
        z = state * in_weight + in_bias
        if plan.time_input:
            z = torch.cat([z, t_now.expand(*z.shape[:-1], 1).to(z)], dim=-1)
        return _network(plan.specs, tensors, matrices, z) * out_scale

    dy, _ = plan.stepper._step_func(field, t0, t1 - t0, t1, y)
    return y + dy


def _window_losses(step: Callable[..., Tensor], plan: _Plan, grid: Tensor, t: Tensor, y0: Tensor,
                   target: Tensor, *args: Any) -> Tensor:
    """(M,) MSE of each member's fixed-step solve from y0 (M, B, dim) against target
    (n_t, M, B, dim) at times t (n_t,) on the solver grid ``grid``; ``args`` the rest of
    :func:`_step`'s arguments."""
    solution = [y0]
    # a state that requires grad from the first step on: one compiled variant serves every step
    y = y0 if y0.requires_grad else y0.detach().requires_grad_()
    for i, outputs in enumerate(plan.outputs):
        t0, t1 = grid[i], grid[i + 1]
        y_next = step(plan, *args, t0, t1, y)
        for j, how in outputs:  # torchdiffeq's FixedGridODESolver._linear_interp
            if how == "start":
                solution.append(y)
            elif how == "end":
                solution.append(y_next)
            else:
                solution.append(y + (t[j] - t0) / (t1 - t0) * (y_next - y))
        y = y_next
    return observed_mse(torch.stack(solution), target, member_dim=1)             # (n_t, M, B, dim) -> (M,)


class CompiledLoss:
    """Per-member training MSE of a fixed-step solve with direct backpropagation, compiled.

    Parameters
    ----------
    method : one of :data:`STEPPERS` (``rk4``, ``euler``, ...).
    step_size : the solver step (``kanode.train.solver_options``).
    torch_compile : where the fused window kernel does not apply, compile the solver step
        with ``torch.compile`` (False: return None there, and the caller trains eagerly).
    fused : take the fused window kernel where it applies (False: benchmarks and tests of
        the ``torch.compile`` route).

    :meth:`__call__` returns the (M,) losses (differentiable in the field's
    parameters and initial states), or None when neither route applies or
    compilation failed (then the caller evaluates its eager loss; the failure
    warns once per process). Routes, in order: the fused window kernel
    (:func:`kanode.window.window_losses`: KANs on uniform grids and MLPs, on
    the CPU; missing values and positive fields included), then the compiled
    solver step (no missing values, no positive fields).
    """

    def __init__(self, method: str, step_size: float, torch_compile: bool = True, fused: bool = True) -> None:
        if method not in STEPPERS:
            raise ValueError(f"method {method!r} has no compiled solve; use one of {sorted(STEPPERS)}")
        self.method, self.step_size = method, float(step_size)
        self.torch_compile, self.fused = torch_compile, fused
        # the eager solve's grid (kanode.ode.output_grid: every output time a grid point)
        self._stepper = STEPPERS[method](func=None, y0=torch.zeros(1), grid_constructor=output_grid(self.step_size),
                                         atol=0.0)
        self._compiled: Callable[..., Tensor] | None = None
        self._seen: set[tuple[Any, ...]] = set()
        self._grids: dict[tuple[float, ...], tuple[Tensor, Any, list[int] | None]] = {}
        self.broken = False
        self.last_route: str | None = None  # "fused", "compiled" or None (eager): what the last call took

    def _inputs(self, field: nn.Module, y0: Tensor, t: Tensor) -> tuple[Any, ...] | None:
        """(layers, grid, outputs, out_index, buffers (M, 1, dim) ×3, positive) for ``field``
        on times t, or None when its network has no compiled formulation."""
        layers = network_tensors(field.net)
        if layers is None:
            return None
        key_t = tuple(t.tolist())
        if key_t not in self._grids:
            grid, outputs = _time_plan(self._stepper, t)
            self._grids[key_t] = (grid, outputs, _output_index(outputs))
        grid, outputs, out_index = self._grids[key_t]
        ensemble = hasattr(field, "n_members")
        scale = field.out_scale if not ensemble or field.live is None else field.out_scale * field.live[:, None]
        shape = (y0.shape[0], 1, y0.shape[-1])
        buffers = [b.reshape(shape) if ensemble else b.expand(shape) for b in (field.in_weight, field.in_bias, scale)]
        return layers, grid, outputs, out_index, buffers, bool(getattr(field, "positive", False))

    def __call__(self, field: nn.Module, y0: Tensor, t: Tensor, target: Tensor) -> Tensor | None:
        """(M,) losses of ``field`` (a :class:`kanode.ode.VectorField`, M = 1, or an
        :class:`kanode.ensemble.EnsembleVectorField`) from y0 (M, B, dim) over t (n_t,)
        against target (n_t, M, B, dim); counts the evaluations in ``field.nfe``."""
        self.last_route = None
        inputs = self._inputs(field, y0, t)
        if inputs is None:
            return None
        layers, grid, outputs, out_index, buffers, positive = inputs
        losses = None
        if self.fused and out_index is not None:
            flat = [b.reshape(y0.shape[0], y0.shape[-1]) for b in buffers]
            losses = window_losses(layers, *flat, torch.log(y0) if positive else y0, grid, out_index, target,
                                   self.method, bool(field.time_input), positive)
            self.last_route = None if losses is None else "fused"
        if losses is None:
            if not self.torch_compile or self.broken or positive or bool(torch.isnan(target).any()):
                return None  # log-coordinate fields and missing values train eagerly
            losses = self._compiled_losses(layers, buffers, field, grid, outputs, t, y0, target)
            if losses is None:
                return None
            self.last_route = "compiled"
        field.nfe += _evaluations(self.method) * len(outputs)
        return losses

    def solution(self, field: nn.Module, y0: Tensor, t: Tensor) -> Tensor | None:
        """(n_t, M, B, dim) the fixed-step solution of ``field`` from y0 (M, B, dim) at times t,
        without gradients, by the fused window kernel; None where it does not apply (the
        caller solves eagerly). Counts the evaluations in ``field.nfe``."""
        inputs = self._inputs(field, y0, t) if self.fused else None
        if inputs is None or inputs[3] is None:
            return None
        layers, grid, outputs, out_index, buffers, positive = inputs
        flat = [b.reshape(y0.shape[0], y0.shape[-1]) for b in buffers]
        solution = window_solution(layers, *flat, torch.log(y0) if positive else y0, grid, out_index,
                                   self.method, bool(field.time_input), positive)
        if solution is not None:
            field.nfe += _evaluations(self.method) * len(outputs)
        return solution

    def _compiled_losses(self, layers: list[tuple[Any, list[Tensor]]], buffers: list[Tensor], field: nn.Module,
                         grid: Tensor, outputs: Any, t: Tensor, y0: Tensor, target: Tensor) -> Tensor | None:
        """The (M,) losses with the ``torch.compile``-d solver step, or None (compilation failed)."""
        specs = tuple(spec for spec, _ in layers)
        tensors = [list(layer) for _, layer in layers]
        plan = _Plan(specs, self.method, bool(field.time_input), outputs, self._stepper)
        matrices = {spec.order: value_slope_matrix(spec.order, y0.dtype, y0.device)
                    for spec in specs if isinstance(spec, KANSpec) and spec.uniform}
        if self._compiled is None:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
            self._compiled = torch.compile(_step, backend=_BACKEND, fullgraph=True, dynamic=False)
        args = (tensors, *buffers, matrices)
        key = (specs, plan.time_input, tuple(y0.shape), y0.dtype, y0.device,
               tuple(tuple(x.shape) for layer in tensors for x in layer))
        try:
            if key not in self._seen:
                self._warm_up(plan, args, grid, y0)
                self._seen.add(key)
            return _window_losses(self._compiled, plan, grid, t, y0, target, *args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
            self.broken = True
            _warn_once(exc)
            return None

    def _warm_up(self, plan: _Plan, args: tuple[Any, ...], grid: Tensor, y0: Tensor) -> None:
        """Compile the step's forward and backward for these shapes on copies of the inputs
        (backward would otherwise compile lazily inside the first step) and record the time."""
        def copy(x: Any) -> Any:
            if isinstance(x, Tensor):
                return x.detach().clone().requires_grad_(x.requires_grad)
            if isinstance(x, (list, tuple)):
                return type(x)(copy(v) for v in x)
            if isinstance(x, dict):
                return {k: copy(v) for k, v in x.items()}
            return x

        start = time.perf_counter()
        tensors, *rest = copy(args)
        y = y0.detach().clone().requires_grad_()
        out = self._compiled(plan, tensors, *rest, grid[0], grid[1], y)
        leaves = [x for layer in tensors for x in layer if x.requires_grad] + [y]
        torch.autograd.grad(out.sum(), leaves, allow_unused=True)
        _REPORT["compile_s"] += time.perf_counter() - start
        _REPORT["compiles"] += 1


def _output_index(outputs: tuple[tuple[tuple[int, str], ...], ...]) -> list[int] | None:
    """The solver-grid index of every output time (the first is the grid's first point), or
    None when some output falls between grid points."""
    index = [0]
    for i, step in enumerate(outputs):
        for _, how in step:
            if how == "interp":
                return None
            index.append(i if how == "start" else i + 1)
    return index


def _evaluations(method: str) -> int:
    return SOLVER_COSTS[method].evals_per_step


def _warn_once(exc: Exception) -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        while (getattr(exc, "inner_exception", None) or exc.__cause__) is not None:
            exc = getattr(exc, "inner_exception", None) or exc.__cause__  # the compiler's own error
        first_line = (str(exc).strip().splitlines() or [""])[0]
        warnings.warn(f"kanode: torch.compile is unavailable here ({type(exc).__name__}: {first_line[:200]}); "
                      "training runs eagerly (set compile = 'off' to silence this)", RuntimeWarning, stacklevel=3)
