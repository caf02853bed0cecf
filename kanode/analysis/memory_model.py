"""Memory models of a KAN layer: Eq. 1 of Pal & Das (2024) and the exact
count of what the dense layer saves for backward.

Symbols: ``I`` inputs, ``O`` outputs, ``B`` batch, ``G`` grid size, ``S``
spline order; elements, not bytes.
"""

from __future__ import annotations

__all__ = ["eq1_extra_elements", "dense_saved_elements", "fc_saved_elements", "kanode_saved_elements"]


def eq1_extra_elements(in_features: int, out_features: int, batch: int, grid_size: int,
                       spline_order: int = 3) -> int:
    """Eq. 1 of Pal & Das (2024): elements a KAN layer needs beyond a fully
    connected one, ``I[2(G+S)B + (G+S+1)O − 1] − OB`` (parameters and
    activations together)."""
    i, o, b, g, s = in_features, out_features, batch, grid_size, spline_order
    return i * (2 * (g + s) * b + (g + s + 1) * o - 1) - o * b


def dense_saved_elements(in_features: int, out_features: int, batch: int, grid_size: int,
                         spline_order: int = 3, extrapolate: bool = False) -> int:
    """Elements :class:`kanode.nn.DenseKANLayer` saves for backward on an input
    (B, I) that requires grad, module state left out; derived term by term
    in the docstring of :mod:`kanode.nn.dense`::

        2BI + BI·C + OIC + 2I·Σ_{p=1..S}(n−p−1) + BI·Σ_{p=1..S}(n−p) + 2BI·Σ_{p=2..S}(n−p−1)

    with ``n = G + 2S + 1`` knots and ``C = G + S`` coefficients
    (``extrapolate=False``, efficient-kan's layer). ``extrapolate=True``
    (linear continuation outside the grid) adds ``BI + 2IC + BI + BIC`` for
    ``S ≥ 2`` and ``BI + BIC`` for ``S = 1``.
    """
    i, o, b, g, s = in_features, out_features, batch, grid_size, spline_order
    if s < 1:
        raise ValueError(f"spline_order must be >= 1, got {s}")
    n, c = g + 2 * s + 1, g + s
    total = (2 * b * i + b * i * c + o * i * c
             + 2 * i * sum(n - p - 1 for p in range(1, s + 1))
             + b * i * sum(n - p for p in range(1, s + 1))
             + 2 * b * i * sum(n - p - 1 for p in range(2, s + 1)))
    if extrapolate:
        total += b * i + (2 * i * c + b * i + b * i * c if s >= 2 else b * i * c)
    return total


def fc_saved_elements(in_features: int, out_features: int, batch: int) -> int:
    """``Linear`` then ``SiLU`` on an input (B, I) that requires grad: the input
    (for the weight's grad) and the pre-activation (for SiLU's), ``B(I + O)``."""
    return batch * (in_features + out_features)


def kanode_saved_elements(in_features: int, batch: int, fused: bool = True) -> int:
    """Elements :class:`kanode.nn.KANLayer` saves for backward, whatever the grid size
    (the bases are recomputed in backward): its input only, ``B·I``, on the fused
    CPU path; the input and its cell index, ``2·B·I``, on the PyTorch path
    (``fused=False``: no kernel, ``KANODE_NATIVE=0``, CUDA)."""
    return batch * in_features * (1 if fused else 2)
