import math

import numpy as np
import pytest
import torch

from pyrogen.inference.mcmc import hmc, sample
from pyrogen.inference.mcmc.adaptation import (
    dual_averaging_init,
    dual_averaging_update,
    warmup_windows,
    welford_init,
    welford_update,
    welford_variance,
)
from pyrogen.inference.mcmc.chees import chees_init, chees_update, halton


def test_dual_averaging_finds_the_step_size_of_the_target_acceptance():
    """With acceptance exp(-step), the step size that gives 0.65 is -log(0.65)."""
    state = dual_averaging_init(torch.tensor(5.0, dtype=torch.float64))
    for _ in range(2000):
        step = state.log_step_size.exp()
        state = dual_averaging_update(state, torch.exp(-step), 0.65)
    assert state.log_step_size_avg.exp().item() == pytest.approx(-math.log(0.65), rel=0.02)


def test_dual_averaging_runs_one_step_size_per_chain():
    state = dual_averaging_init(torch.ones(3, dtype=torch.float64))
    scales = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    for _ in range(2000):
        state = dual_averaging_update(state, torch.exp(-state.log_step_size.exp() * scales), 0.65)
    expected = -math.log(0.65) / scales
    assert torch.allclose(state.log_step_size_avg.exp(), expected, rtol=0.02)


def test_pooled_welford_equals_the_variance_over_all_chains_and_draws():
    draws = torch.randn(30, 8, 3, dtype=torch.float64) * torch.tensor([0.1, 1.0, 5.0]) + 2
    state = welford_init(draws[0])
    for t in range(draws.shape[0]):
        state = welford_update(state, draws[t])
    flat = draws.reshape(-1, 3).numpy()
    assert state.num_draws == 240
    assert np.allclose(state.mean.numpy(), flat.mean(0))
    assert np.allclose(welford_variance(state, regularize=False).numpy(), flat.var(0, ddof=1))
    n = 240
    expected = n / (n + 5) * flat.var(0, ddof=1) + 1e-3 * 5 / (n + 5)
    assert np.allclose(welford_variance(state).numpy(), expected)
    with pytest.raises(ValueError, match="two draws"):
        welford_variance(welford_init(draws[0]))


def test_warmup_windows_follow_stans_schedule():
    # 1000 iterations: buffer 75, windows 25, 50, 100, 200, 500, terminal buffer 50
    assert warmup_windows(1000) == [(75, 99), (100, 149), (150, 249), (250, 449), (450, 949)]
    assert warmup_windows(100) == [(15, 89)]
    assert warmup_windows(10) == []


def test_halton_points_fill_the_unit_interval_evenly():
    points = [halton(i) for i in range(1, 8)]
    assert points == [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]


def test_mass_matrix_learns_the_scales():
    """Variances 0.01 .. 100: the pooled inverse mass matrix finds them."""
    scales = torch.logspace(-1, 1, 6, dtype=torch.float64)
    potential = lambda z: 0.5 * ((z / scales) ** 2).sum(-1)  # noqa: E731
    result = sample(
        potential,
        torch.randn(64, 6, dtype=torch.float64),
        num_warmup=500,
        num_samples=10,
        progress=False,
    )
    ratio = result.inverse_mass / scales**2
    assert ((ratio > 0.7) & (ratio < 1.4)).all()  # 64 x 200 pooled draws in the last window
    assert result.trajectory_length is not None


# For a standard Gaussian, a small step and lengths jittered uniformly in (0, T): the lag-one
# autocorrelation of the mean is rho(T) = sin(T) / T, and the criteria per gradient are
#   ESS:   (1 - rho) / ((1 + rho) T), one maximum at T = 3.98 (0.367), within 15 % of it on
#          [3.08, 4.85];
#   ChEES: h(T) = 1/(2T) - sin(2T)/(4T^2), one maximum at T = 1.6 (0.318), within 15 % of it
#          on [1.0, 2.25] (h(1.0) = 0.273, h(2.25) = 0.270).
# Stochastic ascent on a flat top wanders inside the band, not beyond.
OPTIMA = {"ess_per_gradient": (3.08, 4.85), "chees_per_gradient": (1.0, 2.25)}


@pytest.mark.parametrize("criterion", sorted(OPTIMA))
@pytest.mark.parametrize("start", [0.3, 8.0])
def test_trajectory_length_moves_to_its_optimum_from_both_sides(start, criterion):
    potential = lambda z: 0.5 * (z**2).sum(-1)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    state, step = chees_init(start), 0.05
    for i in range(1, 301):
        chains = hmc.init(torch.randn(500, 6, dtype=torch.float64, generator=g), potential)
        u = halton(i)
        steps = max(1, math.ceil(u * math.exp(state.log_length) / step))
        _, info = hmc.step(chains, potential, step, steps, generator=g)
        state = chees_update(
            state,
            chains.position,
            info.proposal,
            info.proposal_momentum,
            info.acceptance_prob,
            info.is_divergent,
            u,
            1.0,
            step,
            criterion=criterion,
        )
    low, high = OPTIMA[criterion]
    assert low < math.exp(state.log_length) < high


def test_an_unknown_criterion_is_refused():
    with pytest.raises(ValueError, match="trajectory_criterion must be one of"):
        chees_update(
            chees_init(1.0),
            *[torch.zeros(2, 1)] * 3,
            torch.ones(2),
            torch.zeros(2, dtype=torch.bool),
            0.5,
            1.0,
            0.1,
            criterion="chees",
        )
