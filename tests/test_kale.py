"""KALE against closed forms: KL between Gaussians, a known tilt recovered, the paper's
penalty, the log-normaliser's start and the energy schedule."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrogen.inference import KALE, Trainer, empty_guide
from pyrogen.inference.critic import per_sample

Z = 5.0
M, S = 0.7, 0.6  # the data P = N(M, S^2); the base G = N(0, 1)
KL = -math.log(S) + (S**2 + M**2) / 2 - 0.5  # KL(P || G)


def base(x: torch.Tensor) -> None:
    """A fixed standard-normal generator with a Delta data site."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        pyro.sample("x", dist.Delta(z, event_dim=1), obs=x)


class Polynomial(nn.Module):
    """E(x) = b x (+ c x^2): the quadratic family holds -log dP/dG up to a constant."""

    def __init__(self, quadratic: bool = True) -> None:
        super().__init__()
        self.coef = nn.Parameter(torch.zeros(2 if quadratic else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.squeeze(-1)
        powers = torch.stack([x, x**2][: self.coef.numel()], -1)
        return powers @ self.coef


def _fit(energy: Polynomial, data: torch.Tensor, seed: int) -> KALE:
    """Minimise the energy loss over (E, A) on one fixed generated sample (LBFGS)."""
    kale = KALE(energy, penalty=0.0, init_batches=1)
    params = [*energy.parameters(), *kale.log_normaliser.parameters()]
    opt = torch.optim.LBFGS(params, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        torch.manual_seed(seed)  # the same generated points at every evaluation
        loss = kale.role_loss("critic", base, empty_guide, data) / data.shape[0]
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return kale


def _held_out_kale(kale: KALE, n: int, seed: int) -> tuple[float, float]:
    """1 - E_P[E + A] - E_G[e^{-(E + A)}] on fresh samples, and its standard error."""
    g = torch.Generator().manual_seed(seed)
    x_p = M + S * torch.randn(n, 1, generator=g)
    x_g = torch.randn(n, 1, generator=g)
    with torch.no_grad():
        a = kale.log_normaliser()
        on_p = kale.energy(x_p) + a
        on_g = torch.exp(-(kale.energy(x_g) + a))
    value = 1 - float(on_p.mean()) - float(on_g.mean())
    return value, math.sqrt(float(on_p.var() + on_g.var()) / n)


@pytest.mark.parametrize("quadratic", [True, False])
def test_kale_is_the_kl_at_its_optimum_and_below_it_for_a_smaller_family(
    quadratic: bool,
) -> None:
    """With E quadratic the family holds -log dP/dG, so the fitted KALE is KL(P || G)
    within its standard error on held-out samples; with E linear the best is
    sup_b (-b M - b^2 / 2) = M^2 / 2 < KL, and the estimate is that instead."""
    n = 20_000
    data = M + S * torch.randn(n, 1, generator=torch.Generator().manual_seed(0))
    kale = _fit(Polynomial(quadratic), data, seed=1)
    value, se = _held_out_kale(kale, 200_000, seed=2)
    expected = KL if quadratic else M**2 / 2
    assert abs(value - expected) < Z * se, (value, expected, se)
    assert KL - M**2 / 2 > 20 * se  # the two closed forms are far apart: the test has power


def test_a_known_tilt_is_recovered_up_to_a_constant() -> None:
    """E* = -log dP/dG + const = (x - M)^2 / (2 S^2) - x^2 / 2: the fitted coefficients
    over 8 independent samples average to E*'s within Z standard errors of their mean,
    and E(x) - E*(x) is the same constant at held-out points."""
    exact = torch.tensor([-M / S**2, 1 / (2 * S**2) - 0.5])
    fits = []
    for r in range(8):
        g = torch.Generator().manual_seed(100 + r)
        data = M + S * torch.randn(5000, 1, generator=g)
        fits.append(_fit(Polynomial(), data, seed=200 + r).energy.coef.detach().clone())
    coefs = torch.stack(fits)
    se = coefs.std(0) / math.sqrt(len(fits))
    assert bool(((coefs.mean(0) - exact).abs() < Z * se).all()), (coefs.mean(0), exact, se)
    assert bool((se < 0.05).all())  # and the fits are precise enough to mean something
    # E - E* differs between two held-out points x, x0 by d (mean coef - exact), with
    # d = (x - x0, x^2 - x0^2); its standard error from the fits' covariance
    x = torch.linspace(-1.5, 2.5, 9)
    d = torch.stack([x, x**2], -1) - torch.tensor([x[0], x[0] ** 2])
    gap = d @ (coefs.mean(0) - exact)
    cov = torch.cov(coefs.T) / len(fits)
    gap_se = torch.einsum("ij,jk,ik->i", d, cov, d).clamp_min(1e-12).sqrt()
    assert bool((gap.abs() <= Z * gap_se).all()), (gap, gap_se)  # the same up to a constant


def test_log_normaliser_start_penalty_and_generator_loss_are_the_papers() -> None:
    """Exact identities at fixed seeds: A starts at log-mean-exp of -E over the generated
    batches; the penalty of a linear energy b x is b^2 (the mean squared gradient norm, not
    WGAN-GP's (|b| - 1)^2); the generator loss is minus the batch log-normaliser."""
    energy = Polynomial(quadratic=False)
    with torch.no_grad():
        energy.coef.fill_(0.8)
    x = torch.randn(50, 1)
    kale = KALE(energy, penalty=2.0, init_batches=3)
    torch.manual_seed(4)
    a = kale.initialise_log_normaliser(base, x)
    torch.manual_seed(4)
    z = torch.cat([dist.Normal(0.0, 1.0).expand([50, 1]).sample() for _ in range(3)])
    assert a == pytest.approx(float(torch.logsumexp(-0.8 * z.squeeze(-1), 0) - math.log(150)))
    assert bool(kale.log_normaliser.initialised)
    torch.manual_seed(5)
    with_penalty = kale.role_loss("critic", base, empty_guide, x)
    torch.manual_seed(5)
    kale.penalty = 0.0
    without = kale.role_loss("critic", base, empty_guide, x)
    assert float((with_penalty - without).detach()) == pytest.approx(50 * 2.0 * 0.8**2, rel=1e-5)
    torch.manual_seed(6)
    generator_loss = kale.role_loss("generator", base, empty_guide, x)
    torch.manual_seed(6)
    e = 0.8 * dist.Normal(0.0, 1.0).expand([50, 1]).sample().squeeze(-1)
    assert float(generator_loss.detach()) == pytest.approx(
        -50 * float(torch.logsumexp(-e, 0) - math.log(50)), rel=1e-5
    )
    # the reported KALE is the estimate of the last energy step, penalty left out
    assert kale.stats["kale"] == pytest.approx(-float(without.detach()) / 50, rel=1e-5)


class ShiftedBase(nn.Module):
    """N(loc, 1) as a generator with one parameter, for the trainer."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> None:
        pyro.module("shifted_base", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
            pyro.sample("x", dist.Delta(z + self.loc, event_dim=1), obs=x)


def test_energy_schedule_and_bad_input() -> None:
    kale = KALE(Polynomial(), energy_steps=2, warmup_steps=7, warmup_every=4, init_batches=1)
    assert [kale.steps_at(i)["critic"] for i in range(9)] == [7, 7, 2, 2, 7, 2, 2, 2, 7]
    seen: list[int] = []
    x = M + S * torch.randn(64, 1)
    trainer = Trainer(
        kale,
        ShiftedBase(),
        optimizers={},
        callback=lambda t: seen.append(t.steps["critic"]),
        progress=False,
    )
    trainer.fit(x, 5, 16)
    assert seen == [7, 7, 2, 2, 7]
    assert len(trainer.history["kale"]) == 5 and all(
        math.isfinite(v) for v in trainer.history["kale"]
    )
    with pytest.raises(ValueError, match="penalty"):
        KALE(Polynomial(), penalty=-1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        KALE(Polynomial(), warmup_steps=0)

    class WrongShape(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 2)

    with pytest.raises(ValueError, match="one value per sample"):
        KALE(WrongShape()).loss(base, empty_guide, x)
    assert per_sample(torch.zeros(3, 1), 3).shape == (3,)
