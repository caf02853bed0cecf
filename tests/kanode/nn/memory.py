"""Activation memory: what a module's forward saves for backward."""

import torch


def saved_storages(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """(storage address, bytes) of every tensor that ``model(x)`` saves for
    backward, in order, leaving out module state (parameters and buffers such
    as the knots), which is not activation memory. Used by the tests and by
    ``experiments/bench_layers.py``; sum over unique addresses for the total."""
    state = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved = []

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in state:
            saved.append((storage.data_ptr(), storage.nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return saved
