"""Settings of ``python -m kanode.analysis``, validated before any work.

One frozen dataclass per subcommand (:class:`CostSettings`,
:class:`MemorySettings`, :class:`HessianSettings`); each checks its fields on
construction and raises :class:`~kanode.config.ConfigError` with a one-line
message naming the option, like :meth:`kanode.config.FitConfig.validate` for
``kanode.fit``. The ranges are the tables below (one place).
:func:`check_hessian_memory` refuses a Hessian whose dense arrays would not
fit in the memory available, from the parameter count alone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from kanode.config import (MAX_GRID_SIZE, MAX_LAYER_WIDTH, MAX_SPLINE_ORDER, MAX_THREADS, MAX_TRAJ,
                           ConfigError)

__all__ = ["CostSettings", "MemorySettings", "HessianSettings", "HESSIAN_RANGES", "hessian_memory_bytes",
           "check_hessian_memory", "available_memory_bytes"]

# option → (lowest, highest) allowed; the flags are these names with dashes.
COMMON_RANGES = {"threads": (0, MAX_THREADS)}
COST_RANGES = {"sizes": (1, 1024), "batches": (1, 65_536), "grids": (1, MAX_GRID_SIZE),
               "spline_order": (1, MAX_SPLINE_ORDER)}
MEMORY_RANGES = {"hidden": (1, MAX_LAYER_WIDTH), "n_traj": (1, MAX_TRAJ)}
HESSIAN_RANGES = {"k": (1, 1000), "probes": (1, 100_000), "slq_probes": (0, 10_000),
                  "slq_steps": (1, 10_000), "chunk": (1, 5000)}
MAX_LIST = 64  # values per list option (--sizes, --hidden, ...)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{_flag(name)} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{_flag(name)} must be in [{lo}, {hi}], got {value}")


def _check_ints(name: str, values: tuple[int, ...], lo: int, hi: int) -> None:
    if not values or len(values) > MAX_LIST:
        raise ConfigError(f"{_flag(name)} takes 1 to {MAX_LIST} values, got {len(values)}")
    for value in values:
        _check_int(name, value, lo, hi)


def _check_ranges(settings: object, ranges: dict[str, tuple[int, int]]) -> None:
    for name, (lo, hi) in ranges.items():
        value = getattr(settings, name)
        if isinstance(value, tuple):
            _check_ints(name, value, lo, hi)
        else:
            _check_int(name, value, lo, hi)


@dataclass(frozen=True)
class CostSettings:
    """``analysis cost``: layer sizes I = O, batch sizes, grid sizes, spline order."""

    sizes: tuple[int, ...]
    batches: tuple[int, ...]
    grids: tuple[int, ...]
    spline_order: int = 3
    threads: int = 1

    def __post_init__(self) -> None:
        _check_ranges(self, {**COMMON_RANGES, **COST_RANGES})


@dataclass(frozen=True)
class MemorySettings:
    """``analysis memory``: systems, hidden widths, models, device, dtype, trajectories."""

    systems: tuple[str, ...]
    hidden: tuple[int, ...]
    models: tuple[str, ...]
    device: str = "cpu"
    dtype: str = "float64"
    n_traj: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        import systems

        _check_ranges(self, {**COMMON_RANGES, **MEMORY_RANGES})
        if not self.systems or len(self.systems) > MAX_LIST:
            raise ConfigError(f"--systems takes 1 to {MAX_LIST} names, got {len(self.systems)}")
        for name in self.systems:
            try:
                systems.get(name)
            except (KeyError, ValueError):
                raise ConfigError(f"unknown system {name[:40]!r}; choose one of "
                                  f"{', '.join(systems.names())}") from None
        if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", self.device):
            raise ConfigError(f"--device must be 'cpu', 'cuda' or 'cuda:N', got {self.device[:40]!r}")


@dataclass(frozen=True)
class HessianSettings:
    """``analysis hessian``: the method and its sizes (see :func:`kanode.analysis.run_hessian`)."""

    method: str = "exact"
    k: int = 20
    probes: int = 200
    slq_probes: int = 0
    slq_steps: int = 80
    chunk: int = 256
    resume: bool = False
    threads: int = 1

    def __post_init__(self) -> None:
        from kanode.analysis.hessian_run import METHODS

        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method[:40]!r}")
        _check_ranges(self, {**COMMON_RANGES, **HESSIAN_RANGES})


HUTCHINSON_CHUNK = 100  # probes per batched HVP pass (kanode.analysis.hessian.hutchinson_trace)


def hessian_memory_bytes(n: int, settings: HessianSettings) -> int:
    """Bytes of the float64 arrays the Hessian of ``n`` parameters needs, at their peak.

    exact: the identity, the Hessian and its symmetrised copy (3 n²) and one
    chunk of tangents in and out (2 · chunk · n); lanczos: ARPACK's Krylov
    basis (ncv = max(2k + 1, 20) vectors of n) and Hutchinson's probes in and
    out (2 · 100 · n); SLQ adds its basis of ``slq_steps`` vectors. The
    autograd graph of the HVP comes on top (it grows with the run's solve,
    not with these settings).
    """
    if settings.method == "exact":
        elements = 3 * n * n + 2 * min(settings.chunk, n) * n
    else:
        ncv = min(n, max(2 * settings.k + 1, 20))
        elements = ncv * n + 2 * min(HUTCHINSON_CHUNK, settings.probes) * n
    if settings.slq_probes:
        elements += min(settings.slq_steps, n) * n
    return 8 * elements


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else None (no check)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_hessian_memory(run: os.PathLike | str, n: int, settings: HessianSettings,
                         available: int | None = None) -> None:
    """ConfigError (one line) when :func:`hessian_memory_bytes` exceeds half of the
    memory available (``available`` bytes; default: :func:`available_memory_bytes`)."""
    available = available_memory_bytes() if available is None else available
    need = hessian_memory_bytes(n, settings)
    if available is not None and need > available / 2:
        gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
        hint = ("use --method lanczos" if settings.method == "exact"
                else "lower --k, --probes or --slq-steps, or analyse a smaller model")
        raise ConfigError(f"{run}: the {settings.method} Hessian of {n} parameters needs at least "
                          f"{gib(need)} of arrays, more than half of the {gib(available)} available; "
                          f"{hint}")
