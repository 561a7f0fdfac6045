"""PSIS k-hat and reweighted moments of guides, against closed forms.

For a Gaussian target p = N(m, S) and guide q = N(m, S_q), E_q[w^r] is finite exactly while
r P - (r - 1) P_q stays positive definite (P, P_q the precisions), so the weights' tail shape
is k = 1 - l_min, l_min the smallest eigenvalue of P_q^(-1/2) P P_q^(-1/2).
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrogen.metrics import (
    GuideDraws,
    draw_guide,
    khat_threshold,
    psis_khat,
    psis_moments,
    psis_smooth,
)
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian

Z = 5.0
D, RHO = 10, 0.9
COV = (1 - RHO) * torch.eye(D) + RHO * torch.ones(D, D)
MEAN = torch.linspace(-1.0, 1.0, D)
PRECISION = torch.linalg.inv(COV)


def target() -> None:
    pyro.sample("z", dist.MultivariateNormal(MEAN, COV))


def mean_field_guide() -> None:
    """The mean-field optimum of KL(q || p): variances 1 / P_ii."""
    pyro.sample("z", dist.Normal(MEAN, torch.diagonal(PRECISION).rsqrt()).to_event(1))


def wide_guide() -> None:
    """The target's shape, 1.2 times wider: every moment of the weights is finite."""
    pyro.sample("z", dist.MultivariateNormal(MEAN, 1.44 * COV))


def exact_guide() -> None:
    pyro.sample("z", dist.MultivariateNormal(MEAN, COV))


def true_k(guide_precision: torch.Tensor) -> float:
    root = torch.linalg.cholesky(torch.linalg.inv(guide_precision))
    return 1.0 - float(torch.linalg.eigvalsh(root.T @ PRECISION @ root).min())


def test_threshold_follows_vehtari_et_al_2024() -> None:
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(1000) == pytest.approx(1 - 1 / 3)
    assert khat_threshold(10**6) == 0.7
    assert khat_threshold(10) == -math.inf


def test_mean_field_guide_of_a_correlated_gaussian_is_flagged() -> None:
    """Closed form k = 0.988 for the mean-field optimum of the 0.9-correlated 10-d Gaussian;
    at 64,000 draws k-hat's spread over seeds is about 0.08 (measured over 8 seeds:
    0.76-0.99), so 0.7 is 3.5 of it below the truth."""
    k = true_k(torch.diag(torch.diagonal(PRECISION)))
    assert k == pytest.approx(0.988, abs=1e-3)
    pyro.set_rng_seed(0)
    khat = psis_khat(draw_guide(target, mean_field_guide, num_samples=64000))
    assert khat.shape == () and float(khat) > 0.7 > khat_threshold(64000) - 1e-9


def test_wider_guide_is_trusted_and_its_reweighted_moments_are_the_targets() -> None:
    """k = 1 - 1.44 < 0 for the wider guide; the PSIS moments recover the target's mean and
    sd within Z standard errors (from the smoothed weights' effective sample size), while
    the guide's own sd is 1.2 times too large."""
    assert true_k(PRECISION / 1.44) == pytest.approx(-0.44, abs=1e-4)
    pyro.set_rng_seed(1)
    draws = draw_guide(target, wide_guide, num_samples=20000)
    smoothed, khat = psis_smooth(draws)
    assert float(khat) < 0.5
    ess = 1.0 / float(np.exp(2 * smoothed).sum())
    mean, sd = psis_moments(draws)["z"]
    truth_sd = torch.diagonal(COV).sqrt()
    assert ((mean - MEAN).abs() < Z * truth_sd / math.sqrt(ess)).all(), (mean, ess)
    assert ((sd - truth_sd).abs() < Z * truth_sd / math.sqrt(2 * ess)).all(), (sd, ess)
    raw_sd = draws.samples["z"].std(0)
    assert ((raw_sd - 1.2 * truth_sd).abs() < Z * 1.2 * truth_sd / math.sqrt(2 * 20000)).all()


def test_exact_guide_has_constant_weights_and_no_tail() -> None:
    """Constant weights (ArviZ's fit returns infinity there) give k-hat = -inf and the plain
    moments."""
    pyro.set_rng_seed(2)
    draws = draw_guide(target, exact_guide, num_samples=500)
    torch.testing.assert_close(draws.log_weight, torch.zeros(500), rtol=0, atol=1e-4)
    smoothed, khat = psis_smooth(draws)
    assert float(khat) == -math.inf
    np.testing.assert_allclose(smoothed, -math.log(500))
    mean, sd = psis_moments(draws)["z"]
    torch.testing.assert_close(mean, draws.samples["z"].mean(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(sd, draws.samples["z"].std(0, correction=0), rtol=0, atol=1e-5)


def test_one_khat_per_data_point_for_local_latents() -> None:
    """A VAE-like model: weights (S, N), one k-hat per point; the exact amortized guide gives
    -inf everywhere, a guide half as wide a tail near its closed form
    k = 1 - 0.25 = 0.75 (spread over seeds about 0.07) above 0.5."""
    model = ConjugateGaussian(dim=2)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    pyro.set_rng_seed(3)
    exact = draw_guide(model, AmortizedGaussianGuide(dim=2).exact(model), x, num_samples=300)
    assert exact.log_weight.shape == (300, 5)
    assert (psis_khat(exact) == -math.inf).all()
    narrow = AmortizedGaussianGuide(dim=2).exact(model)
    with torch.no_grad():
        narrow.log_scale.add_(math.log(0.5))
    khat = psis_khat(draw_guide(model, narrow, x, num_samples=20000))
    assert khat.shape == (5,) and (khat > 0.5).all(), khat


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 draws"):
        psis_khat(torch.zeros(1))
    with pytest.raises(ValueError, match="NaN or infinite"):
        psis_khat(torch.tensor([0.0, float("nan"), 1.0]))
    draws = GuideDraws({"z": torch.zeros(4, 3)}, torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="one weight per draw"):
        psis_moments(draws)
