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

    Attributes
    ----------
    nfe : number of evaluations (of all members at once) since :meth:`reset_nfe`.
    """

    def __init__(self, net: nn.Module, in_weight: Tensor, in_bias: Tensor, out_scale: Tensor,
                 time_input: bool = False) -> None:
        n_members = getattr(net, "n_members", None)
        if n_members is None:
            raise TypeError("net must be an ensemble network (kanode.ensemble.stack_models)")
        for name, value in (("in_weight", in_weight), ("in_bias", in_bias), ("out_scale", out_scale)):
            if value.ndim != 2 or value.shape[0] != n_members:
                raise ValueError(f"{name} must have shape ({n_members}, dim), got {tuple(value.shape)}")
        super().__init__(net, in_weight, in_bias, out_scale, time_input)
        self.n_members = n_members
        self.live: Tensor | None = None  # (M,) 1/0 while some members are frozen (set_live)

    def set_live(self, live: Tensor | None) -> None:
        """Freeze members: where ``live`` (M,) is 0 the member's field is 0, so its state
        stays at its initial value (finite, and costing adaptive steps nothing); None
        (or all ones) evaluates every member. Not part of the state dict."""
        self.live = None if live is None or bool(live.all()) else live.to(self.out_scale)

    @classmethod
    def from_fields(cls, fields: Sequence[VectorField]) -> "EnsembleVectorField":
        """Stack single fields (same network shape, same ``time_input``); member m is fields[m]."""
        fields = check_members("VectorField", fields, VectorField)
        for m, field in enumerate(fields):
            if field.time_input != fields[0].time_input:
                raise ValueError(f"cannot stack VectorFields: member {m} has time_input={field.time_input} "
                                 f"but member 0 has {fields[0].time_input}")
        net = stack_models([field.net for field in fields])
        buffers = {name: stack("VectorField", name, [getattr(f, name) for f in fields])
                   for name in ("in_weight", "in_bias", "out_scale")}
        return cls(net, **buffers, time_input=fields[0].time_input)

    def normalize(self, y: Tensor) -> Tensor:
        """States (M, ..., dim) → network inputs (M, ..., dim)."""
        shape = (self.n_members,) + (1,) * (y.ndim - 2) + (y.shape[-1],)
        return y * self.in_weight.view(shape) + self.in_bias.view(shape)

    def output_scale(self, y: Tensor) -> Tensor:
        """(M, 1, ..., dim): the members' output scales for states y (M, ..., dim)."""
        shape = (self.n_members,) + (1,) * (y.ndim - 2) + (y.shape[-1],)
        if self.live is not None:
            return (self.out_scale * self.live[:, None]).view(shape)
        return self.out_scale.view(shape)

    def member(self, m: int) -> VectorField:
        """Member ``m`` as a new single :class:`kanode.ode.VectorField` (copies)."""
        m = self._check_member(m)
        return VectorField(self.net.member(m), self.in_weight[m], self.in_bias[m], self.out_scale[m],
                           time_input=self.time_input)
