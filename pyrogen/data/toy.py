r"""Two-dimensional toy distributions for checking mode coverage and density fits.

``ring`` and ``grid`` are the Gaussian-mixture benchmarks used for mode collapse (VEEGAN,
PacGAN): 8 modes on the unit circle and 25 modes on a 5x5 grid. ``two_moons`` and ``spiral``
are curve-shaped sets without modes; ``spiral_curve`` lays points of equal probability along
the spiral's arms, so that :func:`pyrogen.metrics.mode_coverage` can score samples against the
curve (the distance to the nearest point is the distance to the curve when they are dense).

All samplers are vectorized and take an optional ``torch.Generator``. Sampling happens on the
generator's device (else on ``device``) and the result is then moved to ``device``, so a CPU
generator gives the same data whatever the target device.
"""

from __future__ import annotations

import math
import operator
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ToyData", "grid", "ring", "spiral", "spiral_curve", "two_moons"]

Device = torch.device | str | None


class ToyData(NamedTuple):
    r"""Samples of a 2-D toy distribution.

    Attributes:
        samples: Shape ``(n, 2)``.
        centers: Mode centres, shape ``(m, 2)``, or ``None`` for sets without modes.
        std: Standard deviation of the isotropic Gaussian noise added to each point.
    """

    samples: Tensor
    centers: Tensor | None
    std: float | None


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _check_scale(name: str, value: float, *, positive: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def _sampling_device(generator: torch.Generator | None, device: Device) -> Device:
    # torch requires the generator and the output to share a device.
    return generator.device if generator is not None else device


def _finish(samples: Tensor, device: Device) -> Tensor:
    return samples if device is None else samples.to(device)


def _mixture(
    n: int,
    centers: Tensor,
    std: float,
    generator: torch.Generator | None,
    device: Device,
    dtype: torch.dtype,
) -> ToyData:
    """Equal-weight isotropic Gaussian mixture around ``centers`` (float64, CPU)."""
    where = _sampling_device(generator, device)
    mode = torch.randint(len(centers), (n,), generator=generator, device=where)
    noise = torch.randn(n, 2, generator=generator, device=where, dtype=dtype)
    samples = _finish(centers.to(device=where, dtype=dtype)[mode] + std * noise, device)
    return ToyData(samples, centers.to(device=samples.device, dtype=dtype), std)


def ring(
    n: int,
    num_modes: int = 8,
    radius: float = 1.0,
    std: float = 0.01,
    generator: torch.Generator | None = None,
    device: Device = None,
    dtype: torch.dtype = torch.float32,
) -> ToyData:
    r"""Equal-weight mixture of Gaussians evenly spaced on a circle.

    Mode ``k`` is centred at ``radius * (cos(2 pi k / m), sin(2 pi k / m))``, ``k = 0..m-1``.

    Args:
        n: Number of samples.
        num_modes: Number of modes ``m``.
        radius: Circle radius.
        std: Standard deviation of each (isotropic) component.
        generator: Optional generator for reproducibility.
        device: Device of the returned tensors.
        dtype: Floating-point dtype of the returned tensors.

    Returns:
        ``ToyData(samples (n, 2), centers (m, 2), std)``.

    Raises:
        ValueError: If ``n`` or ``num_modes`` is below 1, ``radius <= 0`` or ``std < 0``.

    Example:
        >>> data = ring(1000, generator=torch.Generator().manual_seed(0))
        >>> data.samples.shape, data.centers.shape
        (torch.Size([1000, 2]), torch.Size([8, 2]))
    """
    n = _check_count("n", n)
    num_modes = _check_count("num_modes", num_modes)
    radius = _check_scale("radius", radius, positive=True)
    std = _check_scale("std", std)
    angles = 2 * math.pi * torch.arange(num_modes, dtype=torch.float64) / num_modes
    centers = radius * torch.stack([angles.cos(), angles.sin()], dim=-1)
    return _mixture(n, centers, std, generator, device, dtype)


def grid(
    n: int,
    std: float = 0.05,
    num_per_side: int = 5,
    spacing: float = 2.0,
    generator: torch.Generator | None = None,
    device: Device = None,
    dtype: torch.dtype = torch.float32,
) -> ToyData:
    r"""Equal-weight mixture of Gaussians centred on a square grid around the origin.

    With the defaults the 25 centres are ``{-4, -2, 0, 2, 4}^2``, in row-major order (the second
    coordinate varies fastest).

    Args:
        n: Number of samples.
        std: Standard deviation of each (isotropic) component.
        num_per_side: Number of centres along each axis.
        spacing: Distance between neighbouring centres.
        generator: Optional generator for reproducibility.
        device: Device of the returned tensors.
        dtype: Floating-point dtype of the returned tensors.

    Returns:
        ``ToyData(samples (n, 2), centers (num_per_side**2, 2), std)``.

    Raises:
        ValueError: If ``n`` or ``num_per_side`` is below 1, ``spacing <= 0`` or ``std < 0``.

    Example:
        >>> grid(10).centers[:3]
        tensor([[-4., -4.],
                [-4., -2.],
                [-4.,  0.]])
    """
    n = _check_count("n", n)
    num_per_side = _check_count("num_per_side", num_per_side)
    spacing = _check_scale("spacing", spacing, positive=True)
    std = _check_scale("std", std)
    axis = (torch.arange(num_per_side, dtype=torch.float64) - (num_per_side - 1) / 2) * spacing
    centers = torch.cartesian_prod(axis, axis).reshape(-1, 2)
    return _mixture(n, centers, std, generator, device, dtype)


def two_moons(
    n: int,
    noise: float = 0.05,
    generator: torch.Generator | None = None,
    device: Device = None,
    dtype: torch.dtype = torch.float32,
) -> ToyData:
    r"""Two interleaved half circles of radius 1, plus Gaussian noise.

    Each point picks a moon with probability 1/2 and an angle ``t`` uniform in ``[0, pi]``: the
    upper moon is ``(cos t, sin t)``, the lower one ``(1 - cos t, 0.5 - sin t)``.

    Args:
        n: Number of samples.
        noise: Standard deviation of the isotropic Gaussian noise.
        generator: Optional generator for reproducibility.
        device: Device of the returned tensors.
        dtype: Floating-point dtype of the returned tensors.

    Returns:
        ``ToyData(samples (n, 2), None, noise)``.

    Raises:
        ValueError: If ``n < 1`` or ``noise < 0``.

    Example:
        >>> two_moons(500, generator=torch.Generator().manual_seed(0)).samples.shape
        torch.Size([500, 2])
    """
    n = _check_count("n", n)
    noise = _check_scale("noise", noise)
    where = _sampling_device(generator, device)
    lower = torch.randint(2, (n,), generator=generator, device=where).bool()
    t = math.pi * torch.rand(n, generator=generator, device=where, dtype=dtype)
    upper_xy = torch.stack([t.cos(), t.sin()], dim=-1)
    lower_xy = torch.stack([1 - t.cos(), 0.5 - t.sin()], dim=-1)
    samples = torch.where(lower.unsqueeze(-1), lower_xy, upper_xy)
    samples = samples + noise * torch.randn(n, 2, generator=generator, device=where, dtype=dtype)
    return ToyData(_finish(samples, device), None, noise)


def spiral(
    n: int,
    noise: float = 0.05,
    num_arms: int = 2,
    turns: float = 1.5,
    radius: float = 1.0,
    generator: torch.Generator | None = None,
    device: Device = None,
    dtype: torch.dtype = torch.float32,
) -> ToyData:
    r"""Interleaved Archimedean spiral arms, plus Gaussian noise.

    A point on arm ``a`` at relative position ``s`` in ``[0, 1]`` is
    ``radius * s * (cos phi, sin phi)`` with ``phi = 2 pi (turns * s + a / num_arms)``. Arms are
    chosen with equal probability and ``s = sqrt(U)``, ``U`` uniform, which spreads points
    roughly evenly along each arm.

    Args:
        n: Number of samples.
        noise: Standard deviation of the isotropic Gaussian noise.
        num_arms: Number of arms, rotated ``2 pi / num_arms`` from each other.
        turns: Number of turns each arm makes.
        radius: Distance from the origin at the end of each arm.
        generator: Optional generator for reproducibility.
        device: Device of the returned tensors.
        dtype: Floating-point dtype of the returned tensors.

    Returns:
        ``ToyData(samples (n, 2), None, noise)``.

    Raises:
        ValueError: If ``n`` or ``num_arms`` is below 1, ``turns`` or ``radius`` is not
            positive, or ``noise < 0``.

    Example:
        >>> spiral(500, generator=torch.Generator().manual_seed(0)).samples.shape
        torch.Size([500, 2])
    """
    n = _check_count("n", n)
    num_arms = _check_count("num_arms", num_arms)
    turns = _check_scale("turns", turns, positive=True)
    radius = _check_scale("radius", radius, positive=True)
    noise = _check_scale("noise", noise)
    where = _sampling_device(generator, device)
    arm = torch.randint(num_arms, (n,), generator=generator, device=where)
    # Arc length grows like s^2 on an Archimedean spiral, so s = sqrt(U) is near-uniform in it.
    s = torch.rand(n, generator=generator, device=where, dtype=dtype).sqrt()
    phi = 2 * math.pi * (turns * s + arm.to(dtype) / num_arms)
    samples = radius * s.unsqueeze(-1) * torch.stack([phi.cos(), phi.sin()], dim=-1)
    samples = samples + noise * torch.randn(n, 2, generator=generator, device=where, dtype=dtype)
    return ToyData(_finish(samples, device), None, noise)


def spiral_curve(
    points_per_arm: int,
    num_arms: int = 2,
    turns: float = 1.5,
    radius: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Points on the noise-free arms of :func:`spiral`, each carrying equal probability.

    On every arm the ``k``-th point sits at ``s_k = sqrt((k + 1/2) / K)``, the midpoint in
    probability of the ``k``-th of ``K = points_per_arm`` equal slices of ``s = sqrt(U)``; so
    consecutive groups of points are segments of equal mass, and the share of a sample set
    nearest each group estimates that segment's probability. Neighbouring points on an arm are
    about ``pi turns radius / K`` apart on its outer part and farther near the centre (at
    most 0.025 with the defaults and ``K = 500``).

    Args:
        points_per_arm: Number of points ``K`` on each arm.
        num_arms, turns, radius: The spiral's, as in :func:`spiral`.
        dtype: Floating-point dtype of the points.

    Returns:
        The points ``(num_arms * points_per_arm, 2)``, arm by arm, from the centre outwards.

    Raises:
        ValueError: If ``points_per_arm`` or ``num_arms`` is below 1, or ``turns`` or
            ``radius`` is not positive.

    Example:
        >>> spiral_curve(4).shape
        torch.Size([8, 2])
    """
    points_per_arm = _check_count("points_per_arm", points_per_arm)
    num_arms = _check_count("num_arms", num_arms)
    turns = _check_scale("turns", turns, positive=True)
    radius = _check_scale("radius", radius, positive=True)
    k = torch.arange(points_per_arm, dtype=torch.float64)
    s = ((k + 0.5) / points_per_arm).sqrt().repeat(num_arms)
    arm = torch.arange(num_arms, dtype=torch.float64).repeat_interleave(points_per_arm)
    phi = 2 * math.pi * (turns * s + arm / num_arms)
    return (radius * s.unsqueeze(-1) * torch.stack([phi.cos(), phi.sin()], dim=-1)).to(dtype)
