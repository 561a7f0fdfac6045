import warnings

import arviz as az
import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import HMC, MCMC, NUTS

from pyrogen.inference.mcmc import sample
from pyrogen.inference.mcmc.pyro_kernel import PyroKernel
from pyrogen.metrics import to_arviz
from pyrogen.metrics.arviz import PyroStatsRecorder

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
    with pytest.raises(TypeError, match="MCMCResult, a pyro.infer.MCMC or GuideDraws"):
        to_arviz({"loc": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="not been run"):
        to_arviz(MCMC(NUTS(model), num_samples=3, disable_progbar=True))


# Pyro's own HMC and NUTS with PyroStatsRecorder. A float64 copy of the model above, so that
# the identities below hold to float64 rounding.
F64 = torch.float64
Y64 = Y.to(F64)


def model64(y):
    loc = pyro.sample("loc", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
    scale = pyro.sample("scale", dist.HalfNormal(torch.tensor(2.0, dtype=F64)))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(loc, scale), obs=y)


def unconstrained_log_density(loc, scale):
    """log p(loc, scale, Y) + log |d scale / d log scale|: minus Pyro's potential energy."""
    zero, ten, two = (torch.tensor(v, dtype=F64) for v in (0.0, 10.0, 2.0))
    log_joint = (
        dist.Normal(zero, ten).log_prob(loc)
        + dist.HalfNormal(two).log_prob(scale)
        + dist.Normal(loc[..., None], scale[..., None]).log_prob(Y64).sum(-1)
    )
    return log_joint + scale.log()


@pytest.mark.parametrize("kernel_name", ["NUTS", "HMC"])
def test_recorder_exports_pyro_hmc_and_nuts_statistics(kernel_name):
    kernel = NUTS(model64) if kernel_name == "NUTS" else HMC(model64, num_steps=3)
    recorder = PyroStatsRecorder(kernel)
    running_means = []

    def hook(kernel, params, stage, i):  # the recorder, and Pyro's running mean beside it
        recorder(kernel, params, stage, i)
        running_means.append(kernel._mean_accept_prob)

    num_samples = 300 if kernel_name == "NUTS" else 200
    mcmc = MCMC(kernel, num_samples, warmup_steps=100, hook_fn=hook, disable_progbar=True)
    mcmc.run(Y64)
    idata = to_arviz(mcmc)
    check_everything_works(idata, 1, num_samples)
    stats = {k: v.values[0] for k, v in idata.sample_stats.items()}
    assert set(stats) == {
        "acceptance_rate",
        "step_size",
        "lp",
        "energy",
        "n_steps",
        "diverging",
    } | ({"tree_depth"} if kernel_name == "NUTS" else set())
    bfmi = az.bfmi(idata)
    assert bfmi.shape == (1,) and np.isfinite(bfmi).all() and bfmi[0] > 0

    # Per-draw acceptance recovered from Pyro's running means: its mean is Pyro's final one.
    accept = stats["acceptance_rate"]
    assert ((accept >= 0) & (accept <= 1)).all()
    assert accept.mean() == pytest.approx(running_means[-1], abs=1e-12)
    assert stats["diverging"].sum() == len(mcmc.diagnostics()["divergences"]["chain 0"])
    assert (stats["step_size"] == float(kernel.step_size)).all()  # fixed after warm-up

    # lp is the log density of the exported draw itself (tolerance: float64 rounding of a
    # dozen terms of size < 100, and of exp/log through the constraint transform).
    samples = mcmc.get_samples()
    expected_lp = unconstrained_log_density(samples["loc"], samples["scale"]).numpy()
    np.testing.assert_allclose(stats["lp"], expected_lp, rtol=0, atol=1e-10)

    # energy is the Hamiltonian at the start of each transition: U at the previous draw plus
    # the kinetic energy of the momentum drawn there, K = |z|^2 / 2 with z ~ N(0, I_d): iid
    # chi2_d / 2, mean d/2, sd sqrt(d/2), whatever the mass matrix.
    kinetic = stats["energy"][1:] + stats["lp"][:-1]
    d, n = 2, len(kinetic)
    assert (kinetic >= 0).all()
    assert abs(kinetic.mean() - d / 2) < 5 * (d / 2) ** 0.5 / n**0.5

    n_steps = stats["n_steps"]
    if kernel_name == "HMC":
        assert (n_steps == kernel.num_steps).all()
    else:  # d valid doublings make 2^d - 1 leapfrog steps, plus at most 2^d in a last one
        depth = stats["tree_depth"]
        assert ((2**depth - 1 <= n_steps) & (n_steps <= 2 ** (depth + 1) - 1)).all()
        assert n_steps.min() >= 1 and depth.max() > 1


@pytest.mark.parametrize("parallel", [False, True])
def test_recorder_follows_chains_and_runs(parallel, monkeypatch):
    # Pyro runs chains in worker processes when num_chains < cpu_count, else one after the
    # other in this process; both paths, whatever this machine has.
    monkeypatch.setattr(pyro.infer.mcmc.api.mp, "cpu_count", lambda: 3 if parallel else 1)
    kernel = NUTS(model64)
    recorder = PyroStatsRecorder(kernel)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "num_chains=2 is more than available_cpu")
        mcmc = MCMC(kernel, 40, 20, num_chains=2, hook_fn=recorder, disable_progbar=True)
    assert type(mcmc.sampler).__name__ == ("_MultiSampler" if parallel else "_UnarySampler")
    for _ in range(2):  # a second run starts new records
        mcmc.run(Y64)
        idata = to_arviz(mcmc)
        for name in ("acceptance_rate", "lp", "energy", "n_steps", "tree_depth"):
            assert idata.sample_stats[name].shape == (2, 40), name
        lp = idata.sample_stats["lp"].values
        samples = mcmc.get_samples(group_by_chain=True)
        expected = unconstrained_log_density(samples["loc"], samples["scale"]).numpy()
        np.testing.assert_allclose(lp, expected, rtol=0, atol=1e-10)
        assert not np.array_equal(lp[0], lp[1])
        assert np.isfinite(az.bfmi(idata)).all()


