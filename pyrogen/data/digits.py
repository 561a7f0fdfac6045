r"""scikit-learn's 8x8 handwritten digits with a fixed train/test split.

The 1797 images ship inside scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "DIGITS_NUM_EXAMPLES",
    "DIGITS_NUM_TRAIN",
    "DIGITS_SPLIT_SEED",
    "digits_split_indices",
    "load_digits",
]

DIGITS_NUM_EXAMPLES = 1797
DIGITS_NUM_TRAIN = 1500
DIGITS_SPLIT_SEED = 0

DigitsSplit = Literal["train", "test", "all"]


@functools.cache
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    # The legacy RandomState stream is frozen by NumPy's compatibility policy (NEP 19), unlike
    # Generator streams, so this permutation cannot change with a NumPy upgrade.
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(DIGITS_NUM_EXAMPLES)
    train, test = perm[:DIGITS_NUM_TRAIN], perm[DIGITS_NUM_TRAIN:]
    train.setflags(write=False)
    test.setflags(write=False)
    return train, test


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    r"""Row indices into ``sklearn.datasets.load_digits()`` of the fixed train and test splits.

    The split is ``np.random.RandomState(0).permutation(1797)``: its first 1500 entries are the
    training set and the remaining 297 the test set. The legacy ``RandomState`` stream is frozen
    by NumPy, so the split is the same on every machine and NumPy version.

    Returns:
        ``(train_idx, test_idx)``, int64 arrays of lengths 1500 and 297; disjoint, together a
        permutation of ``range(1797)``. Fresh copies, safe to modify.

    Example:
        >>> train_idx, test_idx = digits_split_indices()
        >>> len(train_idx), len(test_idx)
        (1500, 297)
    """
    train, test = _split_indices()
    return train.astype(np.int64), test.astype(np.int64)


@functools.cache
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    data = np.asarray(bunch.data, dtype=np.float64)
    target = np.asarray(bunch.target, dtype=np.int64)
    if data.shape != (DIGITS_NUM_EXAMPLES, 64):
        raise RuntimeError(f"unexpected scikit-learn digits shape {data.shape}")
    # Cached and shared between calls: make accidental in-place edits fail loudly.
    data.setflags(write=False)
    target.setflags(write=False)
    return data, target


def load_digits(
    split: DigitsSplit = "train",
    *,
    flatten: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> TensorDataset:
    r"""Load scikit-learn's 8x8 digits as a ``TensorDataset(images, labels)``.

    Pixels, originally integers in ``0..16``, are divided by 16 so they lie in ``[0, 1]``.

    Args:
        split: ``"train"`` (1500 images), ``"test"`` (297) or ``"all"`` (1797, in scikit-learn's
            order). See :func:`digits_split_indices` for how the fixed split is made.
        flatten: If true images have shape ``(n, 64)``, else ``(n, 1, 8, 8)``.
        device: Device of the returned tensors.
        dtype: Floating-point dtype of the images. Labels are always int64.

    Returns:
        ``TensorDataset`` whose ``tensors`` are ``(images, labels)``.

    Raises:
        ValueError: For an unknown ``split`` or a non-floating-point ``dtype``.

    Example:
        >>> images, labels = load_digits("test").tensors
        >>> images.shape, labels.dtype
        (torch.Size([297, 64]), torch.int64)
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    data, target = _raw_digits()
    if split != "all":
        train_idx, test_idx = _split_indices()
        idx = train_idx if split == "train" else test_idx
        data, target = data[idx], target[idx]
    # torch.tensor always copies, so callers never alias the cached arrays.
    images = torch.tensor(data / 16.0, dtype=dtype, device=device)
    labels = torch.tensor(target, dtype=torch.int64, device=device)
    if not flatten:
        images = images.reshape(-1, 1, 8, 8)
    return TensorDataset(images, labels)
