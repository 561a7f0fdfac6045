"""The ``pyrogen`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pyrogen import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyrogen",
        description=(
            "Train and compare Pyro generative models under objectives beyond the ELBO: "
            "Rényi bounds, IWAE, VR-max (more to come)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"pyrogen {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0  # pragma: no cover - subcommands arrive with later issues


if __name__ == "__main__":
    sys.exit(main())
