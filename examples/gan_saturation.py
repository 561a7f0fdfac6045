"""The minimax generator loss saturates early in training; the non-saturating one does not.

Goodfellow et al. (2014, section 3): "Early in learning, when G is poor, D can reject
samples with high confidence ... log(1 - D(G(z))) saturates. Rather than training G to
minimize log(1 - D(G(z))) we can train G to maximize log D(G(z))." Both generators start
from the same weights and meet the same critic, which first gets a head start of
``--critic-warmup`` steps against the untrained generator (the early-training situation);
then both train as usual. The figure shows the norm of the generator's gradient and the
critic's mean probability that a generated sample is real, per iteration, for both losses.

    .venv/bin/python examples/gan_saturation.py --out runs/gan_saturation
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from pyrogen.data import ring  # noqa: E402
from pyrogen.inference import GAN, Trainer  # noqa: E402
from pyrogen.metrics import mode_coverage  # noqa: E402
from pyrogen.models import Generator, mlp  # noqa: E402


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = ring(20_000, generator=torch.Generator().manual_seed(args.seed))
    x = data.samples.to(args.device)
    torch.manual_seed(args.seed)
    g0 = Generator(mlp([2, args.hidden, args.hidden, 2]), 2, (2,)).to(args.device)
    c0 = mlp([2, args.hidden, args.hidden, 1], activation=lambda: nn.LeakyReLU(0.2))
    c0.to(args.device)
    # The critic's head start: one trainer iteration of --critic-warmup critic updates
    # against the untrained generator, whose optimiser has learning rate 0 (its one update
    # per iteration leaves it untouched).
    pyro.clear_param_store()
    adam = (torch.optim.Adam, {"lr": args.lr, "betas": (0.5, 0.999)})
    if args.critic_warmup > 0:
        head_start = Trainer(
            GAN(c0),
            g0,
            optimizers={"critic": adam, "generator": (torch.optim.SGD, {"lr": 0.0})},
            steps={"critic": args.critic_warmup},
            progress=False,
        )
        head_start.fit(x, 1, args.batch_size, seed=args.seed)
    results: dict[str, Any] = {}
    for kind in ("minimax", "nonsaturating"):
        pyro.clear_param_store()
        g, c = copy.deepcopy(g0), copy.deepcopy(c0)
        obj = GAN(c, generator_loss=kind)
        norms: list[float] = []
        d_fake: list[float] = []

        def record(
            trainer: Trainer,
            g: Generator = g,
            norms: list[float] = norms,
            d_fake: list[float] = d_fake,
            obj: GAN = obj,
        ) -> None:
            grads = [p.grad.flatten() for p in g.parameters() if p.grad is not None]
            norms.append(float(torch.cat(grads).norm()))
            d_fake.append(1 / (1 + math.exp(-obj.stats["critic_fake"])))

        trainer = Trainer(
            obj,
            g,
            optimizers={"critic": adam, "generator": adam},
            callback=record,
            progress=not args.smoke_test,
        )
        trainer.fit(x, args.num_iterations, args.batch_size, seed=args.seed)
        cov = mode_coverage(g.sample(args.num_scored), data.centers, float(data.std or 0.01))
        results[kind] = {
            "grad_norm": norms,
            "d_fake": d_fake,
            "modes": cov.modes,
            "high_quality": cov.high_quality,
        }
        early = norms[: max(1, len(norms) // 10)]
        print(
            f"{kind:>13}: median generator gradient norm over the first 10% "
            f"{sorted(early)[len(early) // 2]:.3g}; at the end {cov.modes}/8 modes, "
            f"{100 * cov.high_quality:.0f}% high quality"
        )
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for kind, style in (("minimax", "r-"), ("nonsaturating", "b-")):
        r = results[kind]
        axes[0].semilogy([max(v, 1e-12) for v in r["grad_norm"]], style, lw=0.8, label=kind)
        axes[1].plot(r["d_fake"], style, lw=0.8, label=kind)
    axes[0].set_xlabel("generator iteration")
    axes[0].set_ylabel("||generator gradient||")
    axes[0].legend()
    axes[1].set_xlabel("generator iteration")
    axes[1].set_ylabel("mean D(G(z))")
    axes[1].set_ylim(0, 1)
    fig.suptitle("minimax log(1 - D(G(z))) vs non-saturating -log D(G(z))", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run(args)
    plot(results, out / "gan_saturation.png")
    (out / "gan_saturation.json").write_text(json.dumps(results))
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-iterations", type=int, default=2000)
    p.add_argument("--critic-warmup", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--num-scored", type=int, default=2500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/gan_saturation")
    p.add_argument("--smoke-test", action="store_true")
    return p


if __name__ == "__main__":
    args = parser().parse_args()
    if args.smoke_test:
        args.num_iterations, args.critic_warmup, args.hidden, args.num_scored = 10, 5, 16, 200
    main(args)
