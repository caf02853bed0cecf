"""Peak memory of one neural-ODE training step (the Fig. 4 analogue).

How it is measured
------------------
* CPU: ``torch.profiler`` with ``profile_memory=True``. Every allocation and
  free of PyTorch's CPU allocator (c10) is reported to the profiler as a
  ``[memory]`` event with its byte count; the running sum of those events in
  time order is the memory the step holds above what existed before it, and
  its maximum is the step's peak. ``tracemalloc`` would be wrong here: it
  only sees Python's own allocator (``PyMem_*``), while tensor storage comes
  from c10's ``posix_memalign``/``malloc``, so it reports almost nothing.
  ``saved_tensors_hooks`` would only count what autograd keeps, not the
  solver's transient tensors or the backward pass's buffers.
* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``,
  minus the memory allocated before the step (same meaning).

The step is kanode's own objective (:func:`kanode.train.training_loss`, the
whole training window) followed by ``backward``, with gradients allocated
inside the step. A fixed-step RK4 solver at the data's sampling interval is
used so that every model and width makes the same number of vector-field
evaluations (an adaptive solver's step count would depend on the random
initial field and blur the comparison); ``nfe`` is reported.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["MEMORY_COLUMNS", "MODELS", "peak_bytes", "step_memory", "step_memory_table"]

MEMORY_COLUMNS = ("system", "model", "hidden", "n_params", "adjoint", "device", "dtype", "n_traj", "nfe",
                  "peak_bytes")
MODELS = ("kan", "kan_dense", "mlp")  # kan_dense: the textbook layer (kanode.nn.DenseKAN), same function


def peak_bytes(step: Callable[[], Any], device: str = "cpu") -> int:
    """Peak bytes allocated by ``step()`` above what was allocated before it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:
        raise RuntimeError("this torch's profiler exposes no memory events (kineto_results); "
                           "measure on CUDA or use torch 2.x as pinned in constraints.txt")
    events = sorted(((e.start_ns(), i, e.nbytes()) for i, e in enumerate(results.events())
                     if e.name() == "[memory]" and e.device_type() == DeviceType.CPU))
    running = peak = 0
    for _, _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def _field(system: str, model: str, hidden: int, adjoint: bool, device: str, dtype: str,
           n_traj: int) -> tuple[nn.Module, Any, Any]:
    from kanode.config import FitConfig
    from kanode.data import load_data
    from kanode.build import build_field

    import systems

    dim = systems.get(system).dim
    config = FitConfig(system=system, model="kan" if model == "kan_dense" else model,
                       widths=[dim, hidden, dim], adjoint=adjoint, method="rk4", device=device,
                       dtype=dtype, n_traj=n_traj, plots=False)
    data = load_data(config).to(getattr(torch, dtype), device)
    field = build_field(config, data)
    if model == "kan_dense":
        from kanode.nn import DenseKAN

        dense = DenseKAN([dim, hidden, dim], grid_size=config.grid_size, spline_order=config.spline_order,
                         grid_range=tuple(config.grid_range))
        dense.load_state_dict(field.net.state_dict())
        field.net = dense.to(dtype=getattr(torch, dtype), device=device)
    return field, data, config


def step_memory(system: str, model: str, hidden: int, adjoint: bool, device: str = "cpu",
                dtype: str = "float64", n_traj: int = 1) -> dict[str, Any]:
    """One row of :data:`MEMORY_COLUMNS`: a ``[dim, hidden, dim]`` field of
    ``model`` (``kan``, ``kan_dense`` or ``mlp``) on ``system``."""
    from kanode.train import training_loss

    if model not in MODELS:
        raise ValueError(f"model={model!r} is not known; use one of {MODELS}")
    field, data, config = _field(system, model, hidden, adjoint, device, dtype, n_traj)
    field.reset_nfe()

    def step() -> None:
        loss = training_loss(field, data, config, full=True)
        loss.backward()

    training_loss(field, data, config, full=True)  # warm-up (kernel build, lazy init)
    field.reset_nfe()
    for p in field.parameters():
        p.grad = None
    peak = peak_bytes(step, device)
    nfe, n_params = field.reset_nfe(), sum(p.numel() for p in field.parameters())
    del field, step
    gc.collect()  # the solver's objects form reference cycles that would keep the graph alive
    return {"system": system, "model": model, "hidden": hidden,
            "n_params": n_params, "adjoint": adjoint, "device": device,
            "dtype": dtype, "n_traj": n_traj, "nfe": nfe, "peak_bytes": peak}


def step_memory_table(systems_: Sequence[str], hidden: Sequence[int], models: Sequence[str] = MODELS,
                      adjoint: Sequence[bool] = (False, True), device: str = "cpu", dtype: str = "float64",
                      n_traj: int = 1) -> Iterable[dict[str, Any]]:
    """Rows of :func:`step_memory` over systems × models × adjoint × hidden widths."""
    for system in systems_:
        for model in models:
            for adj in adjoint:
                for width in hidden:
                    yield step_memory(system, model, width, adj, device, dtype, n_traj)
