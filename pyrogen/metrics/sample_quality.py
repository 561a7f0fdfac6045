r"""Sample quality without densities: mode coverage of known mixtures, MMD and the energy
distance.

Mode coverage follows the rules of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al.
2018) for 2-D mixtures of isotropic Gaussians with known centres and standard deviation
:math:`\sigma`:

- a sample is *high quality* when it lies within ``3 sigma`` (Euclidean) of its nearest
  centre;
- a mode is *captured* when it is the nearest centre of at least one high-quality sample;
- the *reverse KL* is :math:`KL(\hat p \| u) = \sum_k \hat p_k \log(K \hat p_k)` between
  the histogram :math:`\hat p` of the high-quality samples over their nearest modes and
  the uniform distribution :math:`u` over the :math:`K` modes of the data (0 is perfect
  balance, :math:`\log K` is one mode).

:func:`mmd` is the kernel two-sample statistic of Gretton et al. (2012) with a Gaussian
kernel, its bandwidth by the median heuristic; the unbiased estimate and its standard error
(from the variance of the U-statistic's first-order projection) come together, so a
difference between models can be judged against noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "MMD",
    "EnergyDistance",
    "ModeCoverage",
    "energy_distance",
    "median_bandwidth",
    "mmd",
    "mode_coverage",
]


class ModeCoverage(NamedTuple):
    modes: int
    """Modes captured."""
    high_quality: float
    """Share of samples within ``3 sigma`` of their nearest mode."""
    reverse_kl: float
    """KL(histogram of high-quality samples over modes || uniform); ``inf`` if none."""
    counts: Tensor
    """High-quality samples per mode, ``(num_modes,)``."""


def _rows(name: str, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) tensor, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")
    return x


def mode_coverage(
    samples: Tensor, centers: Tensor, std: float, threshold: float = 3.0
) -> ModeCoverage:
    """Modes captured, high-quality share and reverse KL of ``samples`` (VEEGAN/PacGAN).

    Args:
        samples: generated points ``(n, d)``; non-finite rows count as low quality.
        centers: the mixture's centres ``(K, d)``.
        std: the components' standard deviation.
        threshold: the radius in standard deviations (3 in both papers).
    """
    centers = _rows("centers", centers)
    if samples.dim() != 2 or samples.shape[1] != centers.shape[1] or samples.shape[0] == 0:
        raise ValueError(
            f"samples must be (n, {centers.shape[1]}) with n > 0, got {tuple(samples.shape)}"
        )
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    samples = samples.to(centers)
    finite = torch.isfinite(samples).all(dim=1)
    dist = torch.cdist(torch.where(finite[:, None], samples, 0.0), centers)
    nearest_dist, nearest = dist.min(dim=1)
    good = finite & (nearest_dist <= threshold * std)
    counts = torch.bincount(nearest[good], minlength=centers.shape[0])
    total = int(counts.sum())
    if total == 0:
        kl = math.inf
    else:
        p = counts.double() / total
        nz = p > 0
        kl = float((p[nz] * torch.log(p[nz] * centers.shape[0])).sum())
    return ModeCoverage(
        modes=int((counts > 0).sum()),
        high_quality=total / samples.shape[0],
        reverse_kl=kl,
        counts=counts.cpu(),
    )


class MMD(NamedTuple):
    value: float
    """Unbiased estimate of MMD^2."""
    stderr: float
    """Its standard error (first-order U-statistic variance)."""
    bandwidth: float


def median_bandwidth(x: Tensor, y: Tensor, max_points: int = 2000) -> float:
    """The median of pairwise distances in the pooled sample (the median heuristic), from
    the first ``max_points / 2`` rows of each sample."""
    half = max_points // 2  # both samples in the pool, each cut to half the budget
    z = torch.cat([x.flatten(1)[:half], y.flatten(1)[:half]])
    d = torch.pdist(z.double())
    med = float(d.median())
    if not med > 0:
        raise ValueError("median pairwise distance is 0: the samples are (almost) all equal")
    return med


def mmd(x: Tensor, y: Tensor, bandwidth: float | None = None) -> MMD:
    r"""Unbiased :math:`\mathrm{MMD}^2` between samples ``x`` (n, ...) and ``y`` (m, ...).

    Gaussian kernel :math:`k(a, b) = \exp(-\|a - b\|^2 / (2 h^2))` with ``h`` the median
    pairwise distance unless given. The standard error uses the variance of the
    first-order projections of the U-statistic (Gretton et al. 2012, section 6).
    """
    x = _rows("x", x.flatten(1))
    y = _rows("y", y.flatten(1).to(x))
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least two samples on each side")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y differ in dimension: {x.shape[1]} and {y.shape[1]}")
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    x, y = x.double(), y.double()

    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(a, b).square() / (2 * h * h))

    value, se = _two_sample_u_statistic(k, x, y)
    return MMD(value, se, h)


class EnergyDistance(NamedTuple):
    value: float
    r"""Unbiased estimate of :math:`2 E\|X - Y\| - E\|X - X'\| - E\|Y - Y'\|`."""
    stderr: float
    """Its standard error (first-order U-statistic variance)."""


def energy_distance(x: Tensor, y: Tensor) -> EnergyDistance:
    r"""The energy distance of Székely & Rizzo (2013) between samples ``x`` (n, ...) and
    ``y`` (m, ...): :math:`2 E\|X - Y\| - E\|X - X'\| - E\|Y - Y'\|`, zero exactly when the
    distributions are equal. It is :math:`\mathrm{MMD}^2` with the distance-induced kernel
    :math:`k(a, b) = -\|a - b\|`, so it has no bandwidth and is estimated, with its standard
    error, as :func:`mmd` is. Euclidean distance: standardise the coordinates first when
    their scales differ."""
    x = _rows("x", x.flatten(1))
    y = _rows("y", y.flatten(1).to(x))
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("the energy distance needs at least two samples on each side")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y differ in dimension: {x.shape[1]} and {y.shape[1]}")
    value, se = _two_sample_u_statistic(lambda a, b: -torch.cdist(a, b), x.double(), y.double())
    return EnergyDistance(value, se)


def _two_sample_u_statistic(
    k: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor
) -> tuple[float, float]:
    """Unbiased :math:`E k(X, X') + E k(Y, Y') - 2 E k(X, Y)` and its standard error from
    the variance of the first-order projections (Gretton et al. 2012, section 6)."""
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    kxx.fill_diagonal_(0.0)
    kyy.fill_diagonal_(0.0)
    value = kxx.sum() / (n * (n - 1)) + kyy.sum() / (m * (m - 1)) - 2 * kxy.mean()
    # First-order projections: h_x(a) = E_x' k(a, x') - E_y k(a, y), and similarly for y.
    hx = kxx.sum(1) / (n - 1) - kxy.mean(1)
    hy = kyy.sum(1) / (m - 1) - kxy.mean(0)
    var = 4 * hx.var() / n + 4 * hy.var() / m
    return float(value), float(var.clamp_min(0).sqrt())
