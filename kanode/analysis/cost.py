"""The cost table: parameters, Eq. 1 and measured saved-for-backward elements
of one layer over a grid of sizes (``python -m kanode.analysis cost``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from kanode.analysis.memory_model import eq1_extra_elements
from kanode.analysis.params import kan_layer_params, linear_params
from kanode.analysis.saved import saved_elements

__all__ = ["COST_COLUMNS", "SIZES", "BATCHES", "GRIDS", "cost_row", "cost_table", "cost_summary", "LinearSiLU"]

COST_COLUMNS = ("in_features", "out_features", "batch", "grid_size", "spline_order", "params_kan",
                "params_fc", "eq1_extra_elements", "saved_dense_elements", "saved_kanode_elements",
                "saved_fc_elements")
SIZES = (2, 8, 32, 128)  # I = O
BATCHES = (1, 64, 1024, 4096)
GRIDS = (3, 5, 10, 20, 50, 100)


class LinearSiLU(nn.Module):
    """``SiLU(Linear(x))``: the fully connected layer Eq. 1 compares against."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in) → (batch, out)."""
        return torch.nn.functional.silu(self.linear(x))


def _measure(make: Callable[[], nn.Module], batch: int, in_features: int, seed: int) -> int:
    torch.manual_seed(seed)
    model = make()
    x = (torch.rand(batch, in_features) * 1.8 - 0.9).requires_grad_()  # inside the grid range
    return saved_elements(model, x)  # the graph is freed on return: nothing outlives a row


def cost_row(in_features: int, out_features: int, batch: int, grid_size: int, spline_order: int = 3,
             seed: int = 0) -> dict[str, int]:
    """One row of :data:`COST_COLUMNS`, measured in float32 on the CPU.

    The dense layer is efficient-kan's (``DenseKANLayer(extrapolate=False)``),
    kanode's is ``KANLayer`` with its default (``"auto"``) code path.
    """
    from kanode.nn import DenseKANLayer, KANLayer

    i, o, b, g, s = in_features, out_features, batch, grid_size, spline_order
    with _default_dtype(torch.float32):
        dense = _measure(lambda: DenseKANLayer(i, o, g, s, extrapolate=False), b, i, seed)
        kanode = _measure(lambda: KANLayer(i, o, g, s), b, i, seed)
        fc = _measure(lambda: LinearSiLU(i, o), b, i, seed)
    return {"in_features": i, "out_features": o, "batch": b, "grid_size": g, "spline_order": s,
            "params_kan": kan_layer_params(i, o, g, s), "params_fc": linear_params(i, o),
            "eq1_extra_elements": eq1_extra_elements(i, o, b, g, s), "saved_dense_elements": dense,
            "saved_kanode_elements": kanode, "saved_fc_elements": fc}


def cost_table(sizes: Sequence[int] = SIZES, batches: Sequence[int] = BATCHES,
               grids: Sequence[int] = GRIDS, spline_order: int = 3) -> Iterable[dict[str, int]]:
    """Rows of :func:`cost_row` for I = O in ``sizes`` × ``batches`` × ``grids`` (yielded one by one)."""
    for size in sizes:
        for batch in batches:
            for grid in grids:
                yield cost_row(size, size, batch, grid, spline_order)


class _default_dtype:  # noqa: N801 (a context manager)
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __enter__(self) -> None:
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self.saved)


def cost_summary(rows: Sequence[dict[str, int]]) -> dict[str, float | int]:
    """The numbers the cost note quotes, from :data:`COST_COLUMNS` rows.

    ``eq1_rel_error_*``: (Eq. 1 − measured) / measured, where measured is what
    the dense layer needs beyond Linear + SiLU (parameters + saved elements);
    ``closed_form_mismatches``: rows where the dense layer's saved elements
    differ from :func:`kanode.analysis.dense_saved_elements`;
    ``kanode_grows_with_g``: (I, B) pairs whose kanode count changes with G;
    ``ratio_*``: kanode / dense saved elements at the largest I, B and G.
    """
    from kanode.analysis.memory_model import dense_saved_elements

    errors, mismatches, kanode_by_size = [], 0, {}
    for r in rows:
        measured = r["params_kan"] + r["saved_dense_elements"] - r["params_fc"] - r["saved_fc_elements"]
        errors.append((r["eq1_extra_elements"] - measured) / measured)
        closed = dense_saved_elements(r["in_features"], r["out_features"], r["batch"], r["grid_size"],
                                      r["spline_order"])
        mismatches += int(closed != r["saved_dense_elements"])
        kanode_by_size.setdefault((r["in_features"], r["batch"]), set()).add(r["saved_kanode_elements"])
    largest = max(rows, key=lambda r: (r["in_features"], r["batch"], r["grid_size"]))
    activation_term = 2 * (largest["grid_size"] + largest["spline_order"]) * largest["batch"] * largest["in_features"]
    return {
        "rows": len(rows),
        "closed_form_mismatches": mismatches,
        "eq1_rel_error_min": min(errors), "eq1_rel_error_median": sorted(errors)[len(errors) // 2],
        "eq1_rel_error_max": max(errors),
        "eq1_rel_error_largest": errors[rows.index(largest)],
        "dense_saved_over_eq1_activation_term_largest": largest["saved_dense_elements"] / activation_term,
        "kanode_grows_with_g": sum(len(v) > 1 for v in kanode_by_size.values()),
        "largest": f"I=O={largest['in_features']}, B={largest['batch']}, G={largest['grid_size']}",
        "ratio_kanode_over_dense_largest": largest["saved_kanode_elements"] / largest["saved_dense_elements"],
    }
