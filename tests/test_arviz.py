import warnings

import arviz as az
import matplotlib
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS

from pyrogen.inference.mcmc import sample
from pyrogen.inference.mcmc.pyro_kernel import PyroKernel
from pyrogen.metrics import to_arviz

matplotlib.use("Agg")


def model(y):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.HalfNormal(2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(loc, scale), obs=y)


Y = torch.tensor([1.2, 0.3, 2.2, 1.7, 0.9, 1.4])


def check_everything_works(idata, num_chains, num_samples, full_stats=True):
    assert idata.posterior["loc"].shape == (num_chains, num_samples)
    stats = idata.sample_stats
    assert stats["diverging"].dtype == bool
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own shape/precision warnings on short runs
        summary = az.summary(idata)
        assert list(summary.index) == ["loc", "scale"]
        assert float(az.ess(idata)["loc"]) > 0
        rhat = float(az.rhat(idata)["loc"])  # NaN for a single chain, by definition
        assert rhat > 0 if num_chains > 1 else rhat != rhat
        az.plot_trace(idata)
        if full_stats:
            for name in ("acceptance_rate", "energy", "lp", "step_size"):
                assert stats[name].shape == (num_chains, num_samples), name
            assert az.bfmi(idata).shape == (num_chains,)


def test_pyrogen_draws_export():
    result = sample(
        model=model,
        model_args=(Y,),
        num_chains=4,
        num_warmup=100,
        num_samples=50,
        progress=False,
    )
    idata = to_arviz(result)
    check_everything_works(idata, 4, 50)
    assert idata.sample_stats["n_steps"].shape == (4, 50)
    assert to_arviz(result).posterior["scale"].values.min() > 0
    assert result.to_arviz().posterior["loc"].shape == (4, 50)


def test_pyro_mcmc_with_the_adapter_exports_all_statistics():
    mcmc = MCMC(
        PyroKernel(model, num_steps=4), num_samples=40, warmup_steps=40, disable_progbar=True
    )
    mcmc.run(Y)
    check_everything_works(to_arviz(mcmc), 1, 40)


def test_pyro_nuts_exports_posterior_and_divergences():
    mcmc = MCMC(NUTS(model), num_samples=30, warmup_steps=30, disable_progbar=True)
    mcmc.run(Y)
    idata = to_arviz(mcmc)
    check_everything_works(idata, 1, 30, full_stats=False)
    assert int(idata.sample_stats["diverging"].sum()) == len(
        mcmc.diagnostics()["divergences"]["chain 0"]
    )


def test_bad_sources_are_refused():
    with pytest.raises(TypeError, match="MCMCResult or a pyro.infer.MCMC"):
        to_arviz({"loc": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="not been run"):
        to_arviz(MCMC(NUTS(model), num_samples=3, disable_progbar=True))
