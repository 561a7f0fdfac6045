r"""Rank correlation of two curves recorded through training.

Spearman's :math:`\rho` is Pearson's correlation of the ranks, ties given their average
rank (the definition in Spearman, 1904, and ``scipy.stats.spearmanr``). It asks whether one
quantity falls when the other does (claim (c) of Wasserstein GAN, Arjovsky et al. 2017,
https://arxiv.org/abs/1701.07875: the critic's estimate of :math:`W_1` tracks sample
quality), without assuming the relation is linear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["average_ranks", "spearman"]


def average_ranks(x: Tensor) -> Tensor:
    """Ranks ``0 .. n-1`` of a 1-d tensor, tied values sharing the mean of their ranks.

    Example:
        >>> average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0]))
        tensor([2.5000, 0.0000, 2.5000, 1.0000], dtype=torch.float64)
    """
    if x.dim() != 1:
        raise ValueError(f"ranks need a 1-d tensor, got shape {tuple(x.shape)}")
    values, order = x.sort(stable=True)
    _, counts = torch.unique_consecutive(values, return_counts=True)
    stops = counts.cumsum(0)
    mean_rank = (stops - counts + stops - 1).to(torch.float64) / 2  # of each run of ties
    ranks = torch.empty(x.numel(), dtype=torch.float64)
    ranks[order] = mean_rank.repeat_interleave(counts)
    return ranks


def spearman(a: Sequence[float] | Tensor, b: Sequence[float] | Tensor) -> float:
    r"""Spearman's rank correlation of paired values ``a`` and ``b``.

    Args:
        a, b: as many values each, at least 2.

    Returns:
        :math:`\rho \in [-1, 1]`; NaN when a value is NaN or infinite, or when either
        sequence is constant (the correlation is then undefined), as SciPy returns.

    Example:
        >>> round(spearman([0.1, 0.4, 0.2, 0.9], [1.0, 8.0, 3.0, 20.0]), 6)
        1.0
        >>> spearman([1.0, 2.0, 3.0], [3.0, 3.0, 1.0])  # ties share their mean rank
        -0.8660254037844387
    """
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    if x.numel() != y.numel():
        raise ValueError(f"a and b must pair up: {x.numel()} and {y.numel()} values")
    if x.numel() < 2:
        raise ValueError(f"a rank correlation needs at least 2 pairs, got {x.numel()}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = float(rx.norm() * ry.norm())
    if norm == 0:
        return math.nan
    return max(-1.0, min(1.0, float((rx * ry).sum()) / norm))
