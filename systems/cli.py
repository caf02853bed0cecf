"""Command line: ``python -m systems list | simulate NAME | plot NAME``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from ._registry import get, names
from .simulate import simulate

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Report errors as one line ``systems: error: ...`` and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"systems: error: {message}\n")


def _build_parser() -> _Parser:
    parser = _Parser(prog="systems", description="Dynamical systems: list, simulate, plot.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("list", help="print the systems with their dimension and equations")
    simulate_cmd = commands.add_parser("simulate", help="integrate and write .npz or .csv")
    simulate_cmd.add_argument("name")
    simulate_cmd.add_argument("--out", type=Path, help="output file (default NAME.npz)")
    plot_cmd = commands.add_parser("plot", help="plot states and phase portrait to a PNG")
    plot_cmd.add_argument("name")
    plot_cmd.add_argument("--out", type=Path, help="output image (default NAME.png)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for bad input)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name in names():
                system = get(name)
                print(f"{name:<16} dim={system.dim:<3} {system.description}")
            return 0
        system = get(args.name)
        if args.command == "simulate":
            out = args.out or Path(f"{args.name}.npz")
            if out.suffix.lower() not in (".npz", ".csv"):
                raise ValueError(f"--out must end in .npz or .csv, got {str(out)!r}")
            path = simulate(system).save(out)
            print(f"wrote {path}")
            return 0
        if args.command == "plot":
            out = args.out or Path(f"{args.name}.png")
            if out.suffix.lower() != ".png":
                raise ValueError(f"--out must end in .png, got {str(out)!r}")
            import matplotlib

            matplotlib.use("Agg")
            from .plot import plot_trajectories

            plot_trajectories(simulate(system), system.phase_pairs).savefig(out, dpi=120)
            print(f"wrote {out}")
            return 0
        raise AssertionError(f"unhandled command {args.command!r}")
    except (KeyError, ValueError, TypeError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"systems: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
