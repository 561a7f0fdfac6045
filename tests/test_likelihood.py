"""The importance-sampled log-likelihood against the closed form of a conjugate model."""

import math

import pytest
import torch

from pyrogen.metrics import active_units, log_likelihood
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian

Z = 5.0


def test_exact_guide_gives_exact_log_likelihood_with_zero_mc_error() -> None:
    model = ConjugateGaussian(dim=3)
    guide = AmortizedGaussianGuide(dim=3).exact(model)
    x = torch.randn(40, 3, dtype=torch.float64)
    model.double(), guide.double()
    ll = log_likelihood(model, guide, x, num_samples=30, particle_chunk=7, batch_size=9)
    torch.testing.assert_close(ll.per_point, model.log_marginal(x).detach())
    # zero up to rounding: the sqrt of per-point variance ratios of order 1e-15
    assert ll.mc_stderr < 1e-7
    assert ll.stderr == pytest.approx(float(ll.per_point.std() / math.sqrt(40)))


def test_mismatched_guide_converges_within_its_standard_error() -> None:
    model = ConjugateGaussian(dim=2)
    guide = AmortizedGaussianGuide(dim=2).set_to(0.6, 0.2, 0.6)
    x = torch.randn(300, 2)
    exact = float(model.log_marginal(x).detach().mean())
    ll = log_likelihood(model, guide, x, num_samples=5000, particle_chunk=1000, batch_size=150)
    # the estimate is biased low by about Var/(2K), far below its Monte Carlo error here
    assert abs(ll.mean - exact) < Z * ll.mc_stderr, (ll.mean, exact, ll.mc_stderr)
    assert ll.mc_stderr > 0
    # K = 1 is the ELBO, below log p(x) by the KL on every point: a paired test on the gaps
    small = log_likelihood(model, guide, x, num_samples=1)
    gap = model.log_marginal(x).detach() - small.per_point
    assert float(gap.mean()) > Z * float(gap.std()) / math.sqrt(len(gap))
    assert math.isnan(small.mc_stderr)  # one particle cannot estimate its own variance


def test_active_units_counts_data_dependent_dimensions() -> None:
    guide = AmortizedGaussianGuide(dim=4)
    with torch.no_grad():
        guide.weight.copy_(torch.tensor([0.8, 0.0, 0.5, 0.0]))
    count, variances = active_units(guide, torch.randn(2000, 4))
    assert count == 2
    assert variances[1] == 0 and variances[3] == 0


@pytest.mark.parametrize(
    "kwargs", [{"num_samples": 0}, {"particle_chunk": -1}, {"batch_size": 2.5}]
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    model, guide = ConjugateGaussian(), AmortizedGaussianGuide()
    with pytest.raises(ValueError, match="positive int"):
        log_likelihood(model, guide, torch.randn(5, 1), **kwargs)  # type: ignore[arg-type]
