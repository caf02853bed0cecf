"""Neural-ODE vector fields and the solve() wrapper around torchdiffeq."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

# The method tables and solve()'s defaults are FitConfig's (one source of truth).
from .config import ADAPTIVE_METHODS, FIXED_STEP_METHODS, SOLVER_DEFAULTS
from .solvers import SOLVERS

__all__ = ["VectorField", "NormalisedField", "SolverError", "solve", "backward_guarded", "evaluation_budget",
           "output_grid", "FIXED_STEP_METHODS", "ADAPTIVE_METHODS"]


class SolverError(RuntimeError):
    """The ODE solve failed: step size underflow, too many steps or a non-finite state."""


class NormalisedField(nn.Module):
    """``f(t, y) = out_scale * net(in_weight * y + in_bias [, t])``: what
    :class:`VectorField` and :class:`kanode.ensemble.EnsembleVectorField` share.

    Holds ``net``, ``time_input``, ``positive``, the buffers ``in_weight``,
    ``in_bias``, ``out_scale``, the optional parameter ``initial_state`` and the
    evaluation count ``nfe``; a subclass defines :meth:`affine`,
    :meth:`affine_inverse` and :meth:`output_scale` (how the buffers broadcast
    against a state).

    Positive fields (``positive=True``, for populations and concentrations)
    learn the field in log coordinates ``z = log y``::

        dz/dt = g(z) = out_scale * net(in_weight * z + in_bias [, t])
        f(t, y) = y * g(log y)                               # dy/dt, every caller's view

    :func:`solve` integrates ``z`` and returns ``exp(z)``, so a solution stays
    exactly positive (it may underflow to 0 or overflow to inf, never cross 0).

    Fitted initial states (``initial_state``, shape (n_traj, dim), or
    (M, n_traj, dim) in an ensemble) are trainable parameters in the network's
    input coordinates (``normalize`` of the state, scale ~1 like the network's
    own parameters); :meth:`initial_values` maps them back to states. They
    live in the field so that checkpoints, resume, best-model tracking and
    ensemble stacking carry them with the network.
    """

    def __init__(self, net: nn.Module, in_weight: Tensor, in_bias: Tensor, out_scale: Tensor,
                 time_input: bool = False, positive: bool = False,
                 initial_state: Tensor | None = None) -> None:
        super().__init__()
        self.net = net
        self.time_input = time_input
        self.positive = positive
        self.register_buffer("in_weight", in_weight.clone())
        self.register_buffer("in_bias", in_bias.clone())
        self.register_buffer("out_scale", out_scale.clone())
        self.initial_state = (None if initial_state is None
                              else nn.Parameter(initial_state.detach().clone()))
        self.nfe = 0

    def affine(self, u: Tensor) -> Tensor:
        """Coordinates (y, or log y when positive) → network inputs, same shape."""
        raise NotImplementedError

    def affine_inverse(self, x: Tensor) -> Tensor:
        """Network inputs → coordinates: the inverse of :meth:`affine`."""
        raise NotImplementedError

    def output_scale(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def normalize(self, y: Tensor) -> Tensor:
        """States (..., dim) → network inputs (..., dim) (through log y when positive)."""
        return self.affine(torch.log(y) if self.positive else y)

    def denormalize(self, x: Tensor) -> Tensor:
        """Network inputs (..., dim) → states: the inverse of :meth:`normalize`."""
        u = self.affine_inverse(x)
        return torch.exp(u) if self.positive else u

    def initial_values(self, observed: Tensor) -> Tensor:
        """The training trajectories' initial states: the fitted ones
        (``initial_state``) when the field has them, else ``observed``
        (the first observations, (n_traj, dim) or (M, n_traj, dim))."""
        if self.initial_state is None:
            return observed
        if self.initial_state.shape != observed.shape:
            raise ValueError(f"the field fits initial states of shape {tuple(self.initial_state.shape)} "
                             f"but the data's first observations have shape {tuple(observed.shape)}")
        return self.denormalize(self.initial_state)

    def _rate(self, t: Tensor, u: Tensor) -> Tensor:
        """Network output at coordinates u (..., dim): dy/dt, or dz/dt when positive."""
        x = self.affine(u)
        if self.time_input:
            x = torch.cat([x, t.expand(*x.shape[:-1], 1).to(x)], dim=-1)
        return self.net(x) * self.output_scale(u)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``f(t, y)`` = dy/dt: t scalar tensor, y a state → the same shape."""
        self.nfe += 1
        if self.positive:
            return y * self._rate(t, torch.log(y))
        return self._rate(t, y)

    def log_rate(self, t: Tensor, z: Tensor) -> Tensor:
        """dz/dt at z = log y (positive fields): what :func:`solve` integrates."""
        assert self.positive, "log_rate is the field of a positive NormalisedField"
        self.nfe += 1
        return self._rate(t, z)

    def reset_nfe(self) -> int:
        """Return the evaluation count and set it to zero."""
        count, self.nfe = self.nfe, 0
        return count


