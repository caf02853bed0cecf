"""Base activations of the ensemble layers: name → (activation, derivative).

The same names and formulas as the single KAN layer's ``base_activation``
(kanode.nn); both entries are differentiable torch expressions, so the
ensemble Function's double backward can recompute them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _silu_grad(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _gelu_grad(x: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2.0)))
    return cdf + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


ACTIVATIONS = {
    "silu": (F.silu, _silu_grad),
    "tanh": (torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
    "relu": (torch.relu, lambda x: (x > 0).to(x.dtype)),
    "gelu": (F.gelu, _gelu_grad),
    "softplus": (F.softplus, torch.sigmoid),
    "identity": (lambda x: x, torch.ones_like),
}


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"base_activation={name!r} is not known; use one of {sorted(ACTIVATIONS)}")
    return name
