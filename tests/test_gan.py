"""Adversarial objectives against closed forms: the logistic critic's optimum is the log
density ratio, the WGAN-GP critic's value is the (penalised) W1, clipping and the penalty do
what the papers say, and the generator's data site is read the Pyro way."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from torch import nn

from pyrogen.inference import GAN, WGAN, WGANGP, HingeGAN, Trainer
from pyrogen.inference.critic import clip_weights, gradient_penalty, kale, logistic
from pyrogen.inference.gan import generate
from pyrogen.models import Generator, mlp

Z = 5.0


def fixed_samples_model(fake: torch.Tensor):
    """A 'generator' whose data site always yields the same batch (a full-batch problem)."""

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Delta(fake, event_dim=1), obs=x)

    return model


class Quadratic(nn.Module):
    """r(x) = a x^2 + b x + c: holds the exact log ratio of two 1-D Gaussians."""

    def __init__(self) -> None:
        super().__init__()
        self.coef = nn.Parameter(torch.zeros(3, dtype=torch.float64))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.squeeze(-1)
        return torch.stack([x * x, x, torch.ones_like(x)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) @ self.coef


def test_gan_critic_is_the_log_density_ratio() -> None:
    """p = N(0, 1), q = N(1, 1.5^2): log p/q = -x^2/2 + (x-1)^2/4.5 + log 1.5 is quadratic,
    so the critic's loss is a well-specified logistic regression whose MLE has covariance
    (X' W X)^{-1}; every coefficient must lie within Z of its standard errors."""
    n = 20_000
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    fake = 1.0 + 1.5 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    critic = Quadratic()
    obj = GAN(critic)
    model = fixed_samples_model(fake)
    opt = torch.optim.LBFGS(critic.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = obj.critic_loss(model, None, real)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    truth = torch.tensor([-0.5 + 1 / 4.5, -2 / 4.5, 1 / 4.5 + math.log(1.5)], dtype=torch.float64)
    x = critic.features(torch.cat([real, fake]))
    eta = x @ truth
    w = torch.sigmoid(eta) * torch.sigmoid(-eta)
    cov = torch.linalg.inv(x.T @ (w[:, None] * x))
    se = cov.diagonal().sqrt()
    err = (critic.coef.detach() - truth).abs()
    assert (err < Z * se).all(), (critic.coef.detach(), truth, se)
    # and the test has power: a critic off by 10 standard errors is rejected
    assert ((critic.coef.detach() + 10 * se - truth).abs() >= Z * se).any()


def test_logistic_optimum_moves_with_nu() -> None:
    """With weight nu on the fake term the optimal logit is log p/(nu q): for p = q it is
    -log nu at every x. The loss's gradient vanishes there (first-order condition, exact in
    float64) and not at the nu = 1 optimum."""
    ones = torch.ones(7, dtype=torch.float64)
    for nu in (0.5, 1.0, 4.0):
        for c0, stationary in ((-math.log(nu), True), (0.3 - math.log(nu), False)):
            c = torch.tensor(c0, dtype=torch.float64, requires_grad=True)
            (grad,) = torch.autograd.grad(logistic(c * ones, c * ones, nu), c)
            assert (abs(float(grad)) < 1e-12) == stationary


def test_wgan_gp_linear_critic_reaches_the_penalised_w1() -> None:
    """p = N(0, 1), q = N(2, 1): W1 = 2, optimal critic slope 1. For a linear critic
    r(x) = w x the penalised objective w D - lam (w - 1)^2 (D the sample mean difference)
    is maximised at w = 1 + D / (2 lam), where the estimate is w D: the trainer must get
    there, and the estimate must be within Z standard errors of 2 (1 + 2/(2 lam))."""
    n, lam = 4000, 10.0
    gen = torch.Generator().manual_seed(2)
    real = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    fake = 2.0 + torch.randn(n, 1, generator=gen, dtype=torch.float64)
    critic = nn.Linear(1, 1, bias=False).double()
    obj = WGANGP(critic, penalty=lam)
    model = fixed_samples_model(fake)
    opt = torch.optim.Adam(critic.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        obj.critic_loss(model, None, real).backward()
        opt.step()
    d = float(fake.mean() - real.mean())
    w = float(critic.weight.detach())
    # the critic's sign convention: larger on real data, so its slope is -w* for p left of q
    assert abs(abs(w) - (1 + d / (2 * lam))) < 0.01
    se = math.sqrt(2 / n)  # of the mean difference of two unit-variance samples
    estimate = obj.stats["wasserstein"]
    expected = 2.0 * (1 + 2.0 / (2 * lam))
    assert abs(estimate - expected) < Z * se * (1 + 2.0 / (2 * lam)), (estimate, expected)


def test_gradient_penalty_is_zero_for_a_unit_slope_linear_critic() -> None:
    critic = nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.0, -0.8]]))  # norm 1
    real, fake = torch.randn(50, 3), torch.randn(50, 3) + 4
    with torch.no_grad():
        critic.weight.requires_grad_(False)
        critic.bias.requires_grad_(False)
    assert float(gradient_penalty(lambda x: critic(x).squeeze(-1), real, fake).detach()) < 1e-12
    with torch.no_grad():
        critic.weight.mul_(2.0)
    penalty = gradient_penalty(lambda x: critic(x).squeeze(-1), real, fake).detach()
    assert abs(float(penalty) - 1.0) < 1e-6


