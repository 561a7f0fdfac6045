r"""Data sets and preprocessing: 8x8 digits, MNIST, binarization and 2-D toy distributions."""

from pyrogen.data.binarize import (
    DynamicBinarized,
    binarize_bernoulli_fixed,
    binarize_dynamic,
    binarize_static,
)
from pyrogen.data.digits import digits_split_indices, load_digits
from pyrogen.data.mnist import load_mnist, read_idx
from pyrogen.data.toy import ToyData, grid, ring, spiral, spiral_curve, two_moons

__all__ = [
    "DynamicBinarized",
    "ToyData",
    "binarize_bernoulli_fixed",
    "binarize_dynamic",
    "binarize_static",
    "digits_split_indices",
    "grid",
    "load_digits",
    "load_mnist",
    "read_idx",
    "ring",
    "spiral",
    "spiral_curve",
    "two_moons",
]
