"""KALE on MNIST: the base generator, its GEBM and the recommended GAN at equal wall time.

Issue 17's image experiment. One generator architecture (latent 32, MLP 32-256-512-784 with
ReLU and a sigmoid output, pixels in [0, 1]) is trained on the 60,000 MNIST training images
(grey levels) twice, for the same number of seconds each:

* by KALE (Arbel, Zhou & Gretton 2021; ``pyrogen.inference.KALE``): an energy
  784-512-256-1 (LeakyReLU 0.2), the paper's gradient penalty 1 and energy schedule (5
  energy steps per generator step, 100 at the start and every 500), Adam (0.5, 0.999);
* by the recommended GAN recipe (``pyrogen.inference.RECOMMENDED``: the non-saturating GAN
  with R1 1 and a generator EMA of 0.999) with a critic the size of the energy.

Both learning rates decay linearly to 0 over the budget; the number of iterations that fits
the budget is measured first (a few iterations of each, timed). Then 10,000 draws are
scored by the classifier FID of ``pyrogen.metrics.classifier`` against the 10,000 test
images (``benchmarks/classifier_fid.py`` gives the scale: 0.89 for held-out real images,
437 for uniform noise): the KALE base generator's, its GEBM's (latent-space MCMC on
``U(z) = |z|^2 / 2 + E(G(z))``, one chain per draw from a base draw, MALA with its step size
adapted over ``--sampler-steps`` transitions) and the GAN's (its EMA weights).

    .venv/bin/python benchmarks/kale_mnist.py --seconds 900   # about 35 minutes, 1 thread
    .venv/bin/python benchmarks/kale_mnist.py --smoke-test

Writes ``results/kale_mnist.{json,md}``, ``results/kale_mnist_samples.png`` (64 draws of
each) and ``results/kale_mnist_kale.png`` (the KALE estimate through training). Needs the
MNIST files (``../shared/data/mnist``); trains the classifier into its cache when absent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from pyrogen.data import load_mnist
from pyrogen.inference import GEBM, KALE, Trainer
from pyrogen.inference.gan import RECOMMENDED, make_adversarial, parse_adversarial
from pyrogen.machine import machine
from pyrogen.metrics.classifier import (
    MnistClassifier,
    cache_dir,
    classifier_scores,
    load_classifier,
    train_classifier,
)
from pyrogen.models import Generator, mlp

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "mnist"


def networks(latent: int, hidden: tuple[int, int], seed: int) -> tuple[Generator, nn.Module]:
    """The generator (sigmoid pixels) and a critic/energy 784-h2-h1-1, from ``seed``."""
    torch.manual_seed(seed)
    body = mlp([latent, hidden[0], hidden[1], 784])
    generator = Generator(nn.Sequential(body, nn.Sigmoid()), latent_dim=latent, event_shape=(784,))
    critic = mlp([784, hidden[1], hidden[0], 1], activation=lambda: nn.LeakyReLU(0.2))
    return generator, critic


def decay(total: int) -> Any:
    """A trainer callback: every learning rate linearly to 0 at iteration ``total``."""

    def callback(trainer: Trainer) -> None:
        trainer.decay_learning_rates(trainer.iteration, total)

    return callback


def build(kind: str, args: argparse.Namespace, total: int) -> tuple[Trainer, Generator, Any]:
    """A trainer of ``kind`` ("kale" or "gan") with fresh networks (seed ``args.seed``)."""
    pyro.clear_param_store()
    generator, critic = networks(args.latent, args.hidden, args.seed)
    if kind == "kale":
        objective: Any = KALE(critic, penalty=1.0, energy_steps=5, warmup_steps=args.warmup)
        optimizers = {
            role: (cls, {**kw, "lr": args.lr})
            for role, (cls, kw) in KALE.default_optimizers.items()
        }
        ema = None
    else:
        name, penalties, ema = parse_adversarial(RECOMMENDED)
        objective = make_adversarial(name, critic, **penalties)
    optimizers = {
        role: (cls, {**kw, "lr": args.lr})
        for role, (cls, kw) in objective.default_optimizers.items()
    }
    trainer = Trainer(
        objective, generator, optimizers=optimizers, callback=decay(total), progress=False, ema=ema
    )
    return trainer, generator, objective


def seconds_per_iteration(kind: str, args: argparse.Namespace, x: torch.Tensor) -> float:
    """Measured on throwaway networks: the mean of iterations 11-40 (KALE's first two do 100
    energy steps each, as every 500th does; those are counted in as their share)."""
    trainer, _, _ = build(kind, args, 10**9)
    trainer.fit(x, 10, args.batch_size, seed=args.seed)
    start = time.perf_counter()
    trainer.fit(x, 40, args.batch_size, seed=args.seed)
    per = (time.perf_counter() - start) / 30
    if kind == "kale":  # 2 x 100 energy steps at the start and 100 every 500 iterations
        per *= 1 + (100 - 5) / 6 / 500
    return per


def train(kind: str, args: argparse.Namespace, x: torch.Tensor, iterations: int) -> dict[str, Any]:
    trainer, generator, objective = build(kind, args, iterations)
    start = time.perf_counter()
    history = trainer.fit(x, iterations, args.batch_size, seed=args.seed)
    seconds = time.perf_counter() - start
    return {
        "trainer": trainer,
        "generator": generator,
        "objective": objective,
        "seconds": seconds,
        "iterations": iterations,
        "kale_curve": history.get("kale", []),
    }


def classifier(args: argparse.Namespace, train_x: torch.Tensor, labels: torch.Tensor) -> Any:
    if args.smoke_test:
        path = Path(tempfile.mkdtemp()) / "classifier.pt"
        return train_classifier(train_x[:512], labels[:512], epochs=1, path=path)
    try:
        return load_classifier()
    except FileNotFoundError:
        print(f"training the MNIST classifier into {cache_dir()}", flush=True)
        return train_classifier(train_x, labels)


def score(name: str, images: torch.Tensor, test: torch.Tensor, net: MnistClassifier) -> dict:
    s = classifier_scores(images, test, net)
    return {"model": name, "fid": s.fid, "modes": s.modes, "class_kl": s.class_kl}


def plot(samples: dict[str, torch.Tensor], curve: list[float], out: Path, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(samples), figsize=(3.2 * len(samples), 3.4))
    for ax, (name, x) in zip(axes, samples.items(), strict=True):
        grid = x[:64].reshape(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(8 * 28, 8 * 28)
        ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / f"{stem}_samples.png", dpi=90)
    plt.close(fig)
    finite = [v for v in curve if math.isfinite(v)]
    if finite:
        width = max(1, len(curve) // 100)
        xs = list(range(0, len(curve), width))
        ys = [sum(curve[i : i + width]) / len(curve[i : i + width]) for i in xs]
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(xs, ys)
        ax.set_xlabel("generator iteration")
        ax.set_ylabel(f"KALE estimate (mean of {width})")
        fig.tight_layout()
        fig.savefig(out / f"{stem}_kale.png", dpi=100)
        plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# KALE on MNIST: base generator, GEBM and the recommended GAN at equal wall time",
        "",
        f"Machine: {report['machine']}. Command: `{report['command']}`.",
        "",
        report["settings"],
        "",
        "| model | training iterations | training s | sampling s per 1,000 | classifier FID "
        "| classes >= 1 % | KL(classes ‖ uniform) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['model']} | {row['iterations']} | {row['train_seconds']:.0f} | "
            f"{row['sample_seconds_per_1000']:.2f} | {row['fid']:.2f} | {row['modes']} | "
            f"{row['class_kl']:.3f} |"
        )
    lines += [
        "",
        "Classifier FID against the 10,000 test images (`pyrogen.metrics.classifier`; the "
        "scale of `results/classifier_fid.md`: held-out real images 0.89, uniform noise "
        "437). One seed.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--seconds", type=float, default=900.0, help="training budget per model")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--warmup", type=int, default=100, help="KALE's energy warm-up steps")
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--sampler-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="default benchmarks/results")
    p.add_argument("--name", default="kale_mnist")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    args.hidden = (256, 512)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    if args.smoke_test:
        args.seconds, args.samples, args.sampler_steps, args.warmup = 2.0, 200, 5, 2
        args.hidden = (16, 32)
        args.out = args.out or Path(tempfile.mkdtemp())
    out = args.out or ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    if args.data_dir.is_dir():
        train_set, test_set = load_mnist(args.data_dir), load_mnist(args.data_dir, split="test")
        x, labels = train_set.tensors
        test = test_set.tensors[0]
    elif args.smoke_test:
        gen = torch.Generator().manual_seed(0)
        x, test = torch.rand(1024, 784, generator=gen), torch.rand(256, 784, generator=gen)
        labels = torch.randint(10, (1024,), generator=gen)
    else:
        sys.exit(f"MNIST not found in {args.data_dir}: pass --data-dir (or --smoke-test)")
    if args.smoke_test:
        x, test = x[:1024], test[:256]
    net = classifier(args, x, labels)

    rows, samples, curve = [], {}, []
    for kind in ("kale", "gan"):
        per = seconds_per_iteration(kind, args, x)
        iterations = 4 if args.smoke_test else max(2, int(args.seconds / per))
        print(f"{kind}: {per * 1e3:.1f} ms per iteration -> {iterations} iterations", flush=True)
        run = train(kind, args, x, iterations)
        generator = run["generator"]
        draws: dict[str, tuple[torch.Tensor, float]] = {}
        start = time.perf_counter()
        base = generator.sample(args.samples)
        draws["KALE base generator" if kind == "kale" else "GAN (recommended recipe)"] = (
            base,
            time.perf_counter() - start,
        )
        if kind == "kale":
            curve = run["kale_curve"]
            gebm = GEBM(generator, run["objective"].energy, model_args=(None, 1))
            generator.eval()
            start = time.perf_counter()
            tilted = gebm.sample(
                args.samples,
                kernel="mala",
                num_steps=args.sampler_steps,
                generator=torch.Generator().manual_seed(args.seed),
            )
            draws["GEBM (KALE)"] = (tilted.x.detach(), time.perf_counter() - start)
            generator.train()
        for name, (images, secs) in draws.items():
            row = score(name, images.reshape(-1, 784).clamp(0, 1), test, net)
            row |= {
                "iterations": run["iterations"],
                "train_seconds": run["seconds"],
                "sample_seconds_per_1000": 1000 * secs / args.samples,
            }
            rows.append(row)
            samples[name] = images.reshape(-1, 784)
            print(row, flush=True)
    settings = (
        f"{len(x)} training images (grey levels), batch {args.batch_size}; generator "
        f"{args.latent}-{args.hidden[0]}-{args.hidden[1]}-784 (ReLU, sigmoid), critic/energy "
        f"784-{args.hidden[1]}-{args.hidden[0]}-1 (LeakyReLU 0.2); Adam lr {args.lr:g} betas "
        f"(0.5, 0.999) decaying linearly to 0; {args.seconds:.0f} s of training each. KALE: "
        f"penalty 1, 5 energy steps per generator step, {args.warmup} at the start and every "
        f"500. GAN: {RECOMMENDED}, sampled from its EMA. GEBM: MALA in the latent space, "
        f"{args.sampler_steps} transitions with the step size adapted, one chain per draw; "
        f"{args.samples} draws of each model. {args.threads} torch thread(s)."
    )
    report = {
        "machine": machine(),
        "command": "python benchmarks/kale_mnist.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": settings,
        "rows": rows,
        "kale_curve": curve,
    }
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(markdown(report))
    plot({k: v.cpu() for k, v in samples.items()}, curve, out, args.name)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
