"""Two runs of the KAN-vs-MLP study side by side: the verdict, the LV slopes and the reference.

Reads two results folders of ``experiments/study.py`` (``verdict.csv``,
``slopes.json``, ``lv_references.json``) and writes one markdown table per
loss (train, test, extrapolation: medians, [min, max], KAN wins, Mann–Whitney p;
chosen learning rates), the slopes and the reference runs, before and after.

    python experiments/study_compare.py BEFORE AFTER [--labels "fixed budget" "plateau"] [--out FILE]

Used for the README: ``BEFORE`` = ``experiments/results/study/fixed_budget_2026-12-01``
(the fixed-step-budget run, kept as it was committed), ``AFTER`` =
``experiments/results/study`` (trained to a plateau).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

LOSSES = (("train", "training MSE"), ("test", "test MSE (new initial conditions)"),
          ("extrap", "extrapolation MSE (later times)"))
NAMES = {"lotka_volterra": "Lotka–Volterra", "fitzhugh_nagumo": "FitzHugh–Nagumo", "pleiades": "Pleiades",
         "rigid_body": "rigid body", "spiral": "spiral"}


def read_verdict(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(system, budget) → the verdict.csv row of ``folder``."""
    with (folder / "verdict.csv").open(newline="") as fh:
        return {(r["system"], r["budget"]): r for r in csv.DictReader(fh)}


def _num(row: dict[str, Any], key: str) -> float:
    value = row.get(key, "")
    return float(value) if value not in ("", None) else math.nan


def cell(row: dict[str, Any] | None, loss: str) -> str:
    """'KAN med [min, max] · MLP med [min, max] · wins k/n, p' of one verdict row and loss."""
    if row is None:
        return "not reported"
    parts = []
    for family in ("kan", "mlp"):
        med, low, high = (_num(row, f"{family}_{loss}_{s}") for s in ("median", "min", "max"))
        parts.append(f"{med:.2g} [{low:.1g}, {high:.1g}]")
    return (f"{parts[0]} | {parts[1]} | {row[f'kan_wins_{loss}']}/{row['seeds']}, "
            f"{_num(row, f'p_{loss}'):.2g}")


def verdict_tables(before: Path, after: Path, labels: tuple[str, str]) -> list[str]:
    old, new = read_verdict(before), read_verdict(after)
    keys = sorted(set(old) | set(new), key=lambda k: (list(NAMES).index(k[0]) if k[0] in NAMES else 99,
                                                       k[1] != "large"))
    lines = []
    for loss, title in LOSSES:
        lines += [f"**{title}**, median [min, max] over seeds; KAN wins, p:", "",
                  f"| system | budget | KAN ({labels[0]}) | MLP | wins, p | KAN ({labels[1]}) | MLP | wins, p |",
                  "|---|---|---|---|---|---|---|---|"]
        for key in keys:
            row = new.get(key) or old.get(key)
            params = f"{row['kan_params']} / {row['mlp_params']}"
            lines.append(f"| {NAMES.get(key[0], key[0])} | {params} | {cell(old.get(key), loss)} | "
                         f"{cell(new.get(key), loss)} |")
        lines.append("")
    lines += [f"Chosen learning rates KAN / MLP ({labels[0]} → {labels[1]}): " + "; ".join(
        f"{NAMES.get(k[0], k[0])} {k[1]} {_rates(old.get(k))} → {_rates(new.get(k))}" for k in keys), ""]
    return lines


def _rates(row: dict[str, Any] | None) -> str:
    return "–" if row is None else f"{float(row['kan_lr']):g} / {float(row['mlp_lr']):g}"


def slope_lines(before: Path, after: Path, labels: tuple[str, str]) -> list[str]:
    lines = ["Lotka–Volterra log–log slopes of the median training MSE against parameters (± standard error):", "",
             f"| family | {labels[0]} | {labels[1]} |", "|---|---|---|"]
    old, new = _slopes(before), _slopes(after)
    for family in sorted(set(old) | set(new)):
        lines.append(f"| {family} | {_slope(old.get(family))} | {_slope(new.get(family))} |")
    return lines + [""]


def _slopes(folder: Path) -> dict[str, dict[str, float]]:
    """slopes.json's slopes at the end of training (since stage polish the file holds those of the
    L-BFGS plateau under "lbfgs" and the polished ones beside them; these compare the L-BFGS ones)."""
    slopes = json.loads((folder / "slopes.json").read_text())
    return slopes.get("lbfgs", slopes)


def _slope(s: dict[str, float] | None) -> str:
    return "–" if s is None else f"{s['slope']:.2f} ± {s['stderr']:.2f} ({s['points']} sizes)"


def reference_lines(before: Path, after: Path, labels: tuple[str, str]) -> list[str]:
    lines = ["Stage reference (Lotka–Volterra, training MSE, median [min, max] over seeds):", "",
             f"| model | {labels[0]} | {labels[1]} |", "|---|---|---|"]
    old = json.loads((before / "lv_references.json").read_text()).get("reference", {})
    new = json.loads((after / "lv_references.json").read_text()).get("reference", {})
    for label in sorted(set(old) | set(new)):
        lines.append(f"| {label} | {_ref(old.get(label))} | {_ref(new.get(label))} |")
    return lines + [""]


def _ref(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    return f"{r['median']:.2e} [{r['min']:.1e}, {r['max']:.1e}], {r['steps']:.0f} steps"


def compare(before: Path, after: Path, labels: tuple[str, str]) -> str:
    return "\n".join(verdict_tables(before, after, labels) + slope_lines(before, after, labels)
                     + reference_lines(before, after, labels))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--labels", nargs=2, default=("fixed budget", "plateau"))
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here (default: print it)")
    args = parser.parse_args(argv)
    for folder in (args.before, args.after):
        if not (folder / "verdict.csv").is_file():
            parser.error(f"{folder} has no verdict.csv: give two results folders of experiments/study.py")
    text = compare(args.before, args.after, tuple(args.labels))
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
