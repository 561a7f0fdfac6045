"""AIS of log p(x) for Pyro models with local latents, against the conjugate Gaussian's
closed-form evidence: forward below, reverse above, both converging."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrogen.metrics.latent_ais import ais_log_likelihood
from pyrogen.models import ConjugateGaussian

Z = 5.0


def _errors(model: ConjugateGaussian, x: torch.Tensor, num_steps: int) -> tuple[float, ...]:
    """(forward - truth, its s.e., reverse - truth, its s.e.), means over the points."""
    truth = model.log_marginal(x).detach()
    forward = ais_log_likelihood(model, x, num_chains=8, num_steps=num_steps)
    loc, sd = model.posterior(x)
    exact = (loc + sd * torch.randn(8, *x.shape)).detach()  # exact posterior draws
    reverse = ais_log_likelihood(
        model,
        x,
        num_chains=8,
        num_steps=num_steps,
        reverse_from=exact,
        step_sizes=forward.step_sizes,
    )
    n = x.shape[0]
    out = []
    for est in (forward, reverse):
        out += [float((est.per_point - truth).mean()), float(est.mc_stderr.pow(2).sum().sqrt() / n)]
    return tuple(out)


@pytest.mark.slow
def test_forward_below_reverse_above_and_both_converge() -> None:
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    model = ConjugateGaussian(dim=2, prior_loc=0.3, prior_scale=1.0, obs_scale=0.5)
    x = torch.randn(30, 2) * 1.2
    short = _errors(model, x, 20)
    long = _errors(model, x, 300)
    for fwd, fwd_se, rev, rev_se in (short, long):
        assert fwd < Z * fwd_se, (fwd, fwd_se)  # a stochastic lower bound
        assert rev > -Z * rev_se, (rev, rev_se)  # a stochastic upper bound
    # the short schedule's bracket is wide, the long one's closes on the truth
    assert short[0] < -Z * short[1], short  # the forward estimate is clearly low there
    assert abs(long[0]) < Z * long[1] and abs(long[2]) < Z * long[3], long
    gap_se = math.sqrt(sum(se**2 for se in (short[1], short[3], long[1], long[3])))
    assert long[2] - long[0] < short[2] - short[0] - Z * gap_se, (short, long)


def test_bad_input() -> None:
    model = ConjugateGaussian(dim=2)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="num_steps"):
        ais_log_likelihood(model, x, num_steps=0)
    with pytest.raises(ValueError, match="pilot_chains"):
        ais_log_likelihood(model, x, num_steps=2, pilot_chains=0)
    with pytest.raises(ValueError, match="reverse_from must have shape"):
        ais_log_likelihood(model, x, num_steps=2, reverse_from=torch.zeros(3, 4, 2))

    def discrete(v: torch.Tensor) -> None:
        with pyro.plate("data", v.shape[0]):
            k = pyro.sample("k", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(k.unsqueeze(-1), 1.0).to_event(1), obs=v)

    with pytest.raises(ValueError, match="discrete"):
        ais_log_likelihood(discrete, x, num_steps=2)
    assert math.isfinite(ais_log_likelihood(model, x, num_steps=3, num_chains=2).mean)


def test_starting_at_the_exact_posterior_every_weight_is_log_p_x() -> None:
    """Exact identity: with r the posterior, log p(x, z) - log r(z) = log p(x) for every z,
    so every run's weight is the evidence, whatever the temperatures."""
    model = ConjugateGaussian(dim=2, prior_loc=0.3, prior_scale=1.0, obs_scale=0.5)
    x = torch.randn(6, 2)
    loc, sd = model.posterior(x)
    out = ais_log_likelihood(
        model, x, num_chains=4, num_steps=5, start=(loc.detach(), sd.expand(6, 2).detach())
    )
    truth = model.log_marginal(x).detach().expand(4, 6)
    torch.testing.assert_close(out.log_weights, truth, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="start must be"):
        ais_log_likelihood(model, x, num_steps=2, start=(loc[:3], sd.expand(3, 2)))


def positive_model(v: torch.Tensor) -> None:
    """The conjugate model of the test above written in s = exp(u) > 0."""
    with pyro.plate("data", v.shape[0]):
        s = pyro.sample("s", dist.LogNormal(0.3, 1.0).expand([2]).to_event(1))
        pyro.sample("x", dist.Normal(s.log(), 0.5).to_event(1), obs=v)


def test_a_positive_latent_is_annealed_in_unconstrained_coordinates() -> None:
    """Exact identity: in u = log s the model is the conjugate Gaussian, so started at its
    posterior over u every weight is log p(x), which only holds when the prior density
    carries log |det J| (without it every weight is off by sum u)."""
    conjugate = ConjugateGaussian(dim=2, prior_loc=0.3, prior_scale=1.0, obs_scale=0.5)
    x = torch.randn(6, 2)
    loc, sd = conjugate.posterior(x)
    out = ais_log_likelihood(
        positive_model,
        x,
        num_chains=4,
        num_steps=5,
        start=(loc.detach(), sd.expand(6, 2).detach()),
        pilot_chains=1,  # a cheaper pilot: the schedule is still one per point
    )
    assert out.step_sizes.shape == (5, 6)
    truth = conjugate.log_marginal(x).detach().expand(4, 6)
    torch.testing.assert_close(out.log_weights, truth, rtol=0, atol=1e-4)