class _LogCoordinates(nn.Module):
    """A positive field in log coordinates: ``forward(t, z) = dz/dt`` (what solve integrates)."""

    def __init__(self, field: NormalisedField) -> None:
        super().__init__()
        self.field = field

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.field.log_rate(t, z)


class VectorField(NormalisedField):
    """A network wrapped as an autonomous (or time-dependent) vector field ``f(t, y)``.

    The state is mapped affinely so that the training states fill
    ``grid_range`` (where a KAN's splines live), and the network output is
    scaled per dimension to the size of the observed derivatives::

        z = in_weight * y + in_bias                      # (..., dim)
        f(t, y) = out_scale * net(z [, t])               # (..., dim)

    With ``positive`` the same holds for ``log y`` and ``dlog y/dt`` (see
    :class:`NormalisedField`).

    Parameters
    ----------
    net : nn.Module mapping (..., dim [+1]) to (..., dim).
    in_weight, in_bias, out_scale : tensors of shape (dim,).
    time_input : if True, ``t`` is appended to the network input.
    positive : learn the field in log coordinates (states stay > 0).
    initial_state : (n_traj, dim) fitted initial states in network-input
        coordinates (a trainable parameter), or None.

    Attributes
    ----------
    nfe : number of evaluations since the last :meth:`reset_nfe`.
    """

    @classmethod
    def from_data(cls, net: nn.Module, t: Tensor, y: Tensor,
                  grid_range: Sequence[float] = (-1.0, 1.0),
                  time_input: bool = False, positive: bool = False,
                  fit_initial_state: bool = False) -> "VectorField":
        """Normalisation from training data.

        ``in_weight``, ``in_bias`` map each state's observed range [min, max]
        onto ``grid_range``; ``out_scale`` is the standard deviation of each
        state's finite-difference derivatives, ``Δy/Δt`` between consecutive
        observed values of a trajectory (a constant state gets 1). Both are
        computed over the observed (non-NaN) values only. Multiplying every
        state by c > 0 divides ``in_weight`` by c and multiplies ``out_scale``
        by c, so the fitted field of data ``c·y`` is ``c·f(y/c)``: the same
        network, losses times c² (up to rounding, and to the optimiser's
        absolute thresholds; README "Fitting").

        Parameters
        ----------
        t : (n_t,) observation times.
        y : (n_traj, n_t, dim) observed states, NaN where missing (all observed > 0 when
            ``positive``).
        grid_range : the interval the training states are mapped onto.
        positive : normalise ``log y`` and its derivative instead of ``y``.
        fit_initial_state : give the field an ``initial_state`` parameter,
            started at the first observations ``y[:, 0]``.
        """
        observed = ~torch.isnan(y)
        if positive and not bool((y[observed] > 0).all()):
            raise ValueError("a positive field needs every observed value > 0 (it works on log y)")
        u = torch.log(y) if positive else y
        states = u.reshape(-1, u.shape[-1])                       # (n_traj * n_t, dim)
        if bool(observed.all()):
            lo, hi = states.min(0).values, states.max(0).values
        else:
            lo = torch.where(torch.isnan(states), torch.inf, states).amin(0)
            hi = torch.where(torch.isnan(states), -torch.inf, states).amax(0)
        span = torch.where(hi - lo > 0, hi - lo, torch.ones_like(hi))
        g_lo, g_hi = float(grid_range[0]), float(grid_range[1])
        in_weight = (g_hi - g_lo) / span
        in_bias = g_lo - in_weight * lo
        out_scale = _derivative_scale(t, u, observed)
        out_scale = torch.where(out_scale > 0, out_scale, torch.ones_like(out_scale))
        start = u[:, 0] * in_weight + in_bias if fit_initial_state else None  # (n_traj, dim)
        return cls(net, in_weight, in_bias, out_scale, time_input=time_input, positive=positive,
                   initial_state=start)

    def affine(self, u: Tensor) -> Tensor:
        """Coordinates (..., dim) → network inputs (..., dim) in the grid range."""
        return u * self.in_weight + self.in_bias

    def affine_inverse(self, x: Tensor) -> Tensor:
        """Network inputs (..., dim) → coordinates (..., dim)."""
        return (x - self.in_bias) / self.in_weight

    def output_scale(self, y: Tensor) -> Tensor:
        """(dim,): the scale of the network output for states y (..., dim)."""
        return self.out_scale


