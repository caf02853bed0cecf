"""Parameters seen with a leading member axis, for the batched optimisers.

An ensemble's parameters are (M, ...) already; a single model's are viewed
as (1, ...), so one optimiser implementation serves both (a single fit is an
ensemble of one).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class MemberParams:
    """Named parameters with a member axis.

    Parameters
    ----------
    named : ``module.named_parameters()`` (only those requiring gradients are kept).
    n_members : M when every parameter is (M, ...) (an ensemble), None for a
        single model (each parameter is then seen as (1, ...)).
    """

    def __init__(self, named: Iterable[tuple[str, Tensor]], n_members: int | None = None) -> None:
        pairs = [(name, p) for name, p in named if p.requires_grad]
        if not pairs:
            raise ValueError("the optimiser got no parameters that require gradients")
        self.names = [name for name, _ in pairs]
        self.params = [p for _, p in pairs]
        self.stacked = n_members is not None
        self.n_members = n_members if n_members is not None else 1
        for name, p in pairs:
            if self.stacked and (p.ndim == 0 or p.shape[0] != n_members):
                raise ValueError(f"parameter {name} has shape {tuple(p.shape)}, not ({n_members}, ...)")
        self.sizes = [self._view(p)[0].numel() for p in self.params]
        first = self.params[0]
        self.dtype, self.device = first.dtype, first.device

    def _view(self, tensor: Tensor) -> Tensor:
        return tensor if self.stacked else tensor.unsqueeze(0)

    def member_shape(self, i: int) -> torch.Size:
        """Shape of parameter ``i`` of one member."""
        return self._view(self.params[i]).shape[1:]

    def views(self) -> list[Tensor]:
        """(M, ...) views of the parameters' data (in-place updates change the model)."""
        return [self._view(p.detach()) for p in self.params]

    def grads(self) -> list[Tensor]:
        """(M, ...) gradients; zeros where a parameter has none."""
        return [self._view(p.grad) if p.grad is not None else torch.zeros_like(self._view(p))
                for p in self.params]

    def flat(self) -> Tensor:
        """(M, P): row m is member m's parameter vector (a copy)."""
        return torch.cat([v.reshape(self.n_members, -1) for v in self.views()], dim=1)

    def flat_grad(self) -> Tensor:
        """(M, P): row m is member m's gradient (a copy)."""
        return torch.cat([g.reshape(self.n_members, -1) for g in self.grads()], dim=1)

    @torch.no_grad()
    def set_flat(self, x: Tensor) -> None:
        """Write (M, P) parameter vectors into the model."""
        for view, chunk in zip(self.views(), x.split(self.sizes, dim=1)):
            view.copy_(chunk.view_as(view))

    def zero_grad(self) -> None:
        """Zero every gradient, creating the missing ones: each backward then accumulates into
        +0, so a step's gradient has the same bits (signs of zeros included) whether or not the
        step is the first of the process (a resumed run repeats the uninterrupted one bitwise)."""
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()

    def member_mask(self, active: Tensor | None) -> Tensor:
        """(M,) bool on the parameters' device (all True for None)."""
        if active is None:
            return torch.ones(self.n_members, dtype=torch.bool, device=self.device)
        if active.shape != (self.n_members,):
            raise ValueError(f"active must have shape ({self.n_members},), got {tuple(active.shape)}")
        return active.to(device=self.device, dtype=torch.bool)


class MemberOptimizer:
    """What both batched optimisers share: their :class:`MemberParams`, ``zero_grad`` and the
    single-model ``state_dict`` / ``load_state_dict`` (member 0 of an ensemble of one).
    Subclasses define ``kind``, ``member_state(m)`` and ``load_member_state(m, state)``."""

    kind: str
    params: MemberParams

    def zero_grad(self) -> None:
        self.params.zero_grad()

    def member_state(self, m: int) -> dict:
        raise NotImplementedError

    def load_member_state(self, m: int, state: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """A single model's state (M = 1 only; ensembles save per member)."""
        if self.params.n_members != 1:
            raise ValueError("an ensemble's optimiser state is saved per member (member_state)")
        return self.member_state(0)

    def load_state_dict(self, state: dict) -> None:
        self.load_member_state(0, state)
