"""``python -m kanode.predict``: forecast a trained run past its data.

    python -m kanode.predict RUN_DIR --until T --out F.csv              # from the data's initial states
    python -m kanode.predict RUN_DIR --until T --t0 T0 --y0 V1 V2 --out F.csv   # from a state of your own
    python -m kanode.predict ENSEMBLE_DIR --until T --out F.csv          # median and band across members

Writes F.csv (columns ``traj,t,<state names>``, the format trajectory files
come in; an ensemble adds the band's columns) and F.png (data as markers,
the forecast as a dense line, the band shaded, the training window shaded).
Exit status 2 with one line ``kanode: error: ...`` for bad input; 1 when
every solve failed.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from kanode.cli_args import OneLineParser
from kanode.config import ConfigError
from kanode.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

from . import (CHECKPOINTS, DENSE_POINTS, GAP_REFINE, LoadedEnsemble, LoadedRun, forecast, load_run, solver_gap,
               write_forecast_csv)
from .forecast import Forecast, band_names
from .table import forecast_columns

MAX_POINTS = 1_000_000


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m kanode.predict",
                           description="Forecast a trained run (or an ensemble's members) past its data: "
                                       "a dense CSV and a plot.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (python -m kanode.fit --out) or "
                                                           "an ensemble directory (kanode.fit --seeds)")
    parser.add_argument("--until", type=float, required=True, metavar="T", help="the forecast's last time")
    parser.add_argument("--y0", type=float, nargs="+", metavar="V",
                        help="initial state(s), dim numbers each (default: the data's initial states)")
    parser.add_argument("--t0", type=float, metavar="T0",
                        help="the time of --y0 (default: the data's first time)")
    parser.add_argument("--points", type=int, default=DENSE_POINTS, metavar="N",
                        help=f"equally spaced times from the initial time to T (default: {DENSE_POINTS})")
    parser.add_argument("--band", type=float, default=100.0, metavar="PERCENT",
                        help="an ensemble's band: the central PERCENT of its members (100, the default: "
                             "min-max; 90: the 5%%-95%% quantiles)")
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                        help="last (default: the final model) or best (lowest training loss)")
    parser.add_argument("--out", required=True, metavar="F.csv", help="the CSV to write; the plot goes to F.png")
    return parser


def _check(args) -> None:
    if not args.out.strip() or Path(args.out).suffix.lower() != ".csv":
        raise ConfigError(f"--out must name a .csv file, got {args.out!r}")
    if Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} is a directory; name a .csv file")
    if not 2 <= args.points <= MAX_POINTS:
        raise ConfigError(f"--points must be between 2 and {MAX_POINTS}, got {args.points}")
    if not 0.0 < args.band <= 100.0:
        raise ConfigError(f"--band must be a percentage in (0, 100], got {args.band:g}")
    if args.t0 is not None and args.y0 is None:
        raise ConfigError("--t0 needs --y0 (the state at that time)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check(args)
        run = load_run(args.run_dir, args.checkpoint)
        result = forecast(run, args.until, args.points, args.y0, args.t0)
    except (ConfigError, ValueError) as exc:
        print(f"kanode: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    ensemble = isinstance(run, LoadedEnsemble)
    coverage = args.band / 100.0 if ensemble else None
    n_members = len(run.members)
    if len(result.failed) == n_members:
        print(f"kanode: error: the forecast failed: the solve of {'every member' if ensemble else 'the field'} "
              f"blew up or ran out of solver steps before t = {args.until:g}", file=sys.stderr)
        return EXIT_FAILED
    if result.failed:
        names = ", ".join(Path(result.member_paths[m]).name for m in result.failed)
        print(f"kanode: warning: the solves of {len(result.failed)} of {n_members} members failed ({names}); "
              f"the median and band are over the other {n_members - len(result.failed)}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_forecast_csv(out, result, coverage)
    plot = out.with_suffix(".png")
    _draw(run, result, coverage, plot)
    what = f"{run.config.model} run {run.path}" if not ensemble else \
        f"ensemble {run.path} ({n_members} × {run.config.model})"
    print(f"forecast of {what} from t = {result.t[0]:g} to {result.t[-1]:g} ({args.points} points, "
          f"{result.members.shape[1]} initial state{'s' if result.members.shape[1] > 1 else ''})")
    columns = ",".join(forecast_columns(result.state_names, coverage))
    if ensemble:
        low, high = band_names(coverage)
        band = "min-max" if coverage >= 1.0 else f"{low[1:]}%-{high[1:]}% quantiles"
        print(f"  {out}: {columns} (states: the median of {n_members - len(result.failed)} members; "
              f"_{low}/_{high}: their {band})")
    else:
        print(f"  {out}: {columns}")
    print(f"  {plot}")
    _check_solver(run)
    return EXIT_OK


GAP_WARNING = 1.5  # warn when the ODE's training MSE exceeds the fit's by this factor


def _check_solver(run: LoadedRun | LoadedEnsemble) -> None:
    """Say how far the fit's solver is from the ODE it trained (see :func:`solver_gap`)."""
    from kanode.train import solver_options

    gaps = [solver_gap(m.field, m.data, solver_options(m.config, m.data)) for m in run.members]
    if any(g is None for g in gaps):
        return
    config = run.config
    shown = ", ".join(f"{a:.4g} -> {b:.4g}" for a, b in gaps)
    print(f"  training-window MSE with the run's {config.method} steps -> with {GAP_REFINE}x shorter steps "
          f"(the ODE the forecast solves): {shown}")
    worse = [i for i, (a, b) in enumerate(gaps) if not b <= GAP_WARNING * a]
    if worse:
        print(f"kanode: warning: {len(worse)} of {len(gaps)} fields fit their solver's discretisation error, "
              f"not the ODE (training MSE up to {max(b / a for a, b in gaps):.3g}x larger with shorter steps); "
              "refit with a smaller --step-size", file=sys.stderr)


def _draw(run: LoadedRun | LoadedEnsemble, result: Forecast, coverage: float | None, path: Path) -> None:
    from kanode.plots.forecast import forecast_figure

    data = run.data
    low = high = None
    center_label, band_label = "forecast", ""
    if coverage is not None:
        low, high = result.band(coverage)
        n_ok = len(run.members) - len(result.failed)
        center_label = f"median of {n_ok} members"
        band_label = "members' min-max" if coverage >= 1.0 else f"members' central {100 * coverage:g}%"
    title = f"{run.config.model} forecast, {Path(run.path).name}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib's notes would add stderr lines
        fig = forecast_figure(data.t.numpy(), data.y.numpy(), data.n_train, result.t, result.median(),
                              data.labels, low, high, center_label=center_label, band_label=band_label,
                              title=title)
        fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
