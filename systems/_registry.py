"""Name -> System class table: :func:`register`, :func:`get`, :func:`names`."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from .base import System

__all__ = ["UnknownSystemError", "get", "names", "register"]

_REGISTRY: dict[str, type[System]] = {}

SystemType = TypeVar("SystemType", bound=type[System])


class UnknownSystemError(KeyError, ValueError):
    """No system of that name; catchable as ``KeyError`` or ``ValueError``."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


def register(cls: SystemType) -> SystemType:
    """Add a :class:`System` subclass to the registry under ``cls.name``.

    Usable as a decorator. Registering the same name twice replaces the
    earlier class (handy when re-running a notebook cell).
    """
    if not (isinstance(cls, type) and issubclass(cls, System)):
        raise TypeError(f"register() expects a subclass of systems.System, got {cls!r}")
    missing = [a for a in ("name", "state_names", "initial_state", "t_span", "n_t")
               if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"{cls.__name__} must set the class attributes {missing}")
    if len(cls.initial_state) != len(cls.state_names):
        raise ValueError(f"{cls.__name__}: initial_state has {len(cls.initial_state)} values "
                         f"but state_names has {len(cls.state_names)}")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Registered system names, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **overrides: Any) -> System:
    """Instantiate the system ``name``, overriding parameters by keyword.

    >>> import systems
    >>> systems.get("lotka_volterra", alpha=2.0).alpha
    2.0
    """
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownSystemError(
            f"unknown system {name!r}; valid names: {', '.join(names())}") from None
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(f"{name} has no parameter(s) {unknown}; valid parameters: "
                        f"{', '.join(fields) if fields else '(none)'}")
    return cls(**overrides)
