"""``python -m kanode.analysis {cost,memory,hessian} ... --out DIR``.

* ``cost``: ``cost.csv`` (parameters, Eq. 1 and measured saved elements of
  one layer), ``cost_heatmap_G*.png``, ``saved_vs_grid.png``, ``cost_summary.json``.
* ``memory``: ``step_memory.csv`` and ``step_memory.png`` (peak memory of
  one training step vs hidden width; KAN, dense KAN, MLP; direct, adjoint).
* ``hessian RUN_DIR...``: per run ``NAME/hessian.npz``, ``NAME/row.json`` and ``NAME/spectrum.png``;
  for all runs ``hessian_table.csv``/``.md`` and ``spectra.png``.

Bad input exits with status 2 and one line ``kanode: error: ...``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from kanode.cli_args import OneLineParser
from kanode.config import ConfigError
from kanode.outdirs import check_out_dir

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2


def build_parser() -> OneLineParser:
    from kanode.analysis.cost import BATCHES, GRIDS, SIZES
    from kanode.analysis.hessian_run import METHODS
    from kanode.analysis.step_memory import MODELS

    parser = OneLineParser(prog="python -m kanode.analysis", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    cost = sub.add_parser("cost", help="layer parameters, Eq. 1 and measured saved-for-backward elements")
    cost.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="I = O values")
    cost.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    cost.add_argument("--grids", type=int, nargs="+", default=list(GRIDS))
    cost.add_argument("--spline-order", type=int, default=3)
    memory = sub.add_parser("memory", help="peak memory of one neural-ODE training step vs hidden width")
    memory.add_argument("--systems", nargs="+", default=["lotka_volterra", "pleiades"])
    memory.add_argument("--hidden", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    memory.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    memory.add_argument("--device", default="cpu", help="cpu (torch profiler) or cuda (max_memory_allocated)")
    memory.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    memory.add_argument("--n-traj", type=int, default=1, help="trajectories (ODE batch) per step")
    hessian = sub.add_parser("hessian", help="Hessian spectra of runs' training losses")
    hessian.add_argument("runs", nargs="+", help="run directories or sweep directories holding runs")
    hessian.add_argument("--method", choices=METHODS, default="exact",
                         help="exact: full spectrum (n <= 5000); lanczos: k largest and smallest")
    hessian.add_argument("--k", type=int, default=20, help="eigenvalues at each end for lanczos")
    hessian.add_argument("--probes", type=int, default=200, help="Hutchinson probes (lanczos)")
    hessian.add_argument("--slq-probes", type=int, default=0, help="SLQ density probes (0: none)")
    hessian.add_argument("--slq-steps", type=int, default=80)
    hessian.add_argument("--chunk", type=int, default=256, help="tangents per batched HVP pass (exact)")
    hessian.add_argument("--resume", action="store_true",
                         help="reuse OUT/NAME/row.json + hessian.npz of runs already analysed")
    for p in (cost, memory, hessian):
        p.add_argument("--out", required=True, help="directory to write the results to")
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads (default 1: these are many small ops, where more threads "
                            "only contend; 0 keeps torch's default)")
    return parser


def _write_csv(rows: Sequence[dict], columns: Sequence[str], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def _cost(args, out: Path) -> None:
    from kanode.analysis.cost import COST_COLUMNS, cost_summary, cost_table
    from kanode.plots.analysis import cost_heatmaps, saved_vs_grid

    rows = []
    for row in cost_table(args.sizes, args.batches, args.grids, args.spline_order):
        rows.append(row)
        print(",".join(str(row[c]) for c in COST_COLUMNS), flush=True)
    _write_csv(rows, COST_COLUMNS, out / "cost.csv")
    for grid in sorted({5 if 5 in args.grids else min(args.grids), max(args.grids)}):
        cost_heatmaps(rows, grid).savefig(out / f"cost_heatmap_G{grid}.png", dpi=130)
    saved_vs_grid(rows, max(args.batches)).savefig(out / "saved_vs_grid.png", dpi=130)
    summary = cost_summary(rows)
    (out / "cost_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def _memory(args, out: Path) -> None:
    from kanode.analysis.step_memory import MEMORY_COLUMNS, step_memory_table
    from kanode.plots.analysis import memory_vs_width

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    rows = []
    for row in step_memory_table(args.systems, args.hidden, args.models, device=args.device,
                                 dtype=args.dtype, n_traj=args.n_traj):
        rows.append(row)
        print(",".join(str(row[c]) for c in MEMORY_COLUMNS), flush=True)
    _write_csv(rows, MEMORY_COLUMNS, out / "step_memory.csv")
    memory_vs_width(rows).savefig(out / "step_memory.png", dpi=130)


def _hessian(args, out: Path) -> None:
    from kanode.analysis.hessian_run import check_exact_size, find_runs, run_hessian, run_meta
    from kanode.analysis.resume_files import read_analysed
    from kanode.analysis.settings import check_hessian_memory
    from kanode.analysis.spectra import write_table
    from kanode.plots.analysis import hessian_spectrum, spectra_comparison

    settings = args.settings
    runs = find_runs(args.runs)
    done = {name: read_analysed(out / name) for _, name in runs if settings.resume}
    done = {name: found for name, found in done.items() if found is not None}
    for run_dir, name in runs:  # every run's size and files are checked before the first is analysed
        if name not in done:
            run_meta(run_dir)
            n = run_parameter_count(run_dir)
            check_exact_size(run_dir, n, settings.method)
            check_hessian_memory(run_dir, n, settings)
    results, spectra = [], {}
    for run_dir, name in runs:
        if name in done:
            row, eigenvalues = done[name]
        else:
            result = run_hessian(run_dir, settings.method, k=settings.k, probes=settings.probes,
                                 slq_probes=settings.slq_probes, slq_steps=settings.slq_steps,
                                 chunk=settings.chunk, name=name)
            result.save(out / name / "hessian.npz")
            slq = None if result.slq_nodes is None else (result.slq_nodes, result.slq_weights)
            title = f"{name}: {result.method}, n = {result.n_params}"
            hessian_spectrum(result.eigenvalues, title, slq=slq).savefig(out / name / "spectrum.png", dpi=120)
            row, eigenvalues = result.row(), result.eigenvalues
            (out / name / "row.json").write_text(json.dumps(row, indent=2) + "\n")
        results.append(row)
        system, model = str(row.get("system", name)), str(row.get("model", "?"))
        spectra.setdefault(system, {}).setdefault(model, []).append(eigenvalues)
        print(f"{name}: n={row['n_params']} {row['method']} λ_max={row['lambda_max']:.4g} "
              f"λ_min={row['lambda_min']:.4g} trace={row['trace']:.4g} in {row['time_s']:.1f} s", flush=True)
    write_table(results, out)
    spectra_comparison(spectra).savefig(out / "spectra.png", dpi=120)


def run_parameter_count(run_dir: Path) -> int:
    """The parameter count of a run's vector field, from its config and data dimension
    (no model is built)."""
    import systems

    from kanode.config import estimate_params
    from kanode.runs import RunDir

    config = RunDir(run_dir).load_config()
    if config.data:
        from kanode.data import load_data
        dim = load_data(config).dim
    else:
        dim = systems.get(config.system).dim
    largest_grid = max([config.grid_size, *(int(size) for _, size in config.grid_extend)])
    return estimate_params(config.replace(grid_size=largest_grid), dim)


def settings_from_args(args):
    """The subcommand's settings dataclass (validated on construction; ConfigError)."""
    from kanode.analysis.settings import CostSettings, HessianSettings, MemorySettings

    if args.command == "cost":
        return CostSettings(tuple(args.sizes), tuple(args.batches), tuple(args.grids), args.spline_order,
                            args.threads)
    if args.command == "memory":
        return MemorySettings(tuple(args.systems), tuple(args.hidden), tuple(args.models), args.device,
                              args.dtype, args.n_traj, args.threads)
    return HessianSettings(args.method, args.k, args.probes, args.slq_probes, args.slq_steps, args.chunk,
                           args.resume, args.threads)


COMMANDS = {"cost": _cost, "memory": _memory, "hessian": _hessian}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        args.settings = settings_from_args(args)  # every option checked before any work
        check_out_dir(args.out, "results")
        if args.threads:
            torch.set_num_threads(args.threads)
        out.mkdir(parents=True, exist_ok=True)
        COMMANDS[args.command](args, out)
    except ConfigError as exc:
        print(f"kanode: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (MemoryError, RuntimeError) as exc:  # torch's CPU allocator raises RuntimeError
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
            raise
        print(f"kanode: error: out of memory ({' '.join(str(exc).split())[:120]}); analyse a smaller "
              "model or lower --chunk, --k or --probes", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        torch.set_num_threads(threads)  # main() may be called in-process (tests, notebooks)
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0
