"""Ensemble vector field: M :class:`kanode.ode.VectorField` s acting on a stacked state."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kanode.ensemble._members import MemberState, check_members, stack
from kanode.ensemble.networks import stack_models
from kanode.ode import NormalisedField, VectorField


class EnsembleVectorField(MemberState, NormalisedField):
    """M vector fields ``f_m(t, y_m)`` evaluated in one call on states (M, ..., dim); ``forward(t, y)``
    and ``reset_nfe`` are :class:`kanode.ode.NormalisedField`'s.

    Per member, exactly :class:`kanode.ode.VectorField`::

        z = in_weight[m] * y[m] + in_bias[m]             # (..., dim)
        f(t, y)[m] = out_scale[m] * net_m(z [, t])       # (..., dim)

    Parameters
    ----------
    net : an ensemble network (:func:`kanode.ensemble.stack_models`) mapping
        (M, batch, dim [+1]) → (M, batch, dim).
    in_weight, in_bias, out_scale : (M, dim) per-member normalisation.
    time_input : if True, ``t`` is appended to every member's input.
    positive : every member learns its field in log coordinates (see
        :class:`kanode.ode.NormalisedField`).
    initial_state : (M, n_traj, dim) the members' fitted initial states (or None).

    Attributes
    ----------
    nfe : number of evaluations (of all members at once) since :meth:`reset_nfe`.
    """

    def __init__(self, net: nn.Module, in_weight: Tensor, in_bias: Tensor, out_scale: Tensor,
                 time_input: bool = False, positive: bool = False,
                 initial_state: Tensor | None = None) -> None:
        n_members = getattr(net, "n_members", None)
        if n_members is None:
            raise TypeError("net must be an ensemble network (kanode.ensemble.stack_models)")
        for name, value in (("in_weight", in_weight), ("in_bias", in_bias), ("out_scale", out_scale)):
            if value.ndim != 2 or value.shape[0] != n_members:
                raise ValueError(f"{name} must have shape ({n_members}, dim), got {tuple(value.shape)}")
        if initial_state is not None and (initial_state.ndim != 3 or initial_state.shape[0] != n_members):
            raise ValueError(f"initial_state must have shape ({n_members}, n_traj, dim), "
                             f"got {tuple(initial_state.shape)}")
        super().__init__(net, in_weight, in_bias, out_scale, time_input, positive, initial_state)
        self.n_members = n_members
        self.live: Tensor | None = None  # (M,) 1/0 while some members are frozen (set_live)

    def set_live(self, live: Tensor | None) -> None:
        """Freeze members: where ``live`` (M,) is 0 the member's field is 0, so its state
        stays at its initial value (finite, and costing adaptive steps nothing); None
        (or all ones) evaluates every member. Not part of the state dict."""
        self.live = None if live is None or bool(live.all()) else live.to(self.out_scale)

    @classmethod
    def from_fields(cls, fields: Sequence[VectorField]) -> "EnsembleVectorField":
        """Stack single fields (same network shape, ``time_input``, ``positive`` and initial-state
        shape); member m is fields[m]."""
        fields = check_members("VectorField", fields, VectorField)
        for m, field in enumerate(fields):
            for name in ("time_input", "positive"):
                if getattr(field, name) != getattr(fields[0], name):
                    raise ValueError(f"cannot stack VectorFields: member {m} has {name}="
                                     f"{getattr(field, name)} but member 0 has {getattr(fields[0], name)}")
            if (field.initial_state is None) != (fields[0].initial_state is None):
                raise ValueError(f"cannot stack VectorFields: member {m} fits initial states and member 0 "
                                 "does not, or the other way round")
        net = stack_models([field.net for field in fields])
        buffers = {name: stack("VectorField", name, [getattr(f, name) for f in fields])
                   for name in ("in_weight", "in_bias", "out_scale")}
        start = (None if fields[0].initial_state is None
                 else stack("VectorField", "initial_state", [f.initial_state for f in fields]))
        return cls(net, **buffers, time_input=fields[0].time_input, positive=fields[0].positive,
                   initial_state=start)

    def affine(self, u: Tensor) -> Tensor:
        """Coordinates (M, ..., dim) (states, or log states when positive) → network inputs."""
        shape = (self.n_members,) + (1,) * (u.ndim - 2) + (u.shape[-1],)
        return u * self.in_weight.view(shape) + self.in_bias.view(shape)

    def affine_inverse(self, x: Tensor) -> Tensor:
        """Network inputs (M, ..., dim) → coordinates: the inverse of :meth:`affine`."""
        shape = (self.n_members,) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        return (x - self.in_bias.view(shape)) / self.in_weight.view(shape)

    def output_scale(self, y: Tensor) -> Tensor:
        """(M, 1, ..., dim): the members' output scales for states y (M, ..., dim)."""
        shape = (self.n_members,) + (1,) * (y.ndim - 2) + (y.shape[-1],)
        if self.live is not None:
            return (self.out_scale * self.live[:, None]).view(shape)
        return self.out_scale.view(shape)

    def member(self, m: int) -> VectorField:
        """Member ``m`` as a new single :class:`kanode.ode.VectorField` (copies)."""
        m = self._check_member(m)
        start = None if self.initial_state is None else self.initial_state[m]
        return VectorField(self.net.member(m), self.in_weight[m], self.in_bias[m], self.out_scale[m],
                           time_input=self.time_input, positive=self.positive, initial_state=start)
