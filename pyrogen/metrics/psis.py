r"""Pareto-smoothed importance sampling: how far a guide can be trusted, and its moments
reweighted towards the posterior.

The shape :math:`\hat k` of a generalized Pareto fitted to the largest importance weights
:math:`p(x, z_s) / q(z_s)`, :math:`z_s \sim q`, says whether their variance is finite
(Vehtari, Simpson, Gelman, Yao & Gabry 2024, "Pareto smoothed importance sampling", JMLR 25;
Yao, Vehtari, Simpson & Gelman 2018 for its use on variational posteriors): below
:math:`\min(1 - 1/\log_{10} S, 0.7)` the PSIS estimates are reliable at S draws; above 0.7 the
guide misses mass the posterior has (a mean-field guide of a correlated posterior, say),
whatever the number of draws. The fit and the smoothing are ArviZ's ``psislw``; this module
feeds it a guide's weights and reweights the draws.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from pyrogen.metrics.guide_draws import GuideDraws

__all__ = ["khat_threshold", "psis_khat", "psis_moments", "psis_smooth"]


def khat_threshold(num_samples: int) -> float:
    r""":math:`\min(1 - 1/\log_{10} S, 0.7)`: the largest :math:`\hat k` at which PSIS with S
    draws is reliable (Vehtari et al. 2024)."""
    if num_samples < 11:
        return -math.inf  # 1 - 1/log10(S) <= 0 below 11 draws: no tail can be trusted
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7)


def _as_weights(log_weight: Tensor | np.ndarray | GuideDraws) -> np.ndarray:
    if isinstance(log_weight, GuideDraws):
        log_weight = log_weight.log_weight
    if isinstance(log_weight, Tensor):
        log_weight = log_weight.detach().double().cpu().numpy()
    lw = np.asarray(log_weight, dtype=np.float64)
    if lw.ndim == 0 or lw.shape[0] < 2:
        raise ValueError(f"need at least 2 draws (draws first), got shape {lw.shape}")
    if not np.isfinite(lw).all():
        raise ValueError("the log-weights contain NaN or infinite values")
    return lw


def _constant(lw: np.ndarray) -> np.ndarray:
    """Where the log-weights are equal up to float32 rounding (an exact guide): there is no
    tail, and ArviZ's fit of one returns infinity."""
    spread = lw.max(0) - lw.min(0)
    return spread <= 1e-5 * np.maximum(1.0, np.abs(lw).max(0))


def psis_smooth(log_weight: Tensor | np.ndarray | GuideDraws) -> tuple[np.ndarray, np.ndarray]:
    r"""Pareto-smoothed, normalized log-weights and :math:`\hat k`.

    Args:
        log_weight: shape ``(S, ...)``, the draws first (or a :class:`GuideDraws`).

    Returns:
        ``(log_weights, khat)``: the smoothed log-weights, normalized over the draws, in the
        input's shape; :math:`\hat k` per trailing index, ``-inf`` where the weights are
        constant (an exact guide: every estimate is exact).
    """
    import arviz as az

    lw = _as_weights(log_weight)
    flat = np.moveaxis(lw, 0, -1)  # ArviZ wants the draws last
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its message on k > 0.7; ours is k
        smoothed, khat = az.psislw(flat.copy(), reff=1.0)
    smoothed, khat = np.moveaxis(np.asarray(smoothed), -1, 0), np.asarray(khat, dtype=np.float64)
    const = _constant(lw)
    if const.any():
        uniform = np.full_like(lw, -math.log(lw.shape[0]))
        smoothed = np.where(const, uniform, smoothed)
        khat = np.where(const, -np.inf, khat)
    return smoothed, khat


def psis_khat(log_weight: Tensor | np.ndarray | GuideDraws) -> np.ndarray:
    r""":math:`\hat k` of the importance weights (see :func:`psis_smooth`): a 0-d array for
    one weight per draw, one per data point for ``(S, N)``."""
    return psis_smooth(log_weight)[1]


def psis_moments(draws: GuideDraws) -> dict[str, tuple[Tensor, Tensor]]:
    r"""Posterior means and standard deviations of every site, reweighted by the smoothed
    importance weights (one weight per draw: a model with global latents).

    Returns:
        per site ``(mean, sd)``, each of the site's shape; trust them where
        :func:`psis_khat` is below :func:`khat_threshold`.
    """
    if draws.log_weight.dim() != 1:
        raise ValueError(
            "psis_moments needs one weight per draw (global latents); these weights have "
            f"shape {tuple(draws.log_weight.shape)}: reweight each data point's latents apart"
        )
    smoothed, _ = psis_smooth(draws)
    out = {}
    for name, value in draws.samples.items():
        w = torch.as_tensor(np.exp(smoothed), dtype=torch.float64, device=value.device)
        w = w.reshape(-1, *([1] * (value.dim() - 1)))
        v = value.double()
        mean = (w * v).sum(0)
        var = (w * (v - mean) ** 2).sum(0)
        out[name] = (mean.to(value.dtype), var.sqrt().to(value.dtype))
    return out
