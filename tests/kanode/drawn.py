"""What a figure draws, for tests that check the picture rather than a file size.

``record_figures(monkeypatch)`` makes every ``Figure.savefig`` also keep the
figure under its file name, so a test can assert its axes, labels, lines and
the data of each line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure

__all__ = ["record_figures", "panels"]


def record_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """{file name: Figure} of every figure saved from now on (the file is still written)."""
    saved: dict[str, Figure] = {}
    original = Figure.savefig

    def savefig(self: Figure, fname, *args, **kwargs):
        saved[Path(fname).name] = self
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def panels(fig: Figure) -> list:
    """The figure's plotting axes (colorbars left out)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_visible()]
