"""Command line: ``python -m systems list | simulate NAME | plot NAME``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from ._registry import UnknownSystemError, get, names
from .simulate import IntegrationError, simulate

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
    simulate_cmd.add_argument("--out", help="output file (default NAME.npz)")
    plot_cmd = commands.add_parser("plot", help="plot states and phase portrait to a PNG")
    plot_cmd.add_argument("name")
    plot_cmd.add_argument("--out", help="output image (default NAME.png)")
    return parser


def _output(out: str | None, default: Path, suffixes: tuple[str, ...]) -> Path:
    """The --out path, checked: not empty, ending in one of ``suffixes``."""
    if out is None:
        return default
    if not out.strip():
        raise ValueError(f"--out is empty; give a file name ending in {' or '.join(suffixes)}")
    if Path(out).suffix.lower() not in suffixes:
        raise ValueError(f"--out must end in {' or '.join(suffixes)}, got {out!r}")
    return Path(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for bad input, 1 if integration fails)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name in names():
                system = get(name)
                print(f"{name:<22} dim={system.dim:<3} {system.description}")
            return 0
        system = get(args.name)
        if args.command == "simulate":
            out = _output(args.out, Path(f"{args.name}.npz"), (".npz", ".csv"))
            path = simulate(system).save(out)
            print(f"wrote {path}")
            return 0
        if args.command == "plot":
            out = _output(args.out, Path(f"{args.name}.png"), (".png",))
            import matplotlib

            matplotlib.use("Agg")
            from .plot import plot_trajectories

            plot_trajectories(simulate(system), system.phase_pairs).savefig(out, dpi=120)
            print(f"wrote {out}")
            return 0
        raise AssertionError(f"unhandled command {args.command!r}")
    except (UnknownSystemError, ValueError, OSError) as error:
        print(f"systems: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except IntegrationError as error:
        print(f"systems: error: {_one_line(error)}", file=sys.stderr)
        return 1


def _one_line(error: Exception) -> str:
    """The error's message on one line (``OSError``: its reason and the file name)."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split()) if len(text.splitlines()) > 1 else text.strip()


if __name__ == "__main__":
    sys.exit(main())
