"""``pyrogen compare``: its arguments and its entry point."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from pyrogen.compare.config import DATASETS, DEFAULT_OBJECTIVES, CompareConfig
from pyrogen.compare.run import run
from pyrogen.models import ARCHITECTURES, LIKELIHOODS

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``pyrogen compare``'s options (one per :class:`CompareConfig` field)."""
    d = CompareConfig()
    parser.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    parser.add_argument(
        "--data-dir", default=None, help="folder with the MNIST IDX files (or set PYROGEN_DATA)"
    )
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=list(DEFAULT_OBJECTIVES),
        metavar="NAME",
        help="elbo, iwae[:K], renyi:ALPHA[:K], vrmax[:K] (default: %(default)s)",
    )
    parser.add_argument("--architecture", choices=ARCHITECTURES, default=d.architecture)
    parser.add_argument("--likelihood", choices=LIKELIHOODS, default=d.likelihood)
    parser.add_argument("--z-dim", type=int, default=None, help="default 50 (MNIST), 16 (digits)")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--eval-samples", type=int, default=d.eval_samples, help="K of the final test score"
    )
    parser.add_argument("--curve-samples", type=int, default=d.curve_samples)
    parser.add_argument("--curve-points", type=int, default=d.curve_points)
    parser.add_argument("--out", default=d.out, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoints in --out"
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bars (the table and the files written are still printed)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the comparison; 2 on a bad setting, 130 after Ctrl-C (the checkpoints kept)."""
    names = {f.name for f in fields(CompareConfig)}
    config = CompareConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        run(config)
    except (ValueError, FileNotFoundError) as exc:
        message = str(exc)
        if isinstance(exc, FileNotFoundError) and config.dataset == "mnist":
            message += "\nOn the command line: pyrogen compare --data-dir <that directory>."
        print(f"pyrogen compare: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\npyrogen compare: interrupted; checkpoints are in "
            f"{Path(config.out) / 'checkpoints'}: run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    return 0
