import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC
from test_sample import conjugate, conjugate_posterior, mcse

from pyrogen.inference.mcmc import sample
from pyrogen.inference.mcmc.pyro_kernel import PyroKernel


@pytest.mark.parametrize("kernel", ["hmc", "mala"])
def test_pyro_mcmc_drives_the_kernel_to_the_conjugate_posterior(kernel):
    g = torch.Generator().manual_seed(1)
    y = 3 + 2 * torch.randn(15, generator=g, dtype=torch.float64)
    counts = torch.poisson(torch.full((12,), 4.0, dtype=torch.float64), generator=g)
    mcmc = MCMC(
        PyroKernel(conjugate, kernel=kernel, num_steps=5),
        num_samples=2000 if kernel == "mala" else 1000,
        warmup_steps=300,
        disable_progbar=True,
    )
    mcmc.run(y, counts)
    samples = mcmc.get_samples(group_by_chain=True)
    assert (samples["rate"] > 0).all()  # Pyro applied the kernel's transforms
    draws = np.stack([samples["loc"].numpy(), samples["rate"].numpy()], -1)
    mean, cov = conjugate_posterior(y.numpy(), counts.numpy())
    assert (np.abs(draws.mean((0, 1)) - mean) <= 5 * mcse(draws)).all()
    squares = (draws - mean) ** 2
    assert (np.abs(squares.mean((0, 1)) - np.diag(cov)) <= 5 * mcse(squares)).all()
    diag = mcmc.diagnostics()
    assert 0.3 < diag["acceptance rate"]["chain 0"] <= 1
    stats = diag["pyrogen_stats"]["chain 0"]
    if kernel == "hmc":
        assert stats["energy"].shape == (draws.shape[1],)
    else:  # MALA has no Hamiltonian to export (az.bfmi would read the potential as one)
        assert "energy" not in stats and stats["lp"].shape == (draws.shape[1],)
    if kernel == "hmc":  # the step size is jittered per transition, as in sample()
        assert stats["step_size"].std() > 0


def test_initial_params_from_pyro_are_used():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    kernel = PyroKernel(model, step_size=1e-3, num_steps=1, adapt_step_size=False)
    mcmc = MCMC(
        kernel,
        num_samples=1,
        warmup_steps=0,
        initial_params={"x": torch.tensor(3.0)},
        disable_progbar=True,
    )
    mcmc.run()
    assert abs(mcmc.get_samples()["x"].item() - 3.0) < 0.2


def test_bad_kernel_arguments_are_refused():
    with pytest.raises(ValueError, match="'hmc' or 'mala'"):
        PyroKernel(conjugate, kernel="ula")
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        PyroKernel(conjugate, num_steps=0)
    with pytest.raises(ValueError, match=r"step_size_jitter must be in \[0, 1\)"):
        PyroKernel(conjugate, step_size_jitter=1.0)


def test_pyro_mcmc_and_sample_share_one_warm_up():
    """One chain, ten jittered leapfrog steps, the global RNG from the same seed: the adapter
    under pyro.infer.MCMC and sample() run the same window adaptation, so they adapt the same
    step size and mass matrix and give the same draws."""
    g = torch.Generator().manual_seed(1)
    y = 3 + 2 * torch.randn(15, generator=g, dtype=torch.float64)
    counts = torch.poisson(torch.full((12,), 4.0, dtype=torch.float64), generator=g)
    pyro.set_rng_seed(5)
    kernel = PyroKernel(conjugate, num_steps=10)
    mcmc = MCMC(kernel, num_samples=50, warmup_steps=150, disable_progbar=True)
    mcmc.run(y, counts)
    pyro.set_rng_seed(5)
    result = sample(
        model=conjugate,
        model_args=(y, counts),
        num_chains=1,
        num_warmup=150,
        num_samples=50,
        num_steps=10,
        progress=False,
    )
    assert result.step_size is not None and result.inverse_mass is not None
    assert torch.equal(kernel.step_size, result.step_size)
    assert torch.equal(kernel.inverse_mass, result.inverse_mass)
    for name, draws in mcmc.get_samples().items():
        assert torch.allclose(draws, result.samples[name][0], rtol=1e-12, atol=0), name
