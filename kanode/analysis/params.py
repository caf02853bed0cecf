"""Parameter counts of the layers and networks kanode builds, as formulas.

A B-spline KAN edge has ``G + S`` spline coefficients, one base (SiLU)
weight and one spline scale, so a KAN layer has ``I·O·(G + S + 2)``
parameters (an RSWAF edge has ``G`` centre weights: ``I·O·(G + 2)``); a
linear layer has ``O·(I + 1)``. The vector field's normalisation is buffers,
not parameters. ``tests/kanode/analysis`` checks every formula against
``sum(p.numel())`` of the built model.
"""

from __future__ import annotations

from collections.abc import Sequence

from kanode.config import FitConfig, estimate_params

__all__ = ["kan_layer_params", "rswaf_layer_params", "linear_params", "kan_params", "mlp_params",
           "config_params"]


def kan_layer_params(in_features: int, out_features: int, grid_size: int, spline_order: int = 3) -> int:
    """``I·O·(G + S + 2)``: spline coefficients, base weight and spline scale per edge."""
    return in_features * out_features * (grid_size + spline_order + 2)


def rswaf_layer_params(in_features: int, out_features: int, grid_size: int) -> int:
    """``I·O·(G + 2)``: ``G`` radial-basis weights, base weight and scale per edge."""
    return in_features * out_features * (grid_size + 2)


def linear_params(in_features: int, out_features: int) -> int:
    """``O·(I + 1)``: weights and biases of ``nn.Linear``."""
    return out_features * (in_features + 1)


def kan_params(widths: Sequence[int], grid_size: int, spline_order: int = 3, basis: str = "bspline") -> int:
    """Parameters of ``kanode.nn.KAN(widths, basis=basis, ...)``."""
    pairs = list(zip(widths[:-1], widths[1:]))
    if basis == "bspline":
        return sum(kan_layer_params(a, b, grid_size, spline_order) for a, b in pairs)
    if basis == "rswaf":
        return sum(rswaf_layer_params(a, b, grid_size) for a, b in pairs)
    raise ValueError(f"basis={basis!r} is not known; use 'bspline' or 'rswaf'")


def mlp_params(widths: Sequence[int]) -> int:
    """Parameters of ``kanode.nn.MLP(widths)``: Σ out·(in + 1)."""
    return sum(linear_params(a, b) for a, b in zip(widths[:-1], widths[1:]))


def config_params(config: FitConfig, dim: int) -> int:
    """Parameters of the vector field ``kanode.fit`` builds from ``config`` for a
    ``dim``-dimensional state (time input and default widths included): the
    sweep's :func:`kanode.config.estimate_params`, the same formulas as above,
    so the tests that check this against the built model check the sweep too."""
    return estimate_params(config, dim)
