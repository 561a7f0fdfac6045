"""The comparison's outputs: the table (Markdown, CSV, JSON), ``curves.png``, ``samples.png``."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pyrogen.compare.config import CompareConfig

__all__ = ["plot", "write_table"]

_CSV_COLUMNS = [
    "objective",
    "label",
    "test_ll",
    "test_ll_stderr",
    "test_ll_mc_stderr",
    "eval_samples",
    "train_bound",
    "seconds_per_epoch",
    "epochs",
    "active_units",
]


def write_table(results: list[dict[str, Any]], config: CompareConfig, out: Path) -> str:
    """Write ``results.md``, ``results.csv`` and ``results.json`` (with the per-epoch
    histories) to ``out``; returns the Markdown table (with the AVB and self-contrastive
    rows' footnotes when there are any)."""
    k = config.eval_samples
    header = (
        f"| objective | test log p(x), K={k} | ± s.e. | final train bound | s/epoch | "
        "active units |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        # see the notes: AVB's is not a bound; SC's is its bound, not the loss it minimised
        mark = "†" if r.get("implicit") else "‡" if r.get("contrastive") else ""
        lines.append(
            f"| {r['label']} | {r['test_ll']:.2f} | {r['test_ll_stderr']:.2f} | "
            f"{r['train_bound']:.2f}{mark} | {r['seconds_per_epoch']:.3f} | "
            f"{r['active_units']} |"
        )
    table = "\n".join(lines)
    note = (
        f"{config.dataset}, {config.architecture} VAE (z={config.latent_dim}, "
        f"{config.likelihood}), {config.epochs} epochs, batch {config.batch_size}, Adam lr "
        f"{config.lr}, seed {config.seed}, device {config.device}. Test log-likelihood in nats "
        f"per image (importance sampling, K={k}); s.e. over test images."
    )
    if any(r.get("implicit") for r in results):  # a footnote under the table
        table += (
            "\n\n† AVB rows (implicit encoder, same initial decoder): the train column is the "
            "AVB objective's ELBO estimate with the critic standing in for log q(z|x), not a "
            "bound (it is above the ELBO where the critic underestimates log q). Their test "
            "log-likelihood weighs importance samples from a diagonal Gaussian fitted per "
            "image to 64 guide draws (still a stochastic lower bound of log p(x)); active "
            "units from those draws' means, their own Monte Carlo variance taken off. Each "
            "AVB iteration steps the critic and then the model on two successive batches, so "
            "an AVB epoch has half the model updates of the other rows."
        )
    if any(r.get("contrastive") for r in results):
        table += (
            "\n\n‡ Self-contrastive rows (NCE against a frozen copy of the VAE, renewed every "
            "5 epochs; the first copy is the initial VAE): the loss minimised is the "
            "classifier's, not a bound; the train column is the VAE's own K-particle IWAE "
            "bound (K=1: the ELBO) on its training batches, which that loss computes. The NCE "
            "loss and the classifier's accuracy per epoch are in results.json. Test "
            "log-likelihood and active units from the VAE's Gaussian guide, as for the "
            "bound rows."
        )
    (out / "results.md").write_text(f"{table}\n\n{note}\n")
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    payload = {
        "config": asdict(config),
        "results": [{k: v for k, v in r.items() if k != "samples"} for r in results],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    return table


def plot(
    results: list[dict[str, Any]],
    config: CompareConfig,
    image_shape: tuple[int, int],
    num_test: int,
    out: Path,
) -> None:
    """Write ``curves.png`` (training bound and held-out estimate per epoch) and
    ``samples.png`` (mean images from prior draws, one panel per objective) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for r in results:
        epochs = range(1, len(r["history"]["train_bound"]) + 1)
        axes[0].plot(epochs, r["history"]["train_bound"], label=r["label"])
        axes[1].plot(epochs, r["history"]["heldout_ll"], label=r["label"])
    n_curve = min(config.curve_points, num_test)
    marked = any(r.get("implicit") or r.get("contrastive") for r in results)
    title = "training column (see the table's notes)" if marked else "training objective"
    axes[0].set(xlabel="epoch", ylabel="nats per image", title=title)
    axes[1].set(
        xlabel="epoch",
        ylabel="nats per image",
        title=f"held-out log p(x), K={config.curve_samples}, {n_curve} test images",
    )
    # the first epochs are far below the rest: show the part where the objectives differ
    for ax, key, above in [(axes[0], "train_bound", 3), (axes[1], "heldout_ll", 2)]:
        ax.grid(alpha=0.3)
        finals = [r["history"][key][-1] for r in results if r["history"][key]]
        if finals:
            ax.set_ylim(min(finals) - 8, max(finals) + above)
    axes[1].legend(loc="lower right")
    fig.suptitle(f"{config.dataset}: one {config.architecture} VAE, several objectives")
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)

    h, w = image_shape
    cols = min(len(results), 5)
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, results, strict=False):
        imgs = torch.tensor(r["samples"]).reshape(6, 6, h, w)
        tiled = imgs.permute(0, 2, 1, 3).reshape(6 * h, 6 * w)
        ax.imshow(tiled.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{r['label']}\n{r['test_ll']:.1f} nats", fontsize=9)
    fig.suptitle("mean images E[x | z], z from the prior")
    fig.savefig(out / "samples.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
