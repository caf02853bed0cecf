"""The files of a discovery: formula.json/.tex/.py, summary.json; edges.png and network.png
when the formula came from a KAN."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .export import latex, python_source
from .pipeline import Discovery
from .scores import attribution
from .symbolic_layer import FUNCTION_NAMES, PRUNED, SPLINE

__all__ = ["write_discovery", "write_summary", "json_safe"]


def json_safe(value: Any) -> Any:
    """Non-finite floats → None, numpy scalars/arrays and tuples → plain JSON types."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_summary(summary: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    path.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    return path


def _network_figure(discovery: Discovery):
    from kanode.plots.symbolic import network

    kan = discovery.field.net
    scores = attribution(kan, discovery.samples).attribution
    labels = []
    for layer in kan.layers:
        names = np.full(tuple(layer.mode.shape), "", dtype=object)
        for o, i in (layer.mode != PRUNED).nonzero().tolist():
            names[o, i] = "spline" if int(layer.mode[o, i]) == SPLINE else FUNCTION_NAMES[int(layer.function[o, i])]
        labels.append(names)
    names = list(discovery.formula.state_names)
    return network(kan.widths, [s.numpy() for s in scores], labels, names, [n + "'" for n in names])


def write_discovery(discovery: Discovery, out: str | Path) -> list[Path]:
    """Write every file of the discovery into ``out``; returns their paths."""
    from kanode.plots.symbolic import edge_fits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    formula = discovery.formula
    recipe = discovery.summary.get("recipe", {})
    summary = discovery.summary
    payload = {"state_names": list(formula.state_names), "rhs": formula.as_strings(),
               "digits": recipe.get("digits"), "drop_threshold": recipe.get("drop_threshold"),
               "time": "t", "initial_states": summary.get("initial_states"),
               "trajectory_mse": {"formula_train": summary.get("formula_mse_train"),
                                  "formula_full": summary.get("formula_mse_full"),
                                  "kan_train": summary.get("kan_mse_train"),
                                  "kan_full": summary.get("kan_mse_full")},
               "terms_from": summary.get("terms_from"), "status": summary.get("status")}
    paths = [out / "formula.json", out / "formula.tex", out / "formula.py"]
    paths[0].write_text(json.dumps(json_safe(payload), indent=2) + "\n")
    paths[1].write_text(latex(formula))
    paths[2].write_text(python_source(formula))
    paths.append(write_summary(discovery.summary, out))
    if discovery.field is None:   # the sparse start: no network, no edges to draw
        return paths
    for name, fig in (("edges.png", edge_fits(discovery.plot_edges or [])),
                      ("network.png", _network_figure(discovery))):
        fig.savefig(out / name, dpi=110)
        paths.append(out / name)
    return paths
