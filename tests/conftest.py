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
