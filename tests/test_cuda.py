"""The same checks on every device: every objective's contract, the exact identities of the
importance and AIS estimators, and the batched samplers against a Gaussian's closed form.

Each test runs on the CPU everywhere and on CUDA where a GPU is present
(``pytest -k cuda`` runs the GPU half; ``benchmarks/gpu.py`` runs it on a GPU machine). On
the GPU they catch what the CPU cannot: a tensor or generator created on the wrong device
inside the library.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from test_contract import CASES, Problem, _total

from pyrogen.inference import IWAE, NCE, Objective, Trainer
from pyrogen.inference.mcmc import sample
from pyrogen.metrics import log_likelihood
from pyrogen.metrics.latent_ais import ais_log_likelihood
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
Z = 5.0


def _on(device: str, obj: Objective, problem: Problem) -> tuple[Objective, Problem]:
    """The contract case with every module and the data moved to ``device``; NCE, whose
    noise is a distribution, is built again with its noise there, as a user would build it."""
    if isinstance(obj, NCE):
        noise = dist.Normal(torch.zeros(2, device=device), 2.0).to_event(1)
        obj = NCE(noise, nu=obj.nu, learn_log_normalizer=obj.normalizer is not None)
        if obj.normalizer is not None:
            problem.modules["log_normalizer"] = obj.normalizer
    for module in problem.modules.values():
        module.to(device)
    return obj, problem._replace(x=problem.x.to(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_contract_on_device(name: str, device: str) -> None:
    """A finite scalar loss on the device whose gradients reach every parameter, through
    ``differentiable_loss`` and through two optimiser steps of the module form."""
    pyro.clear_param_store()
    obj, (model, guide, x, modules, _) = _on(device, *CASES[name](True))
    out = obj.differentiable_loss(model, guide, x)
    parts = [out] if isinstance(out, torch.Tensor) else list(out)
    for part in parts:
        assert part.shape == () and torch.isfinite(part) and part.device == x.device, part
    params = {f"{m}.{k}": v for m, module in modules.items() for k, v in module.named_parameters()}
    grads = torch.autograd.grad(_total(out), list(params.values()))
    for (pname, p), g in zip(params.items(), grads, strict=True):
        assert g.device == p.device == x.device, pname
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0, pname
    module = obj(model, guide)
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(2):
        opt.zero_grad()
        loss = _total(module(x))
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)


@pytest.mark.parametrize("device", DEVICES)
def test_log_likelihood_at_the_exact_posterior_is_exact(device: str) -> None:
    """Every importance weight is log p(x) when the guide is the posterior: the estimate
    equals the closed form on any device, at K = 5000 in chunks."""
    model = ConjugateGaussian(dim=3, prior_loc=0.3).to(device)
    guide = AmortizedGaussianGuide(dim=3).exact(model).to(device)
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)).to(device)
    ll = log_likelihood(model, guide, x, num_samples=5000, particle_chunk=1000, batch_size=16)
    assert ll.per_point.device == x.device
    truth = model.log_marginal(x).detach()
    torch.testing.assert_close(ll.per_point, truth, rtol=0, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_latent_ais_from_the_exact_posterior_is_exact(device: str) -> None:
    model = ConjugateGaussian(dim=2, prior_loc=0.3).to(device)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1)).to(device)
    loc, sd = model.posterior(x)
    out = ais_log_likelihood(
        model, x, num_chains=4, num_steps=5, start=(loc.detach(), sd.expand(6, 2).detach())
    )
    truth = model.log_marginal(x).detach().expand(4, 6)
    assert out.log_weights.device == x.device
    torch.testing.assert_close(out.log_weights, truth, rtol=0, atol=1e-4)


def _gaussian() -> tuple[torch.Tensor, torch.Tensor]:
    """A correlated 3-d Gaussian target: mean and covariance."""
    mean = torch.tensor([1.0, -2.0, 0.5])
    chol = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.3, 0.4, 2.0]])
    return mean, chol @ chol.T


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["hmc", "mala"])
def test_batched_sampler_recovers_a_gaussian_on_device(kernel: str, device: str) -> None:
    """256 chains: every coordinate's mean within Z Monte Carlo standard errors of the truth
    (the s.e. from Pyro's ESS of the draws), and its variance within Z of its s.e."""
    mean, cov = _gaussian()
    mean, precision = mean.to(device), torch.linalg.inv(cov).to(device)

    def potential(z: torch.Tensor) -> torch.Tensor:
        d = z - mean
        return 0.5 * ((d @ precision) * d).sum(-1)

    gen = torch.Generator(device=device).manual_seed(0)
    init = torch.rand(256, 3, device=device, generator=gen) * 4 - 2
    result = sample(
        potential,
        init,
        kernel=kernel,
        num_warmup=300,
        num_samples=200,
        generator=gen,
        progress=False,
    )
    draws = result.samples["z"]  # (chains, draws, 3)
    assert draws.device == init.device
    draws = draws.double().cpu()
    ess = pyro.ops.stats.effective_sample_size(draws, chain_dim=0, sample_dim=1)
    assert float(ess.min()) > 1000, ess  # enough for the tolerances below to mean something
    truth_var = torch.diagonal(cov).double()
    mean_se = (truth_var / ess).sqrt()
    err = (draws.mean((0, 1)) - mean.double().cpu()).abs()
    assert (err < Z * mean_se).all(), (err, mean_se)
    # var of a sample variance of a normal: 2 sigma^4 / ESS (ESS of the squares is lower
    # than that of the draws for HMC; a factor 2 of slack on the ESS is allowed for it)
    var_se = (2 * truth_var**2 / (ess / 2)).sqrt()
    var_err = (draws.var((0, 1)) - truth_var).abs()
    assert (var_err < Z * var_se).all(), (var_err, var_se)


@pytest.mark.parametrize("device", DEVICES)
def test_trainer_fits_on_device(device: str) -> None:
    """The Trainer keeps parameters and batches on the data's device and learns the
    conjugate model's prior mean (the maximum-likelihood value is the data mean)."""
    pyro.clear_param_store()
    model = ConjugateGaussian(dim=2).to(device)
    guide = AmortizedGaussianGuide(dim=2).to(device)
    x = (torch.randn(200, 2, generator=torch.Generator().manual_seed(2)) + 1.5).to(device)
    trainer = Trainer(
        IWAE(4, max_plate_nesting=1),
        model,
        guide,
        optimizers={"model": lambda params: torch.optim.Adam(params, lr=0.05)},
        progress=False,
    )
    history = trainer.fit(x, 300, 50, seed=0)
    assert all(math.isfinite(v) for v in history["model"])
    assert model.prior_loc.device == x.device
    # the data mean's s.e. is sqrt((s0^2 + sigma^2) / n); the fit is allowed Z of it plus
    # the optimiser's noise at lr 0.05 (a few hundredths at batch 50, measured on the CPU)
    se = math.sqrt((1.0 + 0.25) / x.shape[0])
    err = (model.prior_loc.detach() - x.mean(0)).abs().max()
    assert float(err) < Z * se, (model.prior_loc, x.mean(0))
