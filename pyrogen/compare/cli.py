"""``pyrogen compare``: its arguments and its entry point."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from pyrogen import distributed as ddp
from pyrogen.compare.config import DATASETS, DEFAULT_OBJECTIVES, CompareConfig
from pyrogen.compare.generative import GENERATIVE_PROBLEMS, GenerativeBudget, run_generative
from pyrogen.compare.posterior import FAMILIES, POSTERIOR_PROBLEMS, PosteriorBudget, run_posterior
from pyrogen.compare.run import run
from pyrogen.compare.tour import run_tour
from pyrogen.models import ARCHITECTURES, LIKELIHOODS

__all__ = ["TOUR", "VAE_PROBLEMS", "add_arguments", "list_text", "main"]

OBJECTIVE_NAMES = {
    "elbo": "the ELBO (RenyiBound alpha = 1)",
    "iwae[:K]": "IWAE with K particles (default 5)",
    "renyi:ALPHA[:K]": "the Rényi bound of order ALPHA",
    "vrmax[:K]": "VR-max (alpha = -inf)",
    "avb": "adversarial variational Bayes: an implicit encoder, a critic for log q "
    "(scored from a Gaussian fitted to its draws)",
    "avb-ac": "AVB with adaptive contrast (the basis encoder, which knows its moments)",
    "sc[:NU[:K]]": "self-contrastive NCE: NU noise draws per image (default 1) from a frozen "
    "copy of the VAE, renewed every 5 epochs; the IWAE-K bound for log p (default K=1)",
}


TOUR = {
    "tour": "the README's main job: digits-vae, grid, rbm-digits and correlated-gaussian, "
    "each at a small budget (about 3 minutes)"
}

VAE_PROBLEMS = {
    "digits-vae": "a VAE on scikit-learn's 8x8 digits under the Rényi family, AVB or "
    "self-contrastive NCE (the default problem)",
    "mnist-vae": "a VAE on dynamically binarized MNIST under the Rényi family, AVB or "
    "self-contrastive NCE (--data-dir)",
}


def list_text() -> str:
    """``pyrogen compare --list``: every problem and family, one line each."""
    lines = ["problems:"]
    lines += [f"  {name:22s} {text}" for name, text in TOUR.items()]
    lines += [f"  {name:22s} {text}" for name, text in VAE_PROBLEMS.items()]
    generative = {name: build() for name, build in GENERATIVE_PROBLEMS.items()}
    lines += [f"  {name:22s} {prob.description}" for name, prob in generative.items()]
    for name, build in POSTERIOR_PROBLEMS.items():
        lines.append(f"  {name:22s} {build().description}")
    lines += ["families of the VAE problems (--objectives):"]
    lines += [f"  {n:22s} {t}" for n, t in OBJECTIVE_NAMES.items()]
    seen: set[tuple[str, ...]] = set()
    for prob in generative.values():
        if tuple(prob.families) in seen:
            continue
        seen.add(tuple(prob.families))
        users = [n for n, p in generative.items() if p.families == prob.families]
        lines += [f"families of {' and '.join(users)} (--families):"]
        lines += [f"  {n:22s} {t}" for n, t in prob.families.items()]
    lines += ["families of the posterior problems (--families):"]
    lines += [f"  {n:22s} {t}" for n, t in FAMILIES.items()]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``pyrogen compare``'s options (one per :class:`CompareConfig` field, and the
    problem, the posterior families and their budget)."""
    d = CompareConfig()
    problems = [*TOUR, *VAE_PROBLEMS, *GENERATIVE_PROBLEMS, *POSTERIOR_PROBLEMS]
    parser.add_argument("--problem", choices=problems, default="digits-vae", help="see --list")
    parser.add_argument("--list", action="store_true", help="list problems and families")
    parser.add_argument(
        "--families",
        nargs="+",
        default=None,
        metavar="NAME",
        help="posterior problems: mean-field, full-rank, renyi:ALPHA, iwae, avb, hmc "
        "(default: all, renyi:ALPHA at 0.5 only); ring, grid, rbm-digits: see --list",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=2000,
        help="ring, grid, rbm-digits: generator (or model) updates per family",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="ring, grid, rbm-digits: also stop each family after this much training",
    )
    parser.add_argument(
        "--gradient-evaluations",
        type=int,
        default=None,
        metavar="N",
        help="ring, grid, rbm-digits: a budget of N updates per family (every role's), in "
        "place of --iterations; posterior problems: N draws of the model's gradient per "
        "guide, in place of --steps (HMC keeps its draws; its evaluations are shown)",
    )
    parser.add_argument("--steps", type=int, default=3000, help="posterior problems: SVI steps")
    parser.add_argument("--particles", type=int, default=8, help="posterior problems: K")
    parser.add_argument("--dataset", choices=DATASETS, default=None, help="VAE problems only")
    parser.add_argument(
        "--data-dir", default=None, help="folder with the MNIST IDX files (or set PYROGEN_DATA)"
    )
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=list(DEFAULT_OBJECTIVES),
        metavar="NAME",
        help="elbo, iwae[:K], renyi:ALPHA[:K], vrmax[:K], avb, avb-ac, sc[:NU[:K]]",
    )
    parser.add_argument(
        "--architecture", choices=ARCHITECTURES, default=d.architecture, help="the VAE's networks"
    )
    parser.add_argument(
        "--likelihood", choices=LIKELIHOODS, default=d.likelihood, help="of the pixels"
    )
    parser.add_argument("--z-dim", type=int, default=None, help="default 50 (MNIST), 16 (digits)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="passes per objective")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="rows per step")
    parser.add_argument("--lr", type=float, default=d.lr, help="Adam's learning rate")
    parser.add_argument(
        "--seed", type=int, default=d.seed, help="initial weights, batches and scores"
    )
    parser.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch threads (small networks; more threads spin against other busy "
        "processes; 0: torch's default)",
    )
    parser.add_argument(
        "--eval-samples", type=int, default=d.eval_samples, help="K of the final test score"
    )
    parser.add_argument(
        "--curve-samples", type=int, default=d.curve_samples, help="K of the per-epoch score"
    )
    parser.add_argument(
        "--curve-points", type=int, default=d.curve_points, help="test images scored per epoch"
    )
    parser.add_argument("--out", default=d.out, help="output folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoints in --out"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again, replacing the checkpoints in --out (without it or --resume, a "
        "run that exists is refused)",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bars (the table and the files written are still printed)",
    )


def _report(result: Any) -> int:
    """Print a harness result's table and the files it wrote."""
    print(result.markdown())
    print("wrote " + ", ".join(str(f) for f in result.files))
    return 0


def _posterior(args: argparse.Namespace) -> int:
    out = args.out if args.out != CompareConfig().out else f"runs/compare-{args.problem}"
    try:
        budget = PosteriorBudget(
            steps=args.steps,
            particles=args.particles,
            seed=args.seed,
            gradient_evaluations=args.gradient_evaluations,
        )
        result = run_posterior(
            POSTERIOR_PROBLEMS[args.problem](), args.families, budget, out, args.progress
        )
    except ValueError as exc:
        print(f"pyrogen compare: error: {exc}", file=sys.stderr)
        return 2
    return _report(result)


def _generative(args: argparse.Namespace) -> int:
    out = args.out if args.out != CompareConfig().out else f"runs/compare-{args.problem}"
    batch = args.batch_size if args.batch_size != CompareConfig().batch_size else None
    try:
        budget = GenerativeBudget(
            args.iterations, args.seconds, batch, args.seed, args.gradient_evaluations
        )
        result = run_generative(args.problem, args.families, budget, out, args.progress)
    except ValueError as exc:
        print(f"pyrogen compare: error: {exc}", file=sys.stderr)
        return 2
    return _report(result)


def _tour(args: argparse.Namespace) -> int:
    try:
        path = run_tour(
            args.out,
            seed=args.seed,
            threads=args.threads,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=args.progress,
        )
    except ValueError as exc:
        print(f"pyrogen compare: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\npyrogen compare: interrupted; rerun with --resume to continue the tour in "
            f"{args.out}",
            file=sys.stderr,
        )
        return 130
    print(f"wrote {path} (and each part's files beside it)")
    return 0


def main(args: argparse.Namespace) -> int:
    """Run the comparison; 2 on a bad setting, 130 after Ctrl-C (the checkpoints kept)."""
    if args.list:
        print(list_text())
        return 0
    if args.problem in POSTERIOR_PROBLEMS:
        if args.families is None:
            args.families = ["mean-field", "full-rank", "renyi:0.5", "iwae", "avb", "hmc"]
        return _posterior(args)
    if args.problem in GENERATIVE_PROBLEMS:
        return _generative(args)
    if args.problem == "tour":
        return _tour(args)
    if args.dataset is None:
        args.dataset = "mnist" if args.problem == "mnist-vae" else "digits"
    elif args.problem == "mnist-vae" and args.dataset != "mnist":
        print("pyrogen compare: error: --problem mnist-vae is --dataset mnist", file=sys.stderr)
        return 2
    names = {f.name for f in fields(CompareConfig)}
    config = CompareConfig(**{k: v for k, v in vars(args).items() if k in names})
    # under torchrun (WORLD_SIZE > 1) every process joins one group and trains data-parallel
    ddp.init_from_env(config.device)
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
