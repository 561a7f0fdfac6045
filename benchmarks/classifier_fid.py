"""Reference values of the MNIST classifier FID and mode count (issue 6, item 4).

The classifier (``pyrogen.metrics.classifier``: an MLP trained a few epochs on the MNIST
training images, weights cached in ``$PYROGEN_CACHE``, never committed) gives a Fréchet
distance between its 128-d features on generated images and on the 10,000 test images, the
number of digit classes that receive at least 1 % of the samples, and the KL from the
uniform class histogram. These numbers are comparable within this project only (another
classifier gives another scale). To read a model's score, this script measures the scale's
landmarks: held-out real images (the floor), real images binarized, real images of half the
classes (5 modes dropped), and uniform noise.

    .venv/bin/python benchmarks/classifier_fid.py          # trains the classifier if absent

Writes ``benchmarks/results/classifier_fid.{json,md}``; skips when MNIST is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pyrogen.data import load_mnist
from pyrogen.machine import machine
from pyrogen.metrics.classifier import (
    cache_dir,
    classifier_scores,
    load_classifier,
    train_classifier,
)

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = HERE.parents[0].parent / "shared" / "data" / "mnist"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--num", type=int, default=10_000, help="images per landmark")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (args.data_dir / "train-images-idx3-ubyte.gz").exists():
        print(f"MNIST not found in {args.data_dir}: skipped", file=sys.stderr)
        return 0
    train_x, train_y = load_mnist(args.data_dir, "train").tensors
    test_x, test_y = load_mnist(args.data_dir, "test").tensors
    weights = cache_dir() / "mnist_classifier.pt"
    net = load_classifier() if weights.exists() else train_classifier(train_x, train_y)
    with torch.no_grad():
        accuracy = float((net(test_x.float()).argmax(-1) == test_y).double().mean())
    gen = torch.Generator().manual_seed(args.seed)
    n = args.num
    landmarks = {
        "training images (held-out floor)": train_x[:n],
        "training images, Bernoulli-binarized": torch.bernoulli(train_x[:n].float(), generator=gen),
        "training images of digits 0-4 only": train_x[train_y < 5][:n],
        "uniform noise": torch.rand(n, train_x.shape[1], generator=gen),
    }
    rows = []
    for name, images in landmarks.items():
        s = classifier_scores(images, test_x, net)
        rows.append({"landmark": name, "fid": s.fid, "modes": s.modes, "class_kl": s.class_kl})
    meta = {
        "machine": machine(),
        "command": (
            "python benchmarks/classifier_fid.py " + " ".join(argv or sys.argv[1:])
        ).strip(),
        "test_accuracy": accuracy,
        "reference": "the 10,000 MNIST test images",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "classifier_fid.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1)
    )
    lines = [
        "# Classifier FID landmarks (MNIST, comparable within pyrogen only)",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`. Classifier test accuracy "
        f"{100 * accuracy:.2f} %. Reference: {meta['reference']}; {n} images per landmark.",
        "",
        "| images | classifier FID | modes (classes >= 1 %) | KL(classes ‖ uniform) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['landmark']} | {r['fid']:.2f} | {r['modes']} | {r['class_kl']:.4f} |")
    text = "\n".join(lines) + "\n"
    (args.out / "classifier_fid.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
