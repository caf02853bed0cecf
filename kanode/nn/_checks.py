"""Argument checks shared by the layers and networks of :mod:`kanode.nn`.

Each raises ``TypeError`` / ``ValueError`` with a message that says what to
pass instead; none imports a layer, so every layer module can use them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_layer_args(in_features: int, out_features: int, grid_size: int, spline_order: int,
                     grid_range: Sequence[float]) -> None:
    """Sizes are positive ints and ``grid_range`` is (low, high) with low < high."""
    for name, value in (("in_features", in_features), ("out_features", out_features),
                        ("grid_size", grid_size), ("spline_order", spline_order)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if len(grid_range) != 2 or not float(grid_range[0]) < float(grid_range[1]):
        raise ValueError(f"grid_range must be (low, high) with low < high, got {tuple(grid_range)}")


def check_input(x: torch.Tensor, in_features: int) -> None:
    """x is a tensor of shape (..., in_features)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor input, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"expected input of shape (..., {in_features}), got {tuple(x.shape)}; "
            "the last dimension must equal in_features"
        )


def check_members_arg(members: int | None) -> int | None:
    """A layer's ``members``: None (a single layer) or a positive int (the member axis' length)."""
    if members is not None and (isinstance(members, bool) or not isinstance(members, int) or members < 1):
        raise ValueError(f"members must be None (one model) or a positive int, got {members!r}")
    return members


def check_member_input(x: torch.Tensor, n_members: int, in_features: int) -> None:
    """x must be (n_members, ..., in_features)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor input, got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] != n_members or x.shape[-1] != in_features:
        raise ValueError(f"expected input of shape ({n_members}, ..., {in_features}) (members first, "
                         f"features last), got {tuple(x.shape)}")


def check_widths(widths: Sequence[int]) -> list[int]:
    """Layer widths of a network: at least two positive ints → as a list."""
    widths = list(widths)
    if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be at least two positive ints, e.g. [2, 10, 2]; got {widths}")
    return widths
