"""Activation memory, measured: what a module's forward saves for backward."""

from __future__ import annotations

import torch

__all__ = ["saved_storages", "saved_elements"]


def saved_storages(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """(storage address, bytes) of every tensor that ``model(x)`` saves for
    backward, in order (an address may repeat), leaving out module state
    (parameters and buffers such as the knots), which is not activation
    memory. Sum over unique addresses for the total: ``sum(dict(...).values())``.

    x: the model's input; make it require grad to measure what a neural-ODE
    state or a hidden layer's input costs.

    Only what autograd saves is seen (``ctx.save_for_backward`` and the
    built-in ops); tensors a custom Function keeps as plain ``ctx``
    attributes are not — kanode's tiny-batch path
    (``kanode.nn._small.SmallLayerFn``, float64, batch·in ≤ 1024) keeps its
    bases and the scaled coefficient table that way. Measure whole-step
    memory with :func:`kanode.analysis.peak_bytes` instead.
    """
    return [(address, nbytes) for address, nbytes, _ in _saved(model, x)]


def saved_elements(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Number of elements ``model(x)`` keeps for backward: the unique storages
    of :func:`saved_storages`, each counted as ``bytes / element size`` of the
    tensor that referenced it (module state left out)."""
    unique = {address: nbytes // itemsize for address, nbytes, itemsize in _saved(model, x)}
    return sum(unique.values())


def _saved(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int, int]]:
    state = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: list[tuple[int, int, int]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in state:
            saved.append((storage.data_ptr(), storage.nbytes(), t.element_size()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out  # the graph (and what it saved) is freed here
    return saved