def test_gradient_penalty_is_taken_at_interpolates() -> None:
    seen: list[torch.Tensor] = []

    def critic(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach())
        return (x**2).sum(-1)

    real, fake = torch.randn(40, 2), torch.randn(40, 2) + 3
    gradient_penalty(critic, real, fake)
    (x,) = seen
    eps = (x - fake) / (real - fake)  # the same epsilon in both coordinates, in [0, 1]
    assert torch.allclose(eps[:, 0], eps[:, 1], atol=1e-4)
    assert (eps >= -1e-6).all() and (eps <= 1 + 1e-6).all()
    assert float(eps[:, 0].std()) > 0.1  # one epsilon per pair, not one for the batch


def test_weight_clipping_bounds_every_critic_weight() -> None:
    torch.manual_seed(0)
    g = Generator(mlp([2, 16, 2]), 2, (2,))
    critic = mlp([2, 16, 16, 1])
    obj = WGAN(critic, clip=0.01)
    worst: list[float] = []

    def check(trainer: Trainer) -> None:
        worst.append(max(float(p.detach().abs().max()) for p in critic.parameters()))

    data = torch.randn(256, 2) * 3
    trainer = Trainer(
        obj,
        g,
        optimizers={"critic": (torch.optim.SGD, {"lr": 1.0})},  # large steps to push weights
        callback=check,
        progress=False,
    )
    trainer.fit(data, 20, 64)
    assert max(worst) <= 0.01
    assert max(worst) == pytest.approx(0.01)  # the clip was active, not vacuous


def test_non_saturating_and_minimax_generator_gradients() -> None:
    """When the critic rejects every fake (D(G(z)) -> 0) the minimax generator loss has a
    vanishing gradient and the non-saturating one does not (Goodfellow et al. 2014)."""
    torch.manual_seed(0)
    g = Generator(nn.Linear(1, 1), 1, (1,))
    critic = nn.Linear(1, 1)
    with torch.no_grad():  # real data near +5, fakes near 0, critic confident
        critic.weight.fill_(4.0)
        critic.bias.fill_(-10.0)
        g.net.weight.fill_(0.1)
        g.net.bias.fill_(0.0)
    x = 5 + torch.randn(500, 1)
    norms = {}
    for kind in ("minimax", "nonsaturating"):
        loss = GAN(critic, generator_loss=kind).generator_loss(g, None, x)
        grads = torch.autograd.grad(loss, list(g.parameters()))
        norms[kind] = float(torch.cat([gr.flatten() for gr in grads]).norm())
    assert norms["minimax"] < 1e-3 * norms["nonsaturating"], norms


def test_generate_reads_the_data_site_the_pyro_way() -> None:
    torch.manual_seed(0)
    g = Generator(mlp([2, 4, 2]), 2, (2,))
    x = torch.randn(10, 2)
    fake, real = generate(g, "x", x)
    assert real is x and fake.shape == (10, 2) and fake.requires_grad
    # a pyro.deterministic data site, conditioned on the data
    net = g.net

    def model(n: int) -> None:
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1).to_event(1))
            pyro.deterministic("x", net(z), event_dim=1)

    fake, real = generate(poutine.condition(model, {"x": x}), "x", 10)
    assert real is x and not torch.equal(fake, x)
    fake, real = generate(model, "x", 10)  # unconditioned: no data
    assert real is None
    with pytest.raises(ValueError, match="not observed"):
        GAN(mlp([2, 4, 1])).differentiable_loss(model, None, 10)
    with pytest.raises(ValueError, match="no sample site named 'y'"):
        GAN(mlp([2, 4, 1]), data_site="y").differentiable_loss(g, None, x)


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        GAN(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generator_loss"):
        GAN(mlp([2, 1]), generator_loss="wasserstein")
    with pytest.raises(ValueError, match="clip"):
        WGAN(mlp([2, 1]), clip=0.0)
    with pytest.raises(ValueError, match="penalty"):
        WGANGP(mlp([2, 1]), penalty=-1.0)
    with pytest.raises(ValueError, match="pack"):
        HingeGAN(mlp([2, 1]), pack=0)
    g = Generator(mlp([2, 4, 2]), 2, (2,))
    with pytest.raises(ValueError, match="multiple of pack=3"):
        GAN(mlp([6, 1]), pack=3).differentiable_loss(g, None, torch.randn(10, 2))
    with pytest.raises(ValueError, match="one value per sample"):
        GAN(mlp([2, 3])).differentiable_loss(g, None, torch.randn(10, 2))
    with pytest.raises(ValueError, match="shape"):
        g(torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        kale(torch.zeros(3, 1), torch.zeros(3))


def test_kale_optimum_is_the_log_ratio_and_its_value_the_kl() -> None:
    """For p = q the KALE critic loss -E_p r + E_q e^r - 1 is minimised by r = 0 with value
    0 = -KL; for any constant r = c it is -c + e^c - 1 >= 0."""
    for c in (-1.0, 0.0, 0.5):
        r = torch.full((5,), c)
        assert float(kale(r, r)) == pytest.approx(-c + math.exp(c) - 1)


def test_clip_weights_rejects_a_non_positive_clip() -> None:
    with pytest.raises(ValueError):
        clip_weights(nn.Linear(2, 2), -1.0)
