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
the inductor cache and 40–190 s cold. Both trainers call it
(:class:`kanode.train.Trainer` with a single field as an ensemble of one,
:class:`kanode.ensemble.EnsembleTrainer`).

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
from kanode.ode import output_grid
from kanode.solvers import SOLVERS as SOLVER_COSTS

__all__ = ["CompiledLoss", "STEPPERS", "compile_report", "compiles", "AUTO_MIN_MEMBER_STEPS"]

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
    """Whether a run of ``config`` with ``n_members`` members trains with :class:`CompiledLoss`:
    ``compile = "on"``; or ``"auto"`` with a compiled method, direct backpropagation, a B-spline
    KAN or MLP, and at least :data:`AUTO_MIN_MEMBER_STEPS` member-steps."""
    if config.compile == "off":
        return False
    if config.compile == "on":
        return True  # FitConfig.validate checked that it can
    applies = config.method in STEPPERS and not config.adjoint and config.model in ("kan", "mlp")
    return applies and config.total_steps * n_members >= AUTO_MIN_MEMBER_STEPS


def compile_report() -> dict[str, float]:
    """Seconds this process spent in first calls of compiled losses (tracing and compiling,
    or loading them from the cache) and how many were compiled."""
    return dict(_REPORT)


# ------------------------------------------------------------------ the network as a function
@dataclass(frozen=True)
class _KANSpec:
    order: int
    uniform: bool
    activation: str


@dataclass(frozen=True)
class _LinearSpec:
    pass


@dataclass(frozen=True)
class _ActivationSpec:
    module: nn.Module


def _layers(net: nn.Module) -> list[tuple[Any, list[Tensor]]] | None:
    """The network as (spec, tensors) per layer, tensors with a member axis first, or None
    when it has no compiled formulation. Works on single (kanode.nn) and ensemble networks."""
    from kanode.ensemble import EnsembleKANLayer
    from kanode.nn import KAN, MLP, KANLayer

    ensemble = hasattr(net, "n_members")
    lift = (lambda tensor: tensor) if ensemble else (lambda tensor: tensor.unsqueeze(0))
    if type(net).__name__ == "EnsembleKAN" or isinstance(net, KAN):
        out = []
        for layer in net.layers:
            if not isinstance(layer, (KANLayer, EnsembleKANLayer)):
                return None
            spec = _KANSpec(layer.spline_order, bool(layer.uniform), layer.base_activation)
            out.append((spec, [lift(layer.spline_coef), lift(layer.spline_scale), lift(layer.base_weight),
                               lift(layer.knots)]))
        return out
    if type(net).__name__ == "EnsembleMLP" or isinstance(net, MLP):
        out = []
        for module in net.net:
            if isinstance(module, nn.Linear):  # kanode.nn.linear.Linear, with or without a member axis
                out.append((_LinearSpec(), [lift(module.weight), lift(module.bias)]))
            else:
                out.append((_ActivationSpec(module), []))
        return out
    return None


def _kan_layer(spec: _KANSpec, x: Tensor, coef: Tensor, scale: Tensor, weight: Tensor, knots: Tensor,
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
    """x (M, B, in) → (M, B, out) through the layers of :func:`_layers`."""
    for spec, layer in zip(specs, tensors):
        if isinstance(spec, _KANSpec):
            x = _kan_layer(spec, x, *layer, matrices.get(spec.order) if spec.uniform else None)
        elif isinstance(spec, _LinearSpec):
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

    :meth:`__call__` returns the (M,) losses (differentiable in the field's
    parameters), or None when this field has no compiled formulation or
    compilation failed (then the caller evaluates its eager loss; the failure
    warns once per process).
    """

    def __init__(self, method: str, step_size: float) -> None:
        if method not in STEPPERS:
            raise ValueError(f"method {method!r} has no compiled solve; use one of {sorted(STEPPERS)}")
        self.method, self.step_size = method, float(step_size)
        # the eager solve's grid (kanode.ode.output_grid: every output time a grid point)
        self._stepper = STEPPERS[method](func=None, y0=torch.zeros(1), grid_constructor=output_grid(self.step_size),
                                         atol=0.0)
        self._compiled: Callable[..., Tensor] | None = None
        self._seen: set[tuple[Any, ...]] = set()
        self._grids: dict[tuple[float, ...], tuple[Tensor, Any]] = {}
        self.broken = False

    def __call__(self, field: nn.Module, y0: Tensor, t: Tensor, target: Tensor) -> Tensor | None:
        """(M,) losses of ``field`` (a :class:`kanode.ode.VectorField`, M = 1, or an
        :class:`kanode.ensemble.EnsembleVectorField`) from y0 (M, B, dim) over t (n_t,)
        against target (n_t, M, B, dim); counts the evaluations in ``field.nfe``."""
        if self.broken or getattr(field, "positive", False) or bool(torch.isnan(target).any()):
            return None  # log-coordinate fields and missing values train eagerly
        layers = _layers(field.net)
        if layers is None:
            return None
        specs = tuple(spec for spec, _ in layers)
        tensors = [list(layer) for _, layer in layers]
        key_t = tuple(t.tolist())
        if key_t not in self._grids:
            self._grids[key_t] = _time_plan(self._stepper, t)
        grid, outputs = self._grids[key_t]
        plan = _Plan(specs, self.method, bool(field.time_input), outputs, self._stepper)
        ensemble = hasattr(field, "n_members")
        shape = (y0.shape[0], 1, y0.shape[-1])
        scale = field.out_scale if not ensemble or field.live is None else field.out_scale * field.live[:, None]
        buffers = [b.reshape(shape) if ensemble else b.expand(shape)
                   for b in (field.in_weight, field.in_bias, scale)]
        matrices = {spec.order: value_slope_matrix(spec.order, y0.dtype, y0.device)
                    for spec in specs if isinstance(spec, _KANSpec) and spec.uniform}
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
            losses = _window_losses(self._compiled, plan, grid, t, y0, target, *args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
            self.broken = True
            _warn_once(exc)
            return None
        field.nfe += _evaluations(self.method) * len(outputs)
        return losses


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