def _derivative_scale(t: Tensor, y: Tensor, observed: Tensor) -> Tensor:
    """(dim,) std of the finite differences Δy/Δt between consecutive observed values of each
    trajectory (t: (n_t,), y and observed: (n_traj, n_t, dim)); 1 where there are fewer than 2."""
    dim = y.shape[-1]
    if bool(observed.all()):
        if y.shape[1] < 2:
            return torch.ones(dim, dtype=y.dtype, device=y.device)
        dydt = torch.diff(y, dim=1) / torch.diff(t)[None, :, None]     # (n_traj, n_t-1, dim)
        return dydt.reshape(-1, dim).std(0)
    scale = torch.ones(dim, dtype=y.dtype, device=y.device)
    for d in range(dim):
        slopes = []
        for i in range(y.shape[0]):
            seen = observed[i, :, d]
            ti, yi = t[seen], y[i, seen, d]
            slopes.append(torch.diff(yi) / torch.diff(ti))
        slopes_d = torch.cat(slopes)
        if slopes_d.numel() >= 2:
            scale[d] = slopes_d.std()
    return scale


def evaluation_budget(method: str, max_num_steps: int, n_t: int) -> int:
    """Vector-field evaluations one solve over ``n_t`` output times may take.

    ``max_num_steps`` solver steps (accepted and rejected, all output intervals
    together) at the method's cost per step, plus for every output interval one
    more step and the two evaluations of an initial step-size selection (the
    adjoint restarts the solver at every output time).
    """
    per_step = SOLVERS[method].evals_per_step  # kanode.solvers: derived from torchdiffeq's table
    return max_num_steps * per_step + (n_t - 1) * (per_step + 2) + 2


class _Bounded(nn.Module):
    """``field`` with a budget of evaluations; exceeding it raises :class:`SolverError`.

    Raising from inside an evaluation aborts torchdiffeq's loop at once, in the
    forward solve and in the adjoint's backward solve alike (the adjoint calls
    the field through its augmented dynamics). ``start(phase)`` resets the count.
    """

    def __init__(self, field: nn.Module, budget: int, max_num_steps: int) -> None:
        super().__init__()
        self.field = field
        self.budget = budget
        self.max_num_steps = max_num_steps
        self.count = 0
        self.phase = "forward"

    def start(self, phase: str) -> None:
        self.count, self.phase = 0, phase

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.count += 1
        if self.count > self.budget:
            what = "the adjoint (backward) solve" if self.phase == "backward" else "the solve"
            raise SolverError(f"{what} needed more than max_num_steps={self.max_num_steps} "
                              f"solver steps ({self.budget} evaluations of the vector field); "
                              "the learned dynamics are stiff or blowing up (lower the learning "
                              "rate, or raise max_num_steps)")
        return self.field(t, y)


# A gap within this relative amount above a multiple of the step takes no extra step
# (rounding: 0.3 / 0.1 is 2.9999999999999996 and 0.7 / 0.1 is 7.000000000000001).
_STEP_ROUNDING = 1e-9


def _steps_per_gap(t: Tensor, step_size: float) -> Tensor:
    """(n_t - 1,) equal steps a fixed-step solve takes across each interval of ``t``
    (increasing or, as torchdiffeq hands a backward solve to the grid, decreasing)."""
    ratio = torch.diff(t).detach().double().abs() / step_size
    return torch.ceil(ratio * (1.0 - _STEP_ROUNDING)).clamp(min=1).long()


