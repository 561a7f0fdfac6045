"""Critic-tilted latent sampling against closed forms: a Gaussian generator tilted by a
Gaussian log ratio is a Gaussian whose mean and covariance are known."""

import math

import pytest
import torch
from torch import nn

from pyrogen.inference.latent_tilt import tilted_sample

N = 4000  # chains, one independent draw each


def test_identity_generator_tilted_to_a_known_gaussian():
    # q = N(0, 1); r = log N(x; m, s) - log N(x; 0, 1), so q e^r = N(m, s^2) exactly.
    m, s = 1.5, 0.5
    normal = torch.distributions.Normal

    def r(x):
        return (normal(m, s).log_prob(x) - normal(0.0, 1.0).log_prob(x)).sum(-1)

    out = tilted_sample(nn.Identity(), r, N, 1, generator=torch.Generator().manual_seed(0))
    x = out.x.squeeze(-1).double()
    assert out.x.shape == (N, 1) and out.z.shape == (N, 1)
    # Independent chains: standard errors of the mean and of the variance of a Gaussian.
    assert abs(x.mean() - m) < 4 * s / math.sqrt(N)
    assert abs(x.var() - s**2) < 4 * s**2 * math.sqrt(2 / (N - 1))
    assert 0.3 < out.acceptance < 0.9


def test_linear_generator_tilt_matches_the_gaussian_product():
    # x = A z + b has q = N(b, A A^T); the tilt exp(-c |x|^2) multiplies it by N(0, I / 2c):
    # precision P = (A A^T)^-1 + 2c I, mean P^-1 (A A^T)^-1 b.
    a = torch.tensor([[2.0, 0.0], [0.5, 1.0]])
    b = torch.tensor([1.0, -1.0])
    c = 0.3
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.copy_(a)
        net.bias.copy_(b)
    out = tilted_sample(
        net, lambda x: -c * x.pow(2).sum(-1), N, 2, generator=torch.Generator().manual_seed(1)
    )
    sigma_q = (a @ a.T).double()
    precision = torch.linalg.inv(sigma_q) + 2 * c * torch.eye(2, dtype=torch.float64)
    cov = torch.linalg.inv(precision)
    mean = cov @ torch.linalg.solve(sigma_q, b.double())
    x = out.x.double()
    se_mean = (cov.diagonal() / N).sqrt()
    assert ((x.mean(0) - mean).abs() < 4 * se_mean).all()
    emp = torch.cov(x.T)
    # s.e. of a sample covariance entry: sqrt((S_ij^2 + S_ii S_jj) / (N - 1)).
    se_cov = ((cov**2 + cov.diagonal()[:, None] * cov.diagonal()[None, :]) / (N - 1)).sqrt()
    assert ((emp - cov).abs() < 4 * se_cov).all()


def test_networks_are_put_back_in_their_mode():
    net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net.train()
    tilted_sample(net, lambda x: -x.pow(2).sum(-1), 8, 2, num_warmup=5)
    assert net.training


def test_bad_input_is_refused():
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="one value per sample"):
        tilted_sample(net, lambda x: x, 16, 2, num_warmup=2)
    with pytest.raises(ValueError, match="num_samples"):
        tilted_sample(net, lambda x: x.sum(-1), 1, 2)
    with pytest.raises(ValueError, match="latent_dim"):
        tilted_sample(net, lambda x: x.sum(-1), 16, 0)
    with pytest.raises(ValueError, match="kernel"):
        tilted_sample(net, lambda x: x.sum(-1), 16, 2, kernel="ula")
