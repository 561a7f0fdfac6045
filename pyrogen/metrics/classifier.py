r"""Sample quality of generated images through a small MNIST classifier of our own.

The classifier (an MLP 784-512-128-10 with ReLU, trained a few epochs on the MNIST training
images by :func:`train_classifier` or ``python -m pyrogen.metrics.classifier``) is cached in a
user folder (``$PYROGEN_CACHE`` or ``~/.cache/pyrogen``), never in the repository. Its
128-unit penultimate layer gives a *classifier FID*: the Fréchet distance between Gaussians
fitted to the features of generated and of real images (Heusel et al. 2017 do this with
Inception features),

.. math:: \|\mu_1 - \mu_2\|^2 + \mathrm{tr}\,(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1\Sigma_2)^{1/2}),

and its predictions give a *mode count* (classes predicted for at least ``min_share`` of
the samples) and the KL of the predicted-class histogram from uniform. These numbers depend
on this particular network and are comparable **within this project only**, never with FIDs
reported elsewhere.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyrogen.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "ClassifierScores",
    "MnistClassifier",
    "cache_dir",
    "classifier_scores",
    "frechet_distance",
    "load_classifier",
    "train_classifier",
]

KIND = "pyrogen.mnist_classifier"


def cache_dir() -> Path:
    """``$PYROGEN_CACHE``, else ``~/.cache/pyrogen``."""
    return Path(os.environ.get("PYROGEN_CACHE", Path.home() / ".cache" / "pyrogen"))


class MnistClassifier(nn.Module):
    """784-512-128-10 MLP on images in [0, 1], rows ``(n, 784)`` (or ``(n, 1, 28, 28)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.reshape(x.shape[0], -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_classifier(
    images: Tensor,
    labels: Tensor,
    epochs: int = 5,
    batch_size: int = 128,
    seed: int = 0,
    path: str | os.PathLike[str] | None = None,
) -> MnistClassifier:
    """Trains the classifier (Adam 1e-3) and saves it atomically to ``path`` (default: the
    cache folder's ``mnist_classifier.pt``)."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError("images and labels differ in length")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = MnistClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = images.reshape(images.shape[0], -1).float()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), labels[idx].long()).backward()
            opt.step()
    net.eval()
    save_checkpoint(path or cache_dir() / "mnist_classifier.pt", KIND, {"state": net.state_dict()})
    return net


def load_classifier(path: str | os.PathLike[str] | None = None) -> MnistClassifier:
    """The cached classifier; trains none (run ``python -m pyrogen.metrics.classifier``)."""
    path = Path(path or cache_dir() / "mnist_classifier.pt")
    if not path.is_file():
        raise FileNotFoundError(
            f"no MNIST classifier at {path}: train it once with "
            "`python -m pyrogen.metrics.classifier` (needs the MNIST files)"
        )
    net = MnistClassifier()
    net.load_state_dict(load_checkpoint(path, KIND)["state"])
    return net.eval()


def _sqrtm_psd(a: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(a)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    r"""Fréchet (2-Wasserstein squared) distance between two Gaussians, in float64.

    :math:`\mathrm{tr}(\Sigma_1\Sigma_2)^{1/2} = \mathrm{tr}(\Sigma_1^{1/2}\Sigma_2
    \Sigma_1^{1/2})^{1/2}`, a symmetric PSD square root, so no complex parts arise.
    """
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    s1 = _sqrtm_psd(cov1)
    middle = _sqrtm_psd(s1 @ cov2 @ s1)
    value = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * middle.trace()
    return float(value)


class ClassifierScores(NamedTuple):
    fid: float
    """Classifier FID against the reference images."""
    modes: int
    """Classes predicted for at least ``min_share`` of the samples."""
    class_kl: float
    """KL(predicted-class histogram || uniform over 10)."""
    counts: Tensor


@torch.no_grad()
def classifier_scores(
    samples: Tensor,
    reference: Tensor,
    classifier: MnistClassifier | None = None,
    min_share: float = 0.01,
) -> ClassifierScores:
    """Classifier FID of ``samples`` against ``reference`` images, mode count and class KL."""
    if samples.shape[0] < 2 or reference.shape[0] < 2:
        raise ValueError("need at least two samples and two reference images")
    net = classifier if classifier is not None else load_classifier()
    f1 = net.features(samples.float()).double()
    f2 = net.features(reference.float()).double()
    fid = frechet_distance(f1.mean(0), torch.cov(f1.T), f2.mean(0), torch.cov(f2.T))
    pred = net.head(f1.float()).argmax(-1)
    counts = torch.bincount(pred, minlength=10)
    p = counts.double() / counts.sum()
    nz = p > 0
    kl = float((p[nz] * torch.log(p[nz] * 10)).sum())
    return ClassifierScores(fid, int((p >= min_share).sum()), kl, counts)


def main() -> None:
    from pyrogen.data import load_mnist

    p = argparse.ArgumentParser(description="Train and cache the MNIST classifier for FID.")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", default=None, help="default: $PYROGEN_CACHE/mnist_classifier.pt")
    args = p.parse_args()
    train_x, train_y = load_mnist(args.data_dir, "train").tensors
    net = train_classifier(train_x, train_y, epochs=args.epochs, path=args.out)
    test_x, test_y = load_mnist(args.data_dir, "test").tensors
    with torch.no_grad():
        acc = float((net(test_x.float()).argmax(-1) == test_y).double().mean())
    print(f"test accuracy {100 * acc:.2f} %; saved to {args.out or cache_dir()}")


if __name__ == "__main__":
    main()