def _fixed_steps(t: Tensor, step_size: float) -> int:
    """Steps a fixed-step solve over ``t`` takes (:func:`output_grid`)."""
    return int(_steps_per_gap(t, step_size).sum())


def output_grid(step_size: float) -> Callable[[Callable, Tensor, Tensor], Tensor]:
    """torchdiffeq's ``grid_constructor`` for fixed-step methods: every output time is a
    grid point, and each interval between output times is cut into the fewest equal
    steps no longer than ``step_size``.

    torchdiffeq's own ``step_size`` grid is ``t0 + k * step_size`` and it interpolates
    the outputs that fall between steps linearly (first-order accurate, whatever the
    method's order); on an irregular grid (measured data) that error dominates. Here
    the solution at each output time is the method's own step result. On a uniform
    grid whose interval is the step, the two grids hold the same points (to rounding).
    """
    def grid(func: Callable, y0: Tensor, t: Tensor) -> Tensor:  # t: (n_t,) monotonic
        steps = _steps_per_gap(t, step_size).to(t.device)                # (n_t - 1,)
        interval = torch.repeat_interleave(torch.arange(steps.numel(), device=t.device), steps)
        first = torch.repeat_interleave(torch.cumsum(steps, 0) - steps, steps)
        k = torch.arange(interval.numel(), device=t.device) - first      # step within its interval
        inner = t[interval] + torch.diff(t)[interval] * (k.to(t.dtype) / steps[interval].to(t.dtype))
        return torch.cat([inner, t[-1:]])                                # (total steps + 1,)
    return grid



