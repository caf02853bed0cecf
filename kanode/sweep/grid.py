"""Sweep configuration (TOML) and its expansion into one :class:`RunSpec` per run.

A sweep is the grid ``systems × models × grid variants × seeds``; every cell is
one complete :class:`~kanode.config.FitConfig`. The TOML format::

    name = "figure2"                     # default output: runs/figure2
    systems = ["lotka_volterra", "spiral"]
    seeds = [0, 1, 2]

    [base]                               # FitConfig fields shared by all runs
    optimizer = "adam+lbfgs"
    steps = 500

    [per_system.spiral]                  # FitConfig fields for one system
    rtol = 1e-6

    [models.kan]                         # label -> FitConfig fields
    model = "kan"
    grid_size = 5
    hidden = [10]                        # widths = [dim, *hidden, dim]
    [models.mlp]
    model = "mlp"
    hidden = { default = [80], rigid_body = [68] }   # a value may be per system

    [grid]                               # optional: cartesian product of values
    lr = [1e-2, 3e-3]

    [smoke]                              # applied last with --smoke
    seeds = [0]                          # (default: the first seed)
    steps = 5

Inside a model table any value may be a table keyed by system name (and
``default``), resolved per system; ``hidden`` is a width rule and ``widths``
an explicit list. Later layers win: ``base`` < ``per_system`` < ``models`` <
``grid`` < ``smoke``. ``system`` and ``seed`` are set by the grid itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kanode.config import ConfigError, FitConfig, read_toml


__all__ = ["SweepConfig", "SweepError", "RunSpec", "load_sweep", "expand", "estimate_params"]

_TOP_KEYS = {"name", "systems", "seeds", "base", "per_system", "models", "grid", "smoke"}
_GRID_OWNED = ("system", "seed")  # set by the grid, not by any table
_FIT_FIELDS = frozenset(f.name for f in dataclasses.fields(FitConfig))


class SweepError(ConfigError):
    """A sweep configuration or sweep directory is unusable; the message says why."""


@dataclass(frozen=True)
class SweepConfig:
    """A parsed sweep: see the module docstring for the TOML layout."""

    name: str
    systems: tuple[str, ...]
    seeds: tuple[int, ...]
    models: dict[str, dict[str, Any]]
    base: dict[str, Any] = field(default_factory=dict)
    per_system: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "sweep") -> "SweepConfig":
        """Validate a mapping (as read from TOML) and build the sweep."""
        unknown = sorted(set(values) - _TOP_KEYS)
        if unknown:
            raise SweepError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; "
                             f"valid keys are {', '.join(sorted(_TOP_KEYS))}")
        name = values.get("name", Path(source).stem)
        systems_ = _str_list(values.get("systems"), "systems", source)
        seeds = _int_list(values.get("seeds", [0]), "seeds", source)
        models = _table(values.get("models"), "models", source)
        if not models:
            raise SweepError(f"{source}: [models] must define at least one model, "
                             "e.g. [models.kan] model = \"kan\"")
        base = _fit_table(values.get("base", {}), "[base]", source)
        per_system_tables = _table(values.get("per_system", {}), "per_system", source)
        per_system = {s: _fit_table(t, f"[per_system.{s}]", source)
                      for s, t in per_system_tables.items()}
        for system in per_system:
            if system not in systems_:
                raise SweepError(f"{source}: [per_system.{system}] names a system that is not "
                                 f"in systems = {list(systems_)}")
        checked_models = {label: _fit_table(t, f"[models.{label}]", source, extra=("hidden",))
                          for label, t in models.items()}
        grid = _fit_table(values.get("grid", {}), "[grid]", source)
        for key, options in grid.items():
            if not isinstance(options, list) or not options:
                raise SweepError(f"{source}: [grid] {key} must be a non-empty list of values")
        smoke = _fit_table(values.get("smoke", {}), "[smoke]", source, extra=("seeds",))
        if "seeds" in smoke:
            smoke["seeds"] = list(_int_list(smoke["seeds"], "[smoke] seeds", source))
        return cls(name=str(name), systems=systems_, seeds=seeds, models=checked_models,
                   base=base, per_system=per_system, grid=grid, smoke=smoke)


@dataclass(frozen=True)
class RunSpec:
    """One cell of the sweep: where it runs and with which configuration.

    ``key`` is the run directory relative to the sweep directory,
    ``<system>/<label>/seed<seed>``.
    """

    key: str
    system: str
    label: str
    seed: int
    config: FitConfig


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep TOML file."""
    values = read_toml(path, what="sweep config", error=SweepError)
    return SweepConfig.from_dict(values, source=str(path))