def test_recorder_misuse_is_refused():
    kernel = NUTS(model64)
    recorder = PyroStatsRecorder(kernel)
    with pytest.raises(ValueError, match="already has a recorder"):
        PyroStatsRecorder(kernel)
    with pytest.raises(TypeError, match="HMC or NUTS"):
        PyroStatsRecorder(PyroKernel(model))

    mcmc = MCMC(kernel, num_samples=5, warmup_steps=5, disable_progbar=True)
    mcmc.run(Y64)  # recorder built, never passed as hook_fn
    with pytest.raises(ValueError, match="hook_fn=recorder"):
        to_arviz(mcmc)

    other = MCMC(NUTS(model64), 5, 5, hook_fn=recorder, disable_progbar=True)
    with pytest.raises(ValueError, match="not built on"):
        other.run(Y64)


def test_only_hamiltonian_draws_export_an_energy():
    """MALA's per-draw potential is no Hamiltonian: exported as energy, az.bfmi would read it
    as one. MALA exports lp only; HMC keeps energy, and its BFMI."""
    potential = lambda z: 0.5 * (z**2).sum(-1)  # noqa: E731
    runs = {
        kernel: sample(
            potential,
            torch.randn(4, 2, dtype=torch.float64),
            kernel=kernel,
            num_warmup=50,
            num_samples=40,
            progress=False,
        )
        for kernel in ("mala", "hmc")
    }
    mala, hmc = (to_arviz(runs[k]).sample_stats for k in ("mala", "hmc"))
    assert "energy" not in mala and "n_steps" not in mala
    assert mala["lp"].shape == (4, 40)
    assert hmc["energy"].shape == (4, 40)
    assert np.isfinite(az.bfmi(to_arviz(runs["hmc"]))).all()