def solve(field: nn.Module, y0: Tensor, t: Tensor, method: str = SOLVER_DEFAULTS["method"],
          rtol: float = SOLVER_DEFAULTS["rtol"], atol: float = SOLVER_DEFAULTS["atol"],
          adjoint: bool = True, step_size: float | None = None,
          max_num_steps: int = SOLVER_DEFAULTS["max_num_steps"], *,
          norm: Callable[[Tensor], Tensor] | None = None, check_finite: bool = True) -> Tensor:
    """Integrate ``dy/dt = field(t, y)`` with bounded work.

    Parameters
    ----------
    field : module with ``forward(t, y)``; y (..., dim).
    y0 : (dim,) or (batch, dim) initial states (a batch is solved in one call).
    t : (n_t,) strictly increasing output times; ``t[0]`` is the initial time.
    method : a torchdiffeq method (default, like ``FitConfig``'s: ``rk4``);
        fixed-step ones (``rk4``, ``euler``, ...) step at most ``step_size``,
        which defaults (None) to the smallest interval of ``t``, as
        ``FitConfig.step_size = 0`` does; they step exactly to every output
        time (:func:`output_grid`: an irregular ``t`` is solved at its own
        times, not interpolated). rtol/atol/max_num_steps default to
        ``FitConfig``'s too (:data:`kanode.config.SOLVER_DEFAULTS`).
    adjoint : backpropagate with the adjoint method (memory O(1) in the number
        of steps) instead of through the solver's operations.
    max_num_steps : bound on the solver steps of the WHOLE solve (all output
        intervals together, rejected steps included), enforced as a budget of
        vector-field evaluations (:func:`evaluation_budget`); the adjoint's
        backward solve gets a budget of its own of the same size. With direct
        backpropagation the autograd graph grows with the evaluations, so the
        bound also bounds memory. A fixed-step solve needing more steps is
        refused before it starts.
    norm : adaptive methods' error norm of the state, tensor → scalar
        (torchdiffeq's ``options["norm"]``; None: its RMS); the adjoint's
        backward solve uses the seminorm built on it. Ignored by fixed-step
        methods. (kanode.ensemble passes a per-member norm.)
    check_finite : raise :class:`SolverError` on a non-finite result (False:
        return it, for callers that check parts of it themselves).

    A field with ``positive = True`` (:class:`NormalisedField`) is integrated
    in log coordinates (``z = log y``, its :meth:`~NormalisedField.log_rate`)
    and the result returned as ``exp(z)``: exactly positive; rtol/atol then
    apply to log y. Its ``y0`` must be > 0 (ValueError otherwise).

    Returns
    -------
    (n_t, batch, dim) tensor, or (n_t, dim) for an unbatched ``y0``.

    Raises
    ------
    SolverError : step size underflow, too many steps or a non-finite result.
        Raised by the backward pass too (call it through :func:`backward_guarded`).
    ValueError : unknown method, or a fixed-step method without ``step_size``.
    """
    if t.ndim != 1 or t.numel() < 2 or not bool((t[1:] > t[:-1]).all()):
        raise ValueError("t must be a 1-D tensor of at least two strictly increasing times")
    if max_num_steps < 1:
        raise ValueError(f"max_num_steps must be at least 1, got {max_num_steps}")
    options: dict[str, object] = {}
    if method in FIXED_STEP_METHODS:
        if step_size is None:
            step_size = float(torch.diff(t).min())
        if not step_size or not step_size > 0:
            raise ValueError(f"method {method!r} is fixed-step: give step_size > 0")
        n_steps = _fixed_steps(t, step_size)
        if n_steps > max_num_steps:
            raise SolverError(f"method {method!r} with step_size={step_size:g} needs {n_steps} "
                              f"steps over [{float(t[0]):g}, {float(t[-1]):g}], more than "
                              f"max_num_steps={max_num_steps}; raise step_size or max_num_steps")
        options["grid_constructor"] = output_grid(step_size)
    elif method in ADAPTIVE_METHODS:
        options["max_num_steps"] = max_num_steps
        if norm is not None:
            options["norm"] = norm
    else:
        raise ValueError(f"unknown method {method!r}; choose one of "
                         f"{', '.join(ADAPTIVE_METHODS + FIXED_STEP_METHODS)}")
    positive = bool(getattr(field, "positive", False))
    if positive:  # integrate z = log y; exp keeps the solution > 0
        if not bool((y0 > 0).all()):
            raise ValueError("a positive field's initial states must all be > 0 (it integrates log y)")
        field = _LogCoordinates(field)
        y0 = torch.log(y0)
    bounded = _Bounded(field, evaluation_budget(method, max_num_steps, t.numel()), max_num_steps)
    try:
        if adjoint:
            if not isinstance(field, nn.Module):
                raise TypeError("the adjoint method needs field to be an nn.Module")
            # The seminorm ignores the parameter-adjoint channels in the backward
            # error estimate (Kidger et al. 2021): same gradients, fewer steps.
            adjoint_options = dict(options)
            if method in ADAPTIVE_METHODS:
                adjoint_options["norm"] = "seminorm"
            y = odeint_adjoint(bounded, y0, t, rtol=rtol, atol=atol, method=method,
                               options=options, adjoint_options=adjoint_options)
            bounded.start("backward")  # the backward solve counts from zero
        else:
            y = odeint(bounded, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    except AssertionError as exc:  # torchdiffeq signals failures with assert
        raise SolverError(_explain(str(exc), max_num_steps)) from exc
    if positive:
        y = torch.exp(y)
    if check_finite and not torch.isfinite(y).all():
        raise SolverError("the solution became non-finite (the vector field blew up); "
                          "lower the learning rate or tighten the tolerances")
    return y


def _explain(message: str, max_num_steps: int) -> str:
    if "max_num_steps" in message:
        return (f"the solver needed more than max_num_steps={max_num_steps} steps "
                "(the learned dynamics are stiff or blowing up)")
    if "underflow" in message:
        return f"step size underflow ({message}); the learned dynamics are stiff or non-finite"
    return f"the ODE solver failed: {message}"


def backward_guarded(loss: Tensor, max_num_steps: int = SOLVER_DEFAULTS["max_num_steps"]) -> None:
    """``loss.backward()`` turning adjoint-solver failures into :class:`SolverError`.

    A budget overrun inside the adjoint's backward solve arrives as the
    :class:`SolverError` raised by the bounded field; torchdiffeq's own
    failures (assertions) are translated.
    """
    try:
        loss.backward()
    except SolverError:
        raise
    except AssertionError as exc:
        raise SolverError(_explain(str(exc), max_num_steps)) from exc
