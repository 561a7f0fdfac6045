r"""Warm-up adaptation shared by the gradient kernels: step size and diagonal mass matrix.

* Dual averaging of :math:`\log \epsilon` towards a target acceptance (Algorithm 5 of
  The No-U-Turn Sampler, Hoffman & Gelman, 2014, https://arxiv.org/abs/1111.4246), with
  :math:`\gamma = 0.05, t_0 = 10, \kappa = 0.75`. The state is a tensor, so it runs for one
  shared step size or one per chain with the same code.
* A diagonal inverse mass matrix from Welford's running variance, pooled across chains
  (Chan et al.'s parallel update with a whole batch of chains at once), regularised towards
  1e-3 as Stan does, and estimated in Stan's doubling windows. With ``dense=True`` the same
  estimator runs on the flattened position's covariance (the sum of outer products instead
  of squares, Stan's ``dense_e`` metric) and the window closes on a
  :class:`~pyrogen.inference.mcmc.mass.DenseInverseMass`, regularised towards
  :math:`10^{-3} I`.

Updating Formulae and a Pairwise Algorithm for Computing Sample Variances (Chan, Golub &
LeVeque, 1979), https://doi.org/10.1007/978-3-642-51461-6_3.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pyrogen.inference.mcmc.mass import DenseInverseMass

__all__ = [
    "DualAveragingState",
    "WelfordState",
    "dual_averaging_init",
    "dual_averaging_update",
    "mass_window_step",
    "warmup_windows",
    "welford_covariance",
    "welford_init",
    "welford_update",
    "welford_variance",
]


class DualAveragingState(NamedTuple):
    """Tensors shaped like the step size (a scalar, or one per chain)."""

    log_step_size: Tensor
    log_step_size_avg: Tensor
    gradient_avg: Tensor
    mu: Tensor
    iteration: int


def dual_averaging_init(step_size: Tensor) -> DualAveragingState:
    """Start averaging; the shrinkage point is :math:`\\log(10 \\epsilon_0)`."""
    log_step = step_size.log()
    zero = torch.zeros_like(log_step)
    return DualAveragingState(log_step, zero, zero, math.log(10.0) + log_step, 0)


def dual_averaging_update(
    state: DualAveragingState,
    acceptance: Tensor,
    target: float,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> DualAveragingState:
    """One update from the acceptance statistic (shaped like the step size)."""
    t = state.iteration + 1
    eta = 1.0 / (t + t0)
    gradient_avg = (1 - eta) * state.gradient_avg + eta * (target - acceptance)
    log_step = state.mu - math.sqrt(t) / gamma * gradient_avg
    weight = t**-kappa
    log_avg = weight * log_step + (1 - weight) * state.log_step_size_avg
    return DualAveragingState(log_step, log_avg, gradient_avg, state.mu, t)


class WelfordState(NamedTuple):
    """Running count, mean and sum of squared deviations over chains and draws.

    Diagonal: ``mean`` and ``m2`` shaped like one chain's event. Dense (``dense=True``):
    ``mean`` is ``(D,)`` over the flattened event and ``m2`` the ``(D, D)`` sum of outer
    products of deviations.
    """

    num_draws: int
    mean: Tensor
    m2: Tensor
    dense: bool = False


def welford_init(like: Tensor, dense: bool = False) -> WelfordState:
    """Empty estimate for events shaped like ``like[0]`` (dense: their covariance)."""
    if dense:
        d = like[0].numel()
        mean = torch.zeros(d, dtype=like.dtype, device=like.device)
        return WelfordState(0, mean, torch.zeros(d, d, dtype=like.dtype, device=like.device), True)
    zero = torch.zeros_like(like[0])
    return WelfordState(0, zero, zero.clone())


def welford_update(state: WelfordState, draws: Tensor) -> WelfordState:
    """Add one draw of every chain, ``(num_chains, *event_shape)``, in one parallel update.

    Chan et al.'s merge of two partial estimates: with the batch's count :math:`n_b`, mean
    and sum of squares (dense: of outer products), :math:`M_2 \\leftarrow M_2 + M_{2,b} +
    \\delta \\delta^\\top n_a n_b / n`, :math:`\\delta` the difference of the means.
    """
    if state.dense:
        return _dense_update(state, draws.reshape(draws.shape[0], -1))
    n_b = draws.shape[0]
    mean_b = draws.mean(0)
    m2_b = ((draws - mean_b) ** 2).sum(0)
    n = state.num_draws + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * (n_b / n)
    m2 = state.m2 + m2_b + delta**2 * (state.num_draws * n_b / n)
    return WelfordState(n, mean, m2)


def _dense_update(state: WelfordState, draws: Tensor) -> WelfordState:
    """:func:`welford_update` for ``(num_chains, D)`` draws and a ``(D, D)`` sum."""
    n_b = draws.shape[0]
    mean_b = draws.mean(0)
    centered = draws - mean_b
    m2_b = centered.T @ centered
    n = state.num_draws + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * (n_b / n)
    m2 = state.m2 + m2_b + torch.outer(delta, delta) * (state.num_draws * n_b / n)
    return WelfordState(n, mean, m2, True)


def welford_variance(state: WelfordState, regularize: bool = True) -> Tensor:
    """Sample variance; regularised like Stan: ``n/(n+5) var + 1e-3 * 5/(n+5)``."""
    if state.dense:
        raise ValueError("a dense Welford estimate gives a covariance: use welford_covariance")
    return _estimate(state, regularize, "a variance")


def welford_covariance(state: WelfordState, regularize: bool = True) -> Tensor:
    """Sample covariance ``(D, D)`` of a dense estimate; regularised like Stan's ``dense_e``
    metric: ``n/(n+5) cov + 1e-3 * 5/(n+5) * I``, which also keeps it positive definite when
    the pooled draws are fewer than ``D``."""
    if not state.dense:
        raise ValueError("a diagonal Welford estimate gives a variance: use welford_variance")
    return _estimate(state, regularize, "a covariance")


def _estimate(state: WelfordState, regularize: bool, what: str) -> Tensor:
    """``m2 / (n - 1)``, shrunk towards ``1e-3`` (times the identity when dense) as Stan does."""
    if state.num_draws < 2:
        raise ValueError(f"{what} needs at least two draws")
    estimate = state.m2 / (state.num_draws - 1)
    if not regularize:
        return estimate
    n = state.num_draws
    shrink = 1e-3 * (5.0 / (n + 5.0))
    if state.dense:
        eye = torch.eye(estimate.shape[0], dtype=estimate.dtype, device=estimate.device)
        return (n / (n + 5.0)) * estimate + shrink * eye
    return (n / (n + 5.0)) * estimate + shrink


def mass_window_step(
    welford: WelfordState,
    inverse_mass: Tensor | DenseInverseMass,
    windows: list[tuple[int, int]],
    iteration: int,
    position: Tensor,
) -> tuple[WelfordState, Tensor | DenseInverseMass, bool]:
    """Feed warm-up iteration ``iteration``'s positions to the window it falls in.

    Returns the running estimate, the inverse mass matrix and whether a window closed at this
    iteration (the matrix is then the new estimate and the estimate starts afresh): the
    caller restarts its step-size (and trajectory) adaptation then. A dense estimate closes
    on a :class:`~pyrogen.inference.mcmc.mass.DenseInverseMass`.
    """
    closed = False
    for first, last in windows:
        if first <= iteration <= last:
            welford = welford_update(welford, position)
        if iteration == last:
            if welford.dense:
                inverse_mass = DenseInverseMass.from_matrix(welford_covariance(welford))
            else:
                inverse_mass = welford_variance(welford)
            welford, closed = welford_init(position, welford.dense), True
    return welford, inverse_mass, closed


def warmup_windows(num_warmup: int) -> list[tuple[int, int]]:
    """Mass-matrix windows ``(first, last)`` (0-based, inclusive), Stan's schedule.

    A fast initial buffer (75 iterations), slow windows doubling from 25, a terminal buffer
    (50); shorter warm-ups are split 15 % / 75 % / 10 % as Stan does. Under 20 iterations
    there is no window.
    """
    if num_warmup < 20:
        return []
    init_buffer, term_buffer, base = 75, 50, 25
    if init_buffer + term_buffer + base > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base = num_warmup - init_buffer - term_buffer
    windows: list[tuple[int, int]] = []
    start, size = init_buffer, base
    last = num_warmup - term_buffer
    while start < last:
        end = start + size
        if end + 2 * size > last:  # the next window would not fit: stretch this one
            end = last
        windows.append((start, end - 1))
        start, size = end, 2 * size
    return windows
