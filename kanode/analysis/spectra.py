"""Sharpness statistics of Hessian spectra and the table over many runs."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["THRESHOLDS", "NEGATIVE_TOL", "spectrum_stats", "TABLE_COLUMNS", "write_table"]

THRESHOLDS = (1e-8, 1e-6, 1e-4)  # positive eigenvalues counted above these × λ_max
NEGATIVE_TOL = 1e-8  # negative eigenvalues counted below −NEGATIVE_TOL × λ_max (rounding floor)
TABLE_COLUMNS = ("run", "system", "model", "seed", "n_params", "method", "final_train_loss",
                 "lambda_max", "lambda_min", "trace", "trace_stderr", "n_pos_1e-8", "n_pos_1e-6",
                 "n_pos_1e-4", "n_negative", "n_eigenvalues", "time_s")


def spectrum_stats(eigenvalues: np.ndarray, trace: float | None = None) -> dict[str, float | int]:
    """λ_max, λ_min, trace (Σλ unless given), the number of eigenvalues above
    ``t · λ_max`` for each ``t`` in :data:`THRESHOLDS`, and the number below
    ``−NEGATIVE_TOL · λ_max`` (exact zeros of a rank-deficient Hessian come
    out as ±1e-16 · λ_max and are not counted as negative).

    eigenvalues: (m,), all n of them (exact) or the extremes Lanczos found
    (then the counts are lower bounds).
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    top = float(values.max())
    scale = abs(top)
    stats: dict[str, float | int] = {"lambda_max": top, "lambda_min": float(values.min()),
                                     "trace": float(values.sum()) if trace is None else float(trace)}
    for t in THRESHOLDS:
        stats[f"n_pos_{t:.0e}".replace("e-0", "e-")] = int(np.sum(values > t * scale))
    stats["n_negative"] = int(np.sum(values < -NEGATIVE_TOL * scale))
    stats["n_eigenvalues"] = int(values.size)
    return stats


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def write_table(rows: Sequence[Mapping[str, Any]], out: Path) -> tuple[Path, Path]:
    """``hessian_table.csv`` (one row per run, :data:`TABLE_COLUMNS`) and
    ``hessian_table.md`` (the same, then KAN vs MLP per system: median over
    seeds [min, max]). Returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "hessian_table.csv", out / "hessian_table.md"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in TABLE_COLUMNS) + " |" for row in rows]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row.get("system")), str(row.get("model"))), []).append(row)
    summary_cols = ("lambda_max", "lambda_min", "trace", "n_pos_1e-6", "n_pos_1e-4", "n_negative")
    lines += ["", "Median over seeds [min, max]:", "",
              "| system | model | runs | n_params | " + " | ".join(summary_cols) + " |",
              "|" + "---|" * (4 + len(summary_cols))]
    for (system, model), members in sorted(groups.items()):
        cells = []
        for col in summary_cols:
            vals = [float(m[col]) for m in members if m.get(col) is not None]
            cells.append(f"{_fmt(statistics.median(vals))} [{_fmt(min(vals))}, {_fmt(max(vals))}]"
                         if vals else "")
        lines.append(f"| {system} | {model} | {len(members)} | {members[0].get('n_params')} | "
                     + " | ".join(cells) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path