def expand(sweep: SweepConfig, smoke: bool = False) -> list[RunSpec]:
    """All runs of the sweep, in the order system, model, variant, seed.

    Every cell is validated as a :class:`FitConfig` here, so a typo stops the
    sweep before any run starts.
    """
    seeds = sweep.seeds
    if smoke:
        seeds = tuple(sweep.smoke.get("seeds", sweep.seeds[:1]))
    smoke_overrides = {k: v for k, v in sweep.smoke.items() if k != "seeds"} if smoke else {}
    variants = _variants(sweep.grid)
    specs: list[RunSpec] = []
    for system in sweep.systems:
        dim = _system_dim(system)
        for label, model_table in sweep.models.items():
            model_values = _resolve_per_system(model_table, system, label)
            for tag, variant in variants:
                values: dict[str, Any] = {**sweep.base, **sweep.per_system.get(system, {})}
                values.update(_apply_hidden(model_values, dim, label))
                values.update(variant)
                values.update(smoke_overrides)
                full_label = f"{label}[{tag}]" if tag else label
                for seed in seeds:
                    source = f"sweep cell {system}/{full_label}/seed{seed}"
                    config = FitConfig.from_dict({**values, "system": system, "seed": seed},
                                                 source=source)
                    if config.widths and (config.widths[0] != dim or config.widths[-1] != dim):
                        raise SweepError(f"{source}: widths {config.widths} must start and end "
                                         f"with the state dimension {dim} of {system}")
                    key = f"{system}/{_safe(full_label)}/seed{seed}"
                    specs.append(RunSpec(key=key, system=system, label=full_label,
                                         seed=seed, config=config))
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise SweepError("two sweep cells map to the same run directory; make the model "
                         "labels and grid values distinct")
    return specs


def estimate_params(config: FitConfig, dim: int) -> int | None:
    """Parameter count of the vector field from the DESIGN formulas.

    KAN layer: ``in·out·(G + k + 2)``; linear layer: ``out·(in + 1)``. Empty
    ``widths`` means the fit's default (``[dim, 10, dim]`` KAN, ``[dim, 50, dim]``
    MLP). ``None`` for model families without a formula here (``rswaf``).
    """
    if config.model == "kan":
        widths = config.widths or [dim, 10, dim]
        per_edge = config.grid_size + config.spline_order + 2
        return sum(a * b * per_edge for a, b in zip(widths[:-1], widths[1:]))
    if config.model == "mlp":
        widths = config.widths or [dim, 50, dim]
        return sum(b * (a + 1) for a, b in zip(widths[:-1], widths[1:]))
    return None


# ---------------------------------------------------------------- helpers
def _variants(grid: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``[(tag, overrides)]`` for the cartesian product of ``[grid]`` (``[("", {})]`` if empty)."""
    if not grid:
        return [("", {})]
    names = list(grid)
    out = []
    for combo in itertools.product(*(grid[n] for n in names)):
        tag = ",".join(f"{n}={_short(v)}" for n, v in zip(names, combo))
        out.append((tag, dict(zip(names, combo))))
    return out


def _resolve_per_system(table: dict[str, Any], system: str, label: str) -> dict[str, Any]:
    """Replace every ``{system: value, default: value}`` entry by its value for ``system``."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(_known_systems()) - {"default"})
            if unknown:
                raise SweepError(f"[models.{label}] {key} names unknown system(s) "
                                 f"{', '.join(unknown)}; keys are system names or 'default'")
            if system in value:
                out[key] = value[system]
            elif "default" in value:
                out[key] = value["default"]
            else:
                raise SweepError(f"[models.{label}] {key} has no entry for {system} and no "
                                 "'default'")
        else:
            out[key] = value
    return out


def _apply_hidden(values: dict[str, Any], dim: int, label: str) -> dict[str, Any]:
    """Turn the ``hidden`` rule into ``widths = [dim, *hidden, dim]``."""
    if "hidden" not in values:
        return values
    values = dict(values)
    hidden = values.pop("hidden")
    if "widths" in values:
        raise SweepError(f"[models.{label}] sets both hidden and widths; use one")
    if (not isinstance(hidden, list) or not hidden
            or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden)):
        raise SweepError(f"[models.{label}] hidden must be a list of positive integers, "
                         f"got {hidden!r}")
    values["widths"] = [dim, *hidden, dim]
    return values


def _known_systems() -> list[str]:
    import systems

    return systems.names()


def _system_dim(name: str) -> int:
    import systems  # numpy-only; imported here so parsing a sweep stays cheap

    try:
        return systems.get(name).dim
    except systems.UnknownSystemError as exc:
        raise SweepError(str(exc)) from None


def _fit_table(table: Any, where: str, source: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    table = _table(table, where, source)
    unknown = sorted(set(table) - _FIT_FIELDS - set(extra))
    if unknown:
        raise SweepError(f"{source}: {where} has unknown key(s) {', '.join(unknown)}; "
                         "keys must be FitConfig fields (see python -m kanode.fit --help)")
    owned = [k for k in _GRID_OWNED if k in table]
    if owned:
        raise SweepError(f"{source}: {where} sets {', '.join(owned)}; use the top-level "
                         "systems = [...] and seeds = [...] instead")
    return table


def _table(value: Any, where: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{source}: {where} must be a table")
    return dict(value)


def _str_list(value: Any, where: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SweepError(f"{source}: {where} must be a non-empty list of names")
    if len(set(value)) != len(value):
        raise SweepError(f"{source}: {where} lists a name twice")
    return tuple(value)


def _int_list(value: Any, where: str, source: str) -> tuple[int, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise SweepError(f"{source}: {where} must be a non-empty list of non-negative integers")
    if len(set(value)) != len(value):
        raise SweepError(f"{source}: {where} lists a seed twice")
    return tuple(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "x".join(_short(v) for v in value)
    return str(value)


def _safe(label: str) -> str:
    """A directory name for a label: keep ``[A-Za-z0-9._=+-]``, others become ``_``."""
    return re.sub(r"[^A-Za-z0-9._=+,-]", "_", label)
