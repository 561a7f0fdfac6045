"""VAE model/guide pairs: shapes, gradients, SVI, bad input, and a closed form (PPCA)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrogen.inference import IWAE, RenyiBound
from pyrogen.metrics import log_likelihood
from pyrogen.models import VAE, build_vae


@pytest.mark.parametrize(
    "architecture,shape",
    [
        ("burda", (784,)),
        ("pyro", (784,)),
        ("conv", (1, 28, 28)),
        ("burda", (64,)),
        ("conv", (8, 8)),
    ],
)
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_every_architecture_trains_under_a_particle_objective(
    architecture: str, shape: tuple[int, ...], likelihood: str
) -> None:
    vae = build_vae(architecture, shape, z_dim=6, likelihood=likelihood)
    d = math.prod(shape)
    x = torch.bernoulli(torch.full((5, d), 0.3))
    loss = IWAE(num_particles=3).differentiable_loss(vae.model, vae.guide, x)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert vae.sample(4).shape == (4, d)
    assert vae.reconstruct(x).shape == (5, d)
    if likelihood == "bernoulli":
        assert 0 <= vae.sample(4).min() and vae.sample(4).max() <= 1


def test_burda_layer_sizes() -> None:
    vae = build_vae("burda", (784,), z_dim=50)
    enc = [m.weight.shape for m in vae.encoder.modules() if isinstance(m, nn.Linear)]
    dec = [m.weight.shape for m in vae.decoder.modules() if isinstance(m, nn.Linear)]
    assert enc == [(200, 784), (200, 200), (100, 200)]  # loc and log-scale heads together
    assert dec == [(200, 50), (200, 200), (784, 200)]
    assert any(isinstance(m, nn.Tanh) for m in vae.decoder.modules())


def test_svi_finds_the_parameters_and_lowers_the_loss() -> None:
    torch.manual_seed(0)
    vae = build_vae("pyro", (16,), z_dim=2)
    x = torch.bernoulli(torch.full((64, 16), 0.2))
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), RenyiBound(1.0, 1))
    # judged by a 200-particle ELBO: one particle's estimate on 64 points moves by about
    # 100 nats from draw to draw (the same for Trace_ELBO, whose draws RenyiBound(1, 1) now
    # reproduces), more than the decrease asked for
    precise = RenyiBound(1.0, 200)
    first = precise.loss(vae.model, vae.guide, x)
    for _ in range(100):
        svi.step(x)
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith("vae.encoder") for n in names)
    assert any(n.startswith("vae.decoder") for n in names)
    assert precise.loss(vae.model, vae.guide, x) < first - 50


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="architecture"):
        build_vae("resnet", (784,))
    with pytest.raises(ValueError, match="divisible by 4"):
        build_vae("conv", (1, 10, 10))
    with pytest.raises(ValueError, match="divisible by 4"):
        build_vae("conv", (784,))
    with pytest.raises(ValueError, match="likelihood"):
        build_vae("burda", (784,), likelihood="poisson")
    with pytest.raises(ValueError, match="z_dim"):
        build_vae("burda", (784,), z_dim=0)
    vae = build_vae("burda", (64,), z_dim=4)
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        vae.model(torch.zeros(3, 8, 8))


class _Linear(nn.Module):
    """x -> (A x + b, s): a linear Gaussian encoder with a fixed scale."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, s: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b, self.s = nn.Parameter(a), nn.Parameter(b), nn.Parameter(s)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.a.T + self.b, self.s.expand(*x.shape[:-1], -1)


def _ppca(sigma: float) -> tuple[VAE, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Gaussian VAE with a linear decoder is probabilistic PCA: p(x) = N(mu, W W^T + s^2 I)."""
    torch.set_default_dtype(torch.float64)
    try:
        w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])  # orthogonal columns
        mu = torch.tensor([0.5, -1.0, 0.2])
        decoder = nn.Linear(2, 3)
        decoder.weight.data, decoder.bias.data = w.clone(), mu.clone()
        # exact posterior: N(M^-1 W^T (x - mu), s^2 M^-1), M = W^T W + s^2 I (diagonal here)
        m = w.T @ w + sigma**2 * torch.eye(2)
        a = torch.linalg.solve(m, w.T)
        encoder = _Linear(a, -a @ mu, sigma * torch.diag(m).rsqrt())
        vae = VAE(encoder, decoder, x_dim=3, z_dim=2, likelihood="gaussian")
        vae.noise.raw.data.fill_(math.log(math.expm1(sigma - 1e-3)))  # softplus(raw)+1e-3 = s
    finally:
        torch.set_default_dtype(torch.float32)
    cov = w @ w.T + sigma**2 * torch.eye(3)
    return vae, mu, cov, a


def test_gaussian_vae_log_likelihood_matches_ppca_closed_form() -> None:
    vae, mu, cov, _ = _ppca(sigma=0.7)
    x = dist.MultivariateNormal(mu, cov).sample((40,))
    exact = dist.MultivariateNormal(mu, cov).log_prob(x)
    # exact posterior as guide: every importance weight is p(x), whatever K
    ll = log_likelihood(vae.model, vae.guide, x, num_samples=7, particle_chunk=3)
    assert torch.allclose(ll.per_point, exact, atol=1e-9)
    # a worse guide: the estimate is within its Monte Carlo error of the truth, and below it
    vae.encoder.s.data *= 1.8
    vae.encoder.b.data += 0.3
    ll = log_likelihood(vae.model, vae.guide, x, num_samples=4000, particle_chunk=1000)
    assert abs(ll.mean - exact.mean().item()) < 5 * ll.mc_stderr
    one = log_likelihood(vae.model, vae.guide, x, num_samples=1)
    assert one.mean < ll.mean  # the ELBO (K=1) is below the K=4000 estimate
