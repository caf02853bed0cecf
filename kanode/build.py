"""The network and the vector field a :class:`~kanode.config.FitConfig` describes.

A library module (the fit, the run loader :func:`kanode.load_run` and the
analyses build fields here); ``kanode.fit`` re-exports both names.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ConfigError, FitConfig, check_widths_for
from .data import FitData
from .ode import VectorField

__all__ = ["build_model", "build_field"]


def build_model(config: FitConfig, dim: int) -> nn.Module:
    """The network a config names, mapping (..., dim [+1 time]) → (..., dim)."""
    from . import nn as knn

    widths = check_widths_for(config, dim)  # ConfigError: wrong dimensions or too large
    if config.model == "mlp":
        return knn.MLP(widths, activation=config.activation)
    if config.model == "kan":
        return knn.KAN(widths, grid_size=config.grid_size, spline_order=config.spline_order,
                       grid_range=tuple(config.grid_range),
                       base_activation=config.base_activation)
    if config.model == "rswaf":
        return knn.KAN(widths, basis="rswaf", grid_size=config.grid_size,
                       grid_range=tuple(config.grid_range),
                       base_activation=config.base_activation)
    raise AssertionError(f"unhandled model {config.model!r}")  # FitConfig.validate allows no other


def build_field(config: FitConfig, data: FitData) -> VectorField:
    """Seeded model wrapped with the data's normalisation, on the config's dtype/device."""
    torch.manual_seed(config.seed)
    # initial weights depend on the config only, not on the caller's default dtype
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        net = build_model(config, data.dim)
    finally:
        torch.set_default_dtype(default)
    dtype = getattr(torch, config.dtype)
    if config.positive:
        for name, values in (("training", data.y), ("held-out", data.y_held_out)):
            seen = values[~torch.isnan(values)]
            if seen.numel() and not bool((seen > 0).all()):
                raise ConfigError(f"positive = true needs every observed value > 0 (the field works on "
                                  f"log y), but the {name} data has min {float(seen.min()):.4g}; use "
                                  "positive = false for states that can be <= 0")
    field_ = VectorField.from_data(net, data.t_train, data.y_train, grid_range=config.grid_range,
                                   time_input=config.time_input, positive=config.positive,
                                   fit_initial_state=config.fit_initial_state)
    return field_.to(dtype=dtype, device=config.device)
