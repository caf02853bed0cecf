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

from kanode.config import ConfigError, FitConfig, check_widths_for, estimate_params, read_toml
from kanode.config import widths_for


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
        name = _check_name(values.get("name", Path(source).stem), "name", source)
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
        checked_models = {_check_name(label, "model label", source):
                          _fit_table(t, f"[models.{label}]", source, extra=("hidden",))
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
                if "hidden" in model_values:
                    values.pop("widths", None)  # the model's width rule beats base widths
                values.update(model_values)
                values.update(variant)
                values.update(smoke_overrides)
                if "widths" in variant or "widths" in smoke_overrides:
                    values.pop("hidden", None)  # later layers win
                values = _apply_hidden(values, dim, label)
                full_label = f"{label}[{tag}]" if tag else label
                for seed in seeds:
                    source = f"sweep cell {system}/{full_label}/seed{seed}"
                    config = FitConfig.from_dict({**values, "system": system, "seed": seed},
                                                 source=source)
                    try:
                        check_widths_for(config, dim)
                    except ConfigError as exc:
                        raise SweepError(f"{source}: {exc} of {system}") from None
                    key = f"{system}/{_safe(full_label)}/seed{seed}"
                    specs.append(RunSpec(key=key, system=system, label=full_label,
                                         seed=seed, config=config))
    _check_distinct(specs)
    return specs


def _check_distinct(specs: list[RunSpec]) -> None:
    """Refuse cells whose run directories coincide (compared case-insensitively, as on
    macOS and Windows) or whose directory name is longer than a file system allows."""
    seen: dict[str, RunSpec] = {}
    for spec in specs:
        part = spec.key.split("/")[1]
        if len(part.encode()) > _MAX_DIR_NAME:
            raise SweepError(f"sweep cell {spec.system}/{spec.label}/seed{spec.seed}: its run "
                             f"directory name is {len(part.encode())} bytes long (at most "
                             f"{_MAX_DIR_NAME}); use a shorter label or fewer [grid] keys")
        other = seen.setdefault(spec.key.casefold(), spec)
        if other is not spec:
            raise SweepError(f"sweep cells {other.system}/{other.label}/seed{other.seed} and "
                             f"{spec.system}/{spec.label}/seed{spec.seed} map to the same run "
                             f"directory {spec.key}; make the model labels and grid values "
                             "distinct")


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
    """Turn the ``hidden`` rule into ``widths = [dim (+1 with time_input), *hidden, dim]``
    (applied to a cell's merged values, so ``time_input`` from any layer counts)."""
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
    time_input = values.get("time_input", False)
    values["widths"] = widths_for(dim, hidden, time_input is True)
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


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MAX_NAME = 100
_MAX_DIR_NAME = 200


def _check_name(value: Any, what: str, source: str) -> str:
    """A sweep name or model label: it becomes a directory name, so it must be one
    plain path component (letters, digits, ``_ . -``; starting with a letter or digit)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > _MAX_NAME:
        shown = repr(value)[:60]
        hint = (" (set name = \"...\" in the file)" if what == "name" else "")
        raise SweepError(f"{source}: {what} {shown} is not a plain name: use letters, digits, "
                         f"'_', '.' and '-' (at most {_MAX_NAME}), starting with a letter or "
                         f"digit{hint}")
    return value


def _safe(label: str) -> str:
    """A directory name for a label: keep ``[A-Za-z0-9._=+-]``, others become ``_``."""
    return re.sub(r"[^A-Za-z0-9._=+,-]", "_", label)
