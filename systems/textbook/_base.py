"""Base class of the textbook systems: a :class:`~systems.System` that states its own law."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..base import System

__all__ = ["TextbookSystem"]


@dataclass(frozen=True)
class TextbookSystem(System):
    """A system of the discovery benchmark.

    Besides what every :class:`~systems.System` sets, a subclass sets the class
    attributes ``test_state`` (a second initial state, never used for
    training: the generalisation check) and ``source`` (where the model is
    from), and :meth:`equations` states the law as text, so that a
    discovered formula can be scored term by term.
    """

    test_state: ClassVar[tuple[float, ...]]
    source: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        states, test = getattr(cls, "state_names", None), getattr(cls, "test_state", None)
        if states is not None and test is not None and len(test) != len(states):
            raise ValueError(f"{cls.__name__}: test_state has {len(test)} values "
                             f"but state_names has {len(states)}")

    @property
    def y0_test(self) -> np.ndarray:
        """The second initial state, shape ``(dim,)`` (a fresh float64 copy)."""
        return np.array(self.test_state, dtype=np.float64)

    @abc.abstractmethod
    def equations(self) -> tuple[str, ...]:
        """``f_k`` as one string per state, in :attr:`state_names`, with the parameters' values.

        Each string is an expression that ``sympy.parse_expr`` reads (``**``
        for powers, ``sin``, ``cos``, ``exp``, ``log``) and evaluates to
        ``rhs(t, y)[..., k]``; systems itself never imports sympy.
        """


def number(value: float) -> str:
    """``value`` as text that reads back exactly (``repr``), in parentheses when negative."""
    text = repr(float(value))
    return f"({text})" if text.startswith("-") else text
