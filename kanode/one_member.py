"""A single :class:`kanode.ode.VectorField` seen as an ensemble of one, trained in place.

:class:`kanode.train.Trainer` trains ensemble fields: states (M, batch, dim),
parameters (M, ...). ``kanode.fit`` stacks its field
(``EnsembleVectorField.from_fields([field])``). Models that do not stack — the
symbolic recipe's mixed KANs (:mod:`kanode.symbolic`), a field a caller wants
trained in place — are given to the trainer through :class:`OneMemberField`:
it holds the field's own network, parameters and buffers (the same tensors, so
training it trains the field), evaluates ``f(t, y[0])`` on states (1, ..., dim),
and has the field's state-dict keys. Its parameters have no member axis
(``member_axis = False``): the optimisers then treat them as one member.
"""

from __future__ import annotations

from torch import Tensor, nn

from kanode.ode import VectorField

__all__ = ["OneMemberField"]


class OneMemberField(nn.Module):
    """``field`` as an ensemble of one member: ``forward(t, y)`` with y (1, ..., dim).

    Attributes
    ----------
    n_members : 1.
    member_axis : False (the parameters are the single field's, without a member axis).
    net, initial_state, in_weight, in_bias, out_scale : the field's own (shared, not copied).
    """

    n_members = 1
    member_axis = False

    def __init__(self, field: VectorField) -> None:
        super().__init__()
        object.__setattr__(self, "single", field)  # not a submodule: its tensors are registered below
        self.net = field.net
        self.initial_state = field.initial_state
        for name in ("in_weight", "in_bias", "out_scale"):
            self.register_buffer(name, getattr(field, name))
        self.time_input, self.positive = field.time_input, field.positive
        self.live: Tensor | None = None

    @property
    def nfe(self) -> int:
        return self.single.nfe

    @nfe.setter
    def nfe(self, value: int) -> None:
        self.single.nfe = value

    def reset_nfe(self) -> int:
        return self.single.reset_nfe()

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """y (1, ..., dim) → dy/dt, same shape (0 once the member is frozen)."""
        return self._masked(self.single(t, y[0]).unsqueeze(0))

    def log_rate(self, t: Tensor, z: Tensor) -> Tensor:
        """dz/dt at z = log y (1, ..., dim) (positive fields)."""
        return self._masked(self.single.log_rate(t, z[0]).unsqueeze(0))

    def _masked(self, rate: Tensor) -> Tensor:
        return rate if self.live is None else rate * self.live.to(rate).view((1,) * rate.ndim)

    def normalize(self, y: Tensor) -> Tensor:
        """States (1, ..., dim) → network inputs."""
        return self.single.normalize(y[0]).unsqueeze(0)

    def initial_values(self, observed: Tensor) -> Tensor:
        """(1, n_traj, dim): the field's fitted initial states, or ``observed``."""
        return self.single.initial_values(observed[0]).unsqueeze(0)

    def set_live(self, live: Tensor | None) -> None:
        """A frozen member's field is 0 (its state stays put), as in an ensemble."""
        self.live = None if live is None or bool(live.all()) else live

    def member(self, m: int) -> VectorField:
        """The field itself (member 0; not a copy)."""
        self._check(m)
        return self.single

    def member_state_dict(self, m: int) -> dict[str, Tensor]:
        self._check(m)
        return {k: v.clone() for k, v in self.single.state_dict().items()}

    def load_member(self, m: int, state: dict[str, Tensor]) -> None:
        self._check(m)
        self.single.load_state_dict(state)

    @staticmethod
    def _check(m: int) -> None:
        if m != 0:
            raise IndexError(f"an ensemble of one has member 0 only, not {m}")
