import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyro
import pytest

from pyrogen.warnings import PyrogenWarning

# The real MNIST files, beside the project (never in it); tests that need them skip without.
MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _seed_and_isolate() -> Iterator[None]:
    """Every test starts from the same seed, an empty param store, and strict warnings."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - code under test may use the legacy global generator
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PyrogenWarning)
        yield
    pyro.clear_param_store()


@pytest.fixture
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"MNIST files not found in {MNIST_DIR}")
    return MNIST_DIR


class GaussianTarget:
    """A correlated Gaussian with known mean and covariance, as a batched potential."""

    def __init__(self, dim: int = 5, seed: int = 0) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
        scales = torch.logspace(-0.5, 0.5, dim, dtype=torch.float64)
        corr = a @ a.T / dim + 0.5 * torch.eye(dim, dtype=torch.float64)
        d = corr.diagonal().rsqrt()
        self.cov = (corr * d[:, None] * d[None, :]) * scales[:, None] * scales[None, :]
        self.mean = torch.linspace(-2.0, 2.0, dim, dtype=torch.float64)
        self.precision = torch.linalg.inv(self.cov)
        self.chol = torch.linalg.cholesky(self.cov)
        self.dim = dim

    def potential(self, z: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
        d = z - self.mean.to(z)
        return 0.5 * ((d @ self.precision.to(z)) * d).sum(-1)

    def draw(self, n: int, generator: "torch.Generator | None" = None) -> "torch.Tensor":  # noqa: F821
        import torch

        eps = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.mean + eps @ self.chol.T


@pytest.fixture
def gaussian() -> GaussianTarget:
    return GaussianTarget()
