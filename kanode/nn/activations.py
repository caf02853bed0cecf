"""Base activations of the KAN layers: name → (activation, derivative).

One table for every layer that takes ``base_activation`` (kanode.nn's
KANLayer, RSWAFLayer and tiny-batch path, and kanode.ensemble's layers). Both
entries are differentiable torch expressions, so the layers' autograd
Functions can recompute them in a double backward.
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
    """``name`` if it is a key of :data:`ACTIVATIONS`, else a ValueError listing them."""
    if name not in ACTIVATIONS:
        raise ValueError(f"base_activation={name!r} is not known; use one of {sorted(ACTIVATIONS)}")
    return name
