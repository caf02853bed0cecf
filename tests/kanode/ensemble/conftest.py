"""Single models to stack: uniform and per-member non-uniform grids, RSWAF, MLP."""

import warnings

import pytest
import torch

from kanode.nn import KAN, MLP

WIDTHS = [2, 5, 3]
N_MEMBERS = 3
FAMILIES = ("bspline", "bspline-nonuniform", "rswaf", "rswaf-updated", "mlp")
# B-spline variants that take the ensemble layer's other basis code paths
PATH_FAMILIES = ("bspline-order1", "bspline-large-batch", "bspline-mixed")


@pytest.fixture(autouse=True)
def _float64_one_thread(float64_one_thread):
    """Every ensemble test in float64 on one torch thread (the fixture of tests/conftest.py)."""


def make_models(family: str, n: int = N_MEMBERS, widths=WIDTHS, seed: int = 0) -> list[torch.nn.Module]:
    """``n`` float64 single models; the "-nonuniform"/"-updated" ones have had
    ``update_grid`` on their own random samples, so their knots differ per member
    ("-mixed": all but member 0, whose grid stays uniform)."""
    gen = torch.Generator().manual_seed(seed)
    models = []
    for m in range(n):
        if family == "mlp":
            torch.manual_seed(seed + m)
            models.append(MLP(widths, activation="tanh"))
            continue
        basis = "rswaf" if family.startswith("rswaf") else "bspline"
        # order 1: the single layer's reference is its dense path (its fused C++ kernel would
        # otherwise be compiled on first use, minutes on a busy machine)
        kwargs = dict(spline_order=1, contraction="dense") if family == "bspline-order1" else {}
        kan = KAN(widths, basis=basis, grid_size=4, coef_std=0.5, generator=gen, **kwargs)
        with torch.no_grad():  # scales away from their initial ones, so that every product shows
            for layer in kan.layers:
                layer.spline_scale.copy_(0.5 + torch.rand(layer.spline_scale.shape, generator=gen))
        if family in ("bspline-nonuniform", "rswaf-updated") or (family == "bspline-mixed" and m > 0):
            samples = (torch.rand(64, widths[0], generator=gen) * (1.5 + m)) ** 2 - 1.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                kan.update_grid(samples)
        models.append(kan)
    return models
