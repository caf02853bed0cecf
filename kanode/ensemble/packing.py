"""Which fits can share one ensemble solve.

Members of one ensemble share the data's shape, the model's shape, the solver
and the optimiser schedule; they may differ in the fields of
:data:`MEMBER_FIELDS` (seeds, learning rates and their schedules, gradient
clipping, the ``l2`` weight, and the data's noise and seeds). A sparsity penalty (``sparsity``,
``coef_l1``) applies to each member on its own training states, as in its single fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from kanode.config import ConfigError, FitConfig

__all__ = ["MEMBER_FIELDS", "pack_key", "check_packable", "pack_groups"]

MEMBER_FIELDS = ("seed", "lr", "lr_schedule", "lr_step_every", "lr_step_gamma", "lbfgs_lr",
                 "grad_clip", "l2", "divergence_factor", "data_seed", "noise", "y0_spread", "plots")


def pack_key(config: FitConfig) -> tuple[tuple[str, Any], ...]:
    """The settings members of one ensemble must share."""
    return tuple((f.name, _hashable(getattr(config, f.name))) for f in fields(config)
                 if f.name not in MEMBER_FIELDS)


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def check_packable(configs: Sequence[FitConfig]) -> None:
    """Raise ConfigError (one line) unless all ``configs`` can form one ensemble."""
    if not configs:
        raise ConfigError("an ensemble needs at least one config")
    first = dict(pack_key(configs[0]))
    for m, config in enumerate(configs[1:], start=1):
        for name, value in pack_key(config):
            if first[name] != value:
                raise ConfigError(f"member {m} has {name}={getattr(config, name)!r} but member 0 has "
                                  f"{getattr(configs[0], name)!r}; members of one ensemble may differ "
                                  f"only in {', '.join(MEMBER_FIELDS)}; fit them separately")


def pack_groups(configs: Sequence[FitConfig], max_members: int = 256) -> list[list[int]]:
    """Indices of ``configs`` grouped into ensembles (first-appearance order), at most
    ``max_members`` per group."""
    groups: dict[Any, list[list[int]]] = {}
    order: list[list[int]] = []
    for i, config in enumerate(configs):
        key = pack_key(config)
        chunks = groups.setdefault(key, [])
        if not chunks or len(chunks[-1]) >= max_members:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(i)
    return order
