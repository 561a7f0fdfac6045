import math

import torch
from test_hmc import projections_pass

from pyrogen.inference.mcmc import langevin


def test_mala_leaves_the_target_invariant(gaussian):
    state = langevin.init(gaussian.draw(4000), gaussian.potential)
    for _ in range(20):
        state, info = langevin.mala_step(state, gaussian.potential, 0.3, gaussian.cov.diagonal())
    assert 0.3 < info.acceptance_prob.mean() < 0.99
    assert projections_pass(state.position, gaussian.draw(4000))


def test_ula_stationary_variance_matches_its_closed_form():
    """On N(0, s^2), ULA with step h is stationary at variance s^2 / (1 - h / (2 s^2))."""
    s2, h, n = 2.0, 1.0, 20000
    v = s2 / (1 - h / (2 * s2))
    potential = lambda z: 0.5 * (z**2).sum(-1) / s2  # noqa: E731
    state = langevin.init(math.sqrt(v) * torch.randn(n, 1, dtype=torch.float64), potential)
    for _ in range(30):
        state, info = langevin.ula_step(state, potential, h)
    assert info.is_accepted.all()
    var = state.position.var().item()
    se = v * math.sqrt(2 / (n - 1))  # standard error of a Gaussian sample variance
    assert abs(var - v) < 5 * se
    assert abs(var - s2) > 10 * se  # and it is distinguishable from the target's


def test_mala_acceptance_uses_the_proposal_correction():
    """For a Gaussian target, MALA with step h accepts every move only in the h -> 0 limit."""
    potential = lambda z: 0.5 * (z**2).sum(-1)  # noqa: E731
    state = langevin.init(torch.randn(2000, 3, dtype=torch.float64), potential)
    _, small = langevin.mala_step(state, potential, 1e-4)
    _, large = langevin.mala_step(state, potential, 1.5)
    assert small.acceptance_prob.mean() > 0.999
    assert large.acceptance_prob.mean() < 0.9
