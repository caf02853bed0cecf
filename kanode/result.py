"""What a fit returns (:class:`FitResult`): a leaf module that any caller may import."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import FitConfig
from .data import FitData
from .ode import VectorField

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """What a fit returns: the trained field, its per-step history and summary
    (``summary.json``); for an ensemble, one per member."""

    field: VectorField
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None = None
    data: FitData | None = field(default=None, repr=False)
    config: FitConfig | None = None
