"""Posterior moments from batched runs against closed forms, within Monte Carlo error."""

import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrogen.inference.mcmc import ONE_CHAIN_NUM_STEPS, sample
from pyrogen.warnings import PyrogenWarning

K = 5  # tolerance in Monte Carlo standard errors; a handful of checks per test


def mcse(draws: np.ndarray) -> np.ndarray:
    """Monte Carlo standard error of the mean of (chain, draw, ...) draws, from ArviZ's ESS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # arviz: more chains than draws
        return az.mcse(az.convert_to_dataset(draws))["x"].values


def rhat(draws: np.ndarray) -> np.ndarray:
    return az.rhat(az.convert_to_dataset(draws))["x"].values


def check_moments(draws: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> None:
    """Means, variances and one covariance within K MCSE; R-hat at most 1.01."""
    assert rhat(draws).max() <= 1.01
    assert (np.abs(draws.mean((0, 1)) - mean) <= K * mcse(draws)).all()
    centered = draws - mean
    squares = centered**2
    assert (np.abs(squares.mean((0, 1)) - np.diag(cov)) <= K * mcse(squares)).all()
    if draws.shape[-1] > 1:
        cross = centered[..., 0] * centered[..., 1]
        assert abs(cross.mean() - cov[0, 1]) <= K * mcse(cross[..., None])[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # HMC, ChEES trajectory length, shared step size
        {"num_steps": 5, "shared_step_size": False, "num_samples": 1000},
        {"kernel": "mala", "num_samples": 1500},
    ],
    ids=["hmc-chees", "hmc-per-chain-step", "mala"],
)
def test_correlated_gaussian_moments(gaussian, kwargs):
    kwargs = {"num_warmup": 500, "num_samples": 500, **kwargs}
    start = torch.rand(16, gaussian.dim, dtype=torch.float64) * 4 - 2
    result = sample(gaussian.potential, start, progress=False, **kwargs)
    draws = result.samples["z"].numpy()
    assert draws.shape == (16, kwargs["num_samples"], gaussian.dim)
    check_moments(draws, gaussian.mean.numpy(), gaussian.cov.numpy())
    assert result.stats["diverging"].sum() == 0


def conjugate(y, counts):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    with pyro.plate("y", len(y)):
        pyro.sample("obs_y", dist.Normal(loc, 2.0), obs=y)
    with pyro.plate("counts", len(counts)):
        pyro.sample("obs_counts", dist.Poisson(rate), obs=counts)


def conjugate_posterior(y, counts):
    """Normal-Normal (known noise 2) and Gamma(2, 1)-Poisson: exact means and variances."""
    precision = 1 / 100 + len(y) / 4
    loc_mean, loc_var = (y.sum() / 4) / precision, 1 / precision
    a, b = 2 + counts.sum(), 1 + len(counts)
    return np.array([loc_mean, a / b]), np.diag([loc_var, a / b**2])


def test_conjugate_model_posterior_through_pyro_transforms():
    g = torch.Generator().manual_seed(0)
    y = 3 + 2 * torch.randn(15, generator=g, dtype=torch.float64)
    counts = torch.poisson(torch.full((12,), 4.0, dtype=torch.float64), generator=g)
    result = sample(
        model=conjugate,
        model_args=(y, counts),
        num_chains=8,
        num_warmup=500,
        num_samples=500,
        progress=False,
    )
    assert result.samples["rate"].shape == (8, 500) and (result.samples["rate"] > 0).all()
    draws = np.stack([result.samples["loc"].numpy(), result.samples["rate"].numpy()], -1)
    mean, cov = conjugate_posterior(y.numpy(), counts.numpy())
    check_moments(draws, mean, cov)


def test_half_cauchy_scale_model_samples():
    def model(y):
        scale = pyro.sample("scale", dist.HalfCauchy(1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(0.0, scale), obs=y)

    y = 1.5 * torch.randn(30)
    result = sample(
        model=model,
        model_args=(y,),
        num_chains=4,
        num_warmup=200,
        num_samples=200,
        progress=False,
    )
    scale = result.samples["scale"].double()
    assert (scale > 0).all() and torch.isfinite(scale).all()
    # The posterior of a single scale, by quadrature on a fine grid, is exact enough to test
    # the Monte Carlo mean against its own standard error.
    grid = torch.linspace(1e-3, 10.0, 200001, dtype=torch.float64)
    log_post = dist.HalfCauchy(1.0).log_prob(grid) + dist.Normal(0.0, grid[:, None]).log_prob(
        y.double()
    ).sum(1)
    weights = torch.softmax(log_post, 0)
    exact = (weights * grid).sum().item()
    assert abs(scale.mean().item() - exact) <= K * mcse(scale.numpy()[..., None])[0]


def test_statistics_have_one_value_per_chain_and_draw(gaussian):
    result = sample(
        gaussian.potential,
        gaussian.draw(4),
        num_warmup=50,
        num_samples=30,
        thin=2,
        progress=False,
    )
    for name in ("acceptance_rate", "diverging", "energy", "lp", "step_size", "num_steps"):
        assert result.stats[name].shape == (4, 30), name
    assert torch.allclose(
        result.stats["lp"][:, -1], -gaussian.potential(result.final_state.position)
    )
    assert result.num_chains == 4 and result.num_samples == 30


def test_fixed_step_size_without_adaptation_is_kept(gaussian):
    result = sample(
        gaussian.potential,
        gaussian.draw(4),
        num_warmup=10,
        num_samples=10,
        step_size=0.1,
        num_steps=3,
        adapt_step_size=False,
        adapt_mass_matrix=False,
        progress=False,
    )
    assert (result.stats["num_steps"] == 3).all()
    jitter = result.stats["step_size"] / 0.1  # a uniform factor in [0.8, 1.2] per transition
    assert (jitter >= 0.8).all() and (jitter <= 1.2).all() and jitter.std() > 0.05
    assert (result.inverse_mass == 1).all()


def test_chains_with_a_non_finite_potential_diverge_and_the_rest_sample():
    """After the start, chains 0 and 1 see NaN at every proposal: they never move and count
    every transition as divergent; the other chains sample N(0, I) undisturbed."""
    calls = {"n": 0}

    def potential(z):
        calls["n"] += 1
        u = 0.5 * (z**2).sum(-1)
        if calls["n"] > 1:
            u = torch.cat([torch.full_like(u[:2], float("nan")), u[2:]])
        return u

    start = torch.randn(8, 2, dtype=torch.float64)
    with pytest.warns(PyrogenWarning, match="600 of 2400 transitions after warm-up diverged"):
        result = sample(
            potential,
            start,
            num_warmup=200,
            num_samples=300,
            step_size=0.5,
            num_steps=4,
            adapt_step_size=False,
            adapt_mass_matrix=False,
            progress=False,
        )
    z = result.samples["z"]
    assert torch.equal(z[:2], start[:2, None].expand(2, 300, 2))
    assert result.stats["diverging"][:2].all() and result.warmup_divergences[:2].eq(200).all()
    assert (result.stats["acceptance_rate"][:2] == 0).all()
    assert not result.stats["diverging"][2:].any() and result.warmup_divergences[2:].eq(0).all()
    squares = z[2:].numpy() ** 2  # E[z^2] = 1 under N(0, I)
    assert (abs(squares.mean((0, 1)) - 1) <= K * mcse(squares)).all()


def test_interrupted_sampling_returns_the_draws_so_far(gaussian):
    calls = {"n": 0}

    def potential(z):
        calls["n"] += 1
        if calls["n"] > 200:
            raise KeyboardInterrupt
        return gaussian.potential(z)

    with pytest.warns(PyrogenWarning, match="interrupted"):
        result = sample(
            potential,
            gaussian.draw(4),
            num_warmup=20,
            num_samples=1000,
            num_steps=2,
            progress=False,
        )
    assert 0 < result.num_samples < 1000
    assert result.stats["lp"].shape == (4, result.num_samples)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel": "nuts"}, "unknown kernel"),
        ({"num_samples": 0}, "num_samples must be a positive integer"),
        ({"num_warmup": -1}, "num_warmup must be a non-negative integer"),
        ({"num_steps": 0}, "num_steps must be a positive integer"),
        ({"step_size": -1.0}, "step_size must be positive"),
        ({"kernel": "ula"}, "give step_size and adapt_step_size=False"),
        ({"target_accept": 1.5}, r"target_accept must be in \(0, 1\)"),
        ({"num_chains": 3}, "num_chains=3 but initial_position has 4 rows"),
        ({"thin": 0}, "thin must be a positive integer"),
        ({"step_size_jitter": 1.0}, r"step_size_jitter must be in \[0, 1\)"),
        ({"trajectory_criterion": "chees"}, "trajectory_criterion must be one of"),
    ],
)
def test_bad_arguments_are_refused(gaussian, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(gaussian.potential, gaussian.draw(4), progress=False, **kwargs)


def test_missing_targets_are_refused(gaussian):
    with pytest.raises(ValueError, match="initial_position"):
        sample(gaussian.potential, progress=False)
    with pytest.raises(ValueError, match="give a potential_fn"):
        sample(progress=False)
    with pytest.raises(ValueError, match="give num_chains"):
        sample(model=conjugate, model_args=(torch.ones(2), torch.ones(2)), progress=False)
    with pytest.raises(ValueError, match="not both"):
        sample(gaussian.potential, model=conjugate, progress=False)


def test_one_chain_runs_a_fixed_number_of_steps_with_a_warning(gaussian):
    """ChEES's criterion is the spread between chains, zero for one chain: the length used to
    stay where the seed-dependent step-size search left it. Now it is ONE_CHAIN_NUM_STEPS
    leapfrog steps whatever the seed, and the user is told."""
    for seed in (0, 1):
        with pytest.warns(PyrogenWarning, match="ChEES needs two chains or more"):
            result = sample(
                gaussian.potential,
                gaussian.draw(1),
                num_warmup=60,
                num_samples=20,
                generator=torch.Generator().manual_seed(seed),
                progress=False,
            )
        assert (result.stats["num_steps"] == ONE_CHAIN_NUM_STEPS).all()
        assert result.trajectory_length is None
        assert result.stats["step_size"].std() > 0  # the step size is jittered instead
    two = sample(gaussian.potential, gaussian.draw(2), num_warmup=60, num_samples=5, progress=False)
    assert two.trajectory_length is not None  # two chains: ChEES, no warning


# Non-centred eight schools (Rubin's data).
EIGHT_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=torch.float64)
EIGHT_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=torch.float64)


def eight_schools(y, sigma):
    zero = torch.tensor(0.0, dtype=torch.float64)
    mu = pyro.sample("mu", dist.Normal(zero, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(zero + 5.0))
    with pyro.plate("school", len(y)):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(zero, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_tilde)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def test_eight_schools_at_the_default_target_has_no_divergent_draws():
    """At 0.651 this run has divergent draws (about 0.4 % at 64 chains); the default target
    acceptance is chosen so that it has none. Without the fix the warning below is raised,
    which the suite turns into an error."""
    result = sample(
        model=eight_schools,
        model_args=(EIGHT_Y, EIGHT_SIGMA),
        num_chains=64,
        num_warmup=300,
        num_samples=200,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert result.stats["diverging"].sum() == 0


def test_divergent_draws_are_reported():
    """A step of 3 on N(0, 1) is past leapfrog's stability limit of 2: the energy error
    grows without bound and every transition diverges; the warning counts them."""
    with pytest.warns(PyrogenWarning, match="80 of 80 transitions after warm-up diverged"):
        result = sample(
            lambda z: 0.5 * (z**2).sum(-1),
            torch.randn(4, 2, dtype=torch.float64),
            num_warmup=10,
            num_samples=20,
            step_size=3.0,
            num_steps=50,
            step_size_jitter=0.0,
            adapt_step_size=False,
            progress=False,
        )
    assert result.stats["diverging"].all()


def test_deterministic_sites_are_returned_with_the_draws():
    result = sample(
        model=eight_schools,
        model_args=(EIGHT_Y, EIGHT_SIGMA),
        num_chains=4,
        num_warmup=50,
        num_samples=30,
        progress=False,
    )
    s = result.samples
    assert s["theta"].shape == (4, 30, 8)
    assert torch.equal(s["theta"], s["mu"][..., None] + s["tau"][..., None] * s["theta_tilde"])
    posterior = result.to_arviz().posterior
    assert np.array_equal(posterior["theta"].values, s["theta"].numpy())
