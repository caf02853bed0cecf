"""Ensemble of linear layers: M :class:`torch.nn.Linear` s stacked on a member axis."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kanode.ensemble._members import MemberState, check_ensemble_input, check_members, check_same, stack


class EnsembleLinear(MemberState, nn.Module):
    """M linear layers, (M, ..., in_features) → (M, ..., out_features).

    Parameters ``weight`` (M, out, in) and ``bias`` (M, out) (layers without
    bias are not supported). One ``baddbmm`` per call.
    """

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        layers = check_members("Linear", layers, nn.Linear)
        check_same("Linear", layers, ("in_features", "out_features"))
        for m, layer in enumerate(layers):
            if layer.bias is None:
                raise ValueError(f"member {m} is a Linear without bias; EnsembleLinear needs biases")
        self.n_members = len(layers)
        self.in_features, self.out_features = layers[0].in_features, layers[0].out_features
        self.weight = nn.Parameter(stack("Linear", "weight", [layer.weight for layer in layers]))
        self.bias = nn.Parameter(stack("Linear", "bias", [layer.bias for layer in layers]))

    def extra_repr(self) -> str:
        return f"{self.n_members} members, {self.in_features}, {self.out_features}"

    def forward(self, x: Tensor) -> Tensor:
        """x: (M, ..., in) → (M, ..., out)."""
        check_ensemble_input(x, self.n_members, self.in_features)
        flat = x.reshape(self.n_members, -1, self.in_features)  # (M, batch, in)
        out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))
        return out.reshape(*x.shape[:-1], self.out_features)

    def member(self, m: int) -> nn.Linear:
        """Member ``m`` as a new :class:`torch.nn.Linear` (copies; same dtype and device)."""
        m = self._check_member(m)
        layer = nn.Linear(self.in_features, self.out_features, device="meta")
        layer = layer.to_empty(device=self.weight.device).to(self.weight.dtype)
        layer.load_state_dict(self.member_state_dict(m))
        return layer
