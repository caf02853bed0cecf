"""A run's training objective as a function of one flat parameter vector."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from kanode.config import ConfigError

__all__ = ["load_objective", "objective_of"]


class _Loss(nn.Module):
    """The training loss of ``field`` as a module, so that ``functional_call``
    can substitute the field's parameters for the whole solve."""

    def __init__(self, field: nn.Module, data, config) -> None:
        super().__init__()
        from kanode.train import solver_options

        self.field = field
        self.data = data
        self.config = config
        self.solver = solver_options(config, data)  # once, not per evaluation

    def forward(self) -> Tensor:
        from kanode.train import training_loss

        return training_loss(self.field, self.data, self.config, full=True, adjoint=False,
                             solver=self.solver)


def objective_of(field: nn.Module, data, config) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """``(f, theta)`` for a field, its (float64) data and config: ``f`` maps a
    flat parameter vector theta (n,) to the whole-window training MSE (a
    scalar), differentiable to any order; ``theta`` (n,) is the field's
    current parameters, in ``field.named_parameters()`` order."""
    loss = _Loss(field, data, config)
    names, shapes = zip(*[(name, p.shape) for name, p in loss.named_parameters()])
    sizes = [s.numel() for s in shapes]
    theta = torch.cat([p.detach().reshape(-1) for p in loss.parameters()]).clone()

    def f(vector: Tensor) -> Tensor:
        if vector.shape != theta.shape:
            raise ValueError(f"expected a parameter vector of shape {tuple(theta.shape)}, "
                             f"got {tuple(vector.shape)}")
        parts = torch.split(vector, sizes)
        params = {name: part.view(shape) for name, part, shape in zip(names, parts, shapes)}
        return torch.func.functional_call(loss, params, ())

    return f, theta


def load_run_field(run_dir: str | Path, checkpoint: str = "last") -> tuple[nn.Module, Any, Any]:
    """``(field, data, config)`` of a run: its vector field at ``checkpoints/<checkpoint>.pt``
    ("last" or "best"), its data and config, all in float64 on the CPU
    (:func:`kanode.load_run`, with the config's dtype and device set to those).

    Raises
    ------
    ConfigError : not a kanode run (an ensemble directory: give one member), or no such checkpoint.
    """
    from kanode.predict import LoadedEnsemble, load_run

    run = load_run(run_dir, checkpoint)
    if isinstance(run, LoadedEnsemble):
        raise ConfigError(f"{run_dir} is an ensemble directory; give one member's run directory "
                          f"(e.g. {run.members[0].path})")
    return run.field, run.data, run.config.replace(dtype="float64", device="cpu")


def load_objective(run_dir: str | Path) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """``(f, theta)`` of a finished (or interrupted) run.

    ``f`` maps a flat float64 parameter vector (n,) to the run's training
    loss: the MSE of the solved trajectories on the whole training window,
    with the run's data, solver and tolerances (kanode's own
    :func:`kanode.train.training_loss`), evaluated in float64 on the CPU and
    differentiated through the solver (``adjoint`` only changes how a
    gradient is computed, not the loss). ``theta`` (n,) is the run's final
    parameter vector (``checkpoints/last.pt``), in ``named_parameters`` order.

    Raises
    ------
    ConfigError : not a kanode run, or no checkpoint.
    """
    field, data, config = load_run_field(run_dir)
    return objective_of(field, data, config)
