"""What every ensemble module shares: stacking members, checking that they
fit together, and moving one member's state in and out.

An ensemble module has the same state-dict keys as the single module it
stacks, each entry with a leading member axis: ``ensemble.state_dict()[k][m]``
is ``member_m.state_dict()[k]``. So a member's state is a slice, and any
single model's state dict loads into one member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kanode.nn._checks import check_member_input as check_ensemble_input  # noqa: F401  (ensemble modules' name)


def check_members(kind: str, members: Sequence[Any], cls: type | tuple[type, ...]) -> list[Any]:
    """The members as a list; raise if there are none or one is not a ``cls``."""
    members = list(members)
    if not members:
        raise ValueError(f"an ensemble of {kind}s needs at least one member; got an empty list")
    for m, member in enumerate(members):
        if not isinstance(member, cls):
            raise TypeError(f"member {m} is a {type(member).__name__}, not a {kind}; "
                            f"an ensemble stacks models of one kind")
    return members


def check_same(kind: str, members: Sequence[Any], attrs: Sequence[str]) -> None:
    """Raise unless every member agrees with member 0 on ``attrs`` (shapes, settings;
    ``"__class__"`` for the exact type)."""
    first = members[0]
    for m, member in enumerate(members[1:], start=1):
        for name in attrs:
            mine, theirs = getattr(member, name), getattr(first, name)
            if mine != theirs:
                if name == "__class__":  # say "type=RSWAF", not "__class__=<class ...>"
                    name, mine, theirs = "type", mine.__name__, theirs.__name__
                raise ValueError(
                    f"cannot stack {kind}s: member {m} has {name}={mine!r} but member 0 has "
                    f"{name}={theirs!r}; an ensemble's members need the same shape and settings, "
                    "so fit these separately (or in separate ensembles)")


def stack(kind: str, name: str, tensors: Sequence[Tensor]) -> Tensor:
    """``torch.stack`` of detached member tensors, refusing mixed dtypes or devices."""
    first = tensors[0]
    for m, tensor in enumerate(tensors[1:], start=1):
        if tensor.dtype != first.dtype or tensor.device != first.device:
            raise ValueError(
                f"cannot stack {kind}s: member {m}'s {name} is {tensor.dtype} on {tensor.device} but "
                f"member 0's is {first.dtype} on {first.device}; move every member to one dtype and "
                "device first (model.to(...))")
    return torch.stack([t.detach() for t in tensors]).contiguous()


class MemberState:
    """Mixin for ensemble modules: ``n_members``, ``member_state_dict(m)``, ``load_member(m, ...)``.

    Subclasses set ``self.n_members``; modules whose forward derives cached
    quantities from buffers (knots) define ``_sync_grid(members)``.
    """

    n_members: int

    def _check_member(self, m: int) -> int:
        if isinstance(m, bool) or not isinstance(m, int) or not -self.n_members <= m < self.n_members:
            raise IndexError(f"member index {m!r} is out of range for an ensemble of {self.n_members}")
        return m % self.n_members

    def member_state_dict(self, m: int) -> dict[str, Tensor]:
        """The state dict of the single model that member ``m`` is (cloned tensors)."""
        m = self._check_member(m)
        return {key: value[m].clone() for key, value in self.state_dict().items()}

    @torch.no_grad()
    def load_member(self, m: int, state: Mapping[str, Tensor] | nn.Module) -> None:
        """Overwrite member ``m`` in place with a single model (or its state dict).

        Parameters keep their identity (an optimiser over the ensemble stays
        valid). Raises ValueError when keys or shapes do not match (e.g. a
        model with another grid size: extend the ensemble's grid first).
        """
        m = self._check_member(m)
        if isinstance(state, nn.Module):
            state = state.state_dict()
        own = self.state_dict(keep_vars=True)
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"member state does not fit this ensemble: missing keys {missing}, "
                             f"unexpected keys {unexpected}; load a model of the members' kind and widths")
        for key, target in own.items():
            if tuple(state[key].shape) != tuple(target.shape[1:]):
                raise ValueError(f"member state {key!r} has shape {tuple(state[key].shape)} but the "
                                 f"ensemble's members have {tuple(target.shape[1:])}; a different grid "
                                 "size or width? (extend the ensemble's grid, or stack matching models)")
        for key, target in own.items():
            target[m].copy_(state[key])
        for module in self.modules():
            sync = getattr(module, "_sync_grid", None)
            if sync is not None:
                sync([m])


def flatten_members(tensors: Sequence[Tensor]) -> Tensor:
    """Per-member tensors (each (M, ...)) → (M, P), row m the concatenation of
    member m's flattened tensors. For an ensemble's ``parameters()`` row m is
    ``torch.nn.utils.parameters_to_vector(ensemble.member(m).parameters())``
    (same parameter order), e.g. for per-member optimiser state."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("flatten_members needs at least one tensor")
    n_members = tensors[0].shape[0]
    return torch.cat([t.reshape(n_members, -1) for t in tensors], dim=1)


def unflatten_members(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Inverse of :func:`flatten_members`: (M, P) → tensors shaped as ``like`` (views of ``flat``)."""
    sizes = [t[0].numel() for t in like]
    if flat.ndim != 2 or flat.shape[1] != sum(sizes):
        raise ValueError(f"expected a (M, {sum(sizes)}) tensor, got {tuple(flat.shape)}")
    return [chunk.view(t.shape) for chunk, t in zip(flat.split(sizes, dim=1), like)]
