"""The ``pyrogen`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pyrogen import __version__, compare
from pyrogen.compare import cli as compare_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyrogen",
        description=(
            "Train and compare Pyro generative models under objectives beyond the ELBO: "
            "Rényi bounds, IWAE, VR-max (more to come)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"pyrogen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    compare_parser = commands.add_parser(
        "compare",
        help="fit one problem (a VAE, or a posterior) by several objectives; table, figures",
        description=compare.__doc__.split("\n\n")[0] if compare.__doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    compare_cli.add_arguments(compare_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "compare":
        return compare_cli.main(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it
    return 2


if __name__ == "__main__":
    sys.exit(main())
