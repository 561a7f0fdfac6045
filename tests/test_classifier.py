"""Classifier FID and mode count: the Fréchet distance against its closed form, and the
scores' behaviour on real MNIST images (skipped without the files)."""

import math
from pathlib import Path

import pytest
import torch

from pyrogen.metrics.classifier import (
    classifier_scores,
    frechet_distance,
    load_classifier,
    train_classifier,
)


def test_frechet_distance_closed_forms() -> None:
    # diagonal covariances: sum (mu1 - mu2)^2 + sum (s1 - s2)^2 (standard deviations)
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 1.0, 0.5])
    d = frechet_distance(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2))
    assert d == pytest.approx(float((mu1 - mu2).square().sum() + (s1 - s2).square().sum()))
    # a rotated pair: invariant under a common rotation, zero for identical Gaussians
    a = torch.randn(4, 4, dtype=torch.float64)
    cov = a @ a.T + 0.1 * torch.eye(4, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    assert abs(frechet_distance(torch.zeros(4), cov, torch.zeros(4), cov)) < 1e-9
    b = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    d1 = frechet_distance(torch.zeros(4), cov, torch.ones(4), b)
    d2 = frechet_distance(
        torch.zeros(4), q @ cov @ q.T, q @ torch.ones(4, dtype=torch.float64), q @ b @ q.T
    )
    assert d1 == pytest.approx(d2, rel=1e-9)


def test_missing_classifier_says_how_to_train_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m pyrogen.metrics.classifier"):
        load_classifier(tmp_path / "none.pt")


def test_scores_on_real_images(mnist_dir: Path, tmp_path: Path) -> None:
    from pyrogen.data import load_mnist

    x, y = load_mnist(mnist_dir, "test").tensors
    path = tmp_path / "clf.pt"
    train_classifier(x[:8000], y[:8000], epochs=2, path=path)
    net = load_classifier(path)
    acc = float((net(x[8000:]).argmax(-1) == y[8000:]).double().mean())
    assert acc > 0.9
    a, b = x[8000:9000], x[9000:10000]
    real = classifier_scores(a, b, net)
    noise = classifier_scores(torch.rand(1000, 784), b, net)
    ones = classifier_scores(x[:8000][y[:8000] == 1][:1000], b, net)
    assert real.modes == 10 and real.class_kl < 0.05
    assert ones.modes <= 2 and ones.class_kl > math.log(10) - 0.3
    assert noise.fid > 10 * real.fid and ones.fid > 10 * real.fid
