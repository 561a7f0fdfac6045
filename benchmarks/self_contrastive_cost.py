"""Seconds per training step of the self-contrastive example's objectives, side by side.

``examples/self_contrastive_vae.py`` logs each epoch's training seconds, but its runs may
share the machine with other jobs, so their clocks are not comparable. This script measures
the cost of one training step (loss, backward, Adam) of each objective on the same VAE
(Burda's 784-200-200-50, batch 100, MNIST rows binarized once) in rotating rounds on one
thread, and reports medians and each objective's cost relative to the ELBO's: an equal-time
comparison then reads the ELBO run's curve at (ELBO epochs of the warm start) + (the
self-contrastive epochs) x (relative cost).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/self_contrastive_cost.py \\
        --data-dir ../shared/data/mnist

Writes ``results/self_contrastive_cost.{json,md}``; ``--smoke-test`` runs tiny rounds on the
embedded digits into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrogen.data import binarize_bernoulli_fixed, load_digits, load_mnist
from pyrogen.inference import Objective, RenyiBound, SelfContrastive
from pyrogen.machine import machine
from pyrogen.models import build_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))
from renyi_speed import adam_step  # noqa: E402

ROOT = Path(__file__).resolve().parent
# name -> (label, objective factory); the self-contrastive rows as the example's --variants
OBJECTIVES: dict[str, tuple[str, Callable[[], Objective]]] = {
    "elbo": ("ELBO", lambda: RenyiBound(1.0, num_particles=1, max_plate_nesting=1)),
    "sc_nce_k1": (
        "self-contrastive K=1 (guide by NCE)",
        lambda: SelfContrastive(nu=1.0, num_particles=1, max_plate_nesting=1),
    ),
    "sc_bound_k1": (
        "self-contrastive K=1 (guide by BOUND)",
        lambda: SelfContrastive(
            nu=1.0, num_particles=1, max_plate_nesting=1, guide_objective="bound"
        ),
    ),
    "sc_nce_alpha-1_k5": (
        "self-contrastive K=5 (guide by NCE, noise rows by Rényi alpha=-1)",
        lambda: SelfContrastive(
            nu=1.0, num_particles=5, max_plate_nesting=1, noise_rows_alpha=-1.0
        ),
    ),
}


def make_step(name: str, x_dim: int, z_dim: int, seed: int) -> Callable[[torch.Tensor], float]:
    """One objective's training step on a fresh VAE (the same initial weights for all)."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    vae = build_vae("burda", (x_dim,), z_dim)
    loss_fn = OBJECTIVES[name][1]()(vae.model, vae.guide)
    return adam_step(loss_fn, list(vae.parameters()))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST IDX folder")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30, help="steps per objective per round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pyro.enable_validation(False)
    if args.smoke_test:
        args.rounds, args.steps, args.warmup = 2, 2, 1
        rows = load_digits("train").tensors[0]
        z_dim = 16
    else:
        rows = load_mnist(args.data_dir, "train").tensors[0]
        z_dim = 50
    rows = rows.reshape(rows.shape[0], -1).float()
    x = binarize_bernoulli_fixed(rows[:100], generator=torch.Generator().manual_seed(0))
    steps = {name: make_step(name, x.shape[1], z_dim, 0) for name in OBJECTIVES}
    for step in steps.values():
        for _ in range(args.warmup):
            step(x)
    times: dict[str, list[float]] = {name: [] for name in OBJECTIVES}
    names = list(OBJECTIVES)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotating order
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name](x)
            times[name].append((time.perf_counter() - start) / args.steps)
    ratios = {
        name: [t / e for t, e in zip(times[name], times["elbo"], strict=True)] for name in names
    }
    rows_out = [
        {
            "objective": name,
            "label": OBJECTIVES[name][0],
            "median_ms": 1e3 * statistics.median(times[name]),
            "ratio_median": statistics.median(ratios[name]),
            "ratio_min": min(ratios[name]),
            "ratio_max": max(ratios[name]),
        }
        for name in names
    ]
    payload = {
        "machine": machine(),
        "threads": 1,
        "command": "python benchmarks/self_contrastive_cost.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"rounds": args.rounds, "steps": args.steps, "warmup": args.warmup},
        "rows": rows_out,
    }
    out = args.out or (Path(tempfile.mkdtemp()) if args.smoke_test else ROOT / "results")
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Seconds per training step of the self-contrastive example's objectives",
        "",
        f"Machine: {payload['machine']}; 1 torch thread, the machine otherwise idle. Command: "
        f"`{payload['command']}`. Burda's 784-200-200-50 VAE, batch 100, Adam; "
        f"{args.rounds} rotating rounds of {args.steps} steps after {args.warmup} warm-up "
        "steps each; ratio: the objective's time over the ELBO's in the same round.",
        "",
        "| objective | median ms / step | x ELBO: median [min, max] |",
        "|---|---:|---|",
    ]
    for row in rows_out:
        lines.append(
            f"| {row['label']} | {row['median_ms']:.2f} | {row['ratio_median']:.2f} "
            f"[{row['ratio_min']:.2f}, {row['ratio_max']:.2f}] |"
        )
    (out / "self_contrastive_cost.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "self_contrastive_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return payload


if __name__ == "__main__":
    main()
