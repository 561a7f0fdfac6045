"""A GEBM against closed forms: latent samples of a Gaussian tilt, the log-normaliser by
quadrature, log_prob, any Pyro generator."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrogen.inference import GEBM
from pyrogen.models.gan import Generator

Z = 5.0
A = torch.tensor([1.5, -1.0])
S2 = 0.5  # E(x) = |x - A|^2 / (2 S2): Q = N(0, I) e^{-E} is N(A / (1 + S2), S2 / (1 + S2) I)
Q_LOC, Q_VAR = A / (1 + S2), S2 / (1 + S2)


def identity_generator(x: torch.Tensor | None = None) -> None:
    """x = z, z ~ N(0, I_2): a plain Pyro function, not a pyrogen Generator."""
    with pyro.plate("data", 1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        pyro.sample("x", dist.Delta(z, event_dim=1), obs=x)


class Quadratic(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - A) ** 2).sum(-1) / (2 * S2)


@pytest.mark.parametrize("kernel", ["kinetic_langevin", "mala"])
def test_samples_have_the_closed_form_moments(kernel: str) -> None:
    """Identity generator, quadratic energy: Q is Gaussian in closed form; 3000 independent
    chains' last draws match its mean and variance within Z standard errors (kinetic
    Langevin is exact for a Gaussian target, MALA exactly invariant)."""
    gebm = GEBM(identity_generator, Quadratic(), model_args=(torch.zeros(1, 2),))
    out = gebm.sample(
        3000,
        kernel=kernel,
        num_steps=300,
        step_size=0.5 if kernel == "kinetic_langevin" else None,
        generator=torch.Generator().manual_seed(0),
    )
    x = out.x
    assert x.shape == (3000, 2)
    n = x.shape[0]
    sd = math.sqrt(Q_VAR)
    assert bool(((x.mean(0) - Q_LOC).abs() < Z * sd / math.sqrt(n)).all()), x.mean(0)
    assert bool(((x.var(0) - Q_VAR).abs() < Z * Q_VAR * math.sqrt(2 / n)).all()), x.var(0)
    # and the tilt moved them: the base's mean is 0
    assert float((x.mean(0) - Q_LOC).abs().max()) < float(Q_LOC.abs().min()) / 5


class Wiggly(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.squeeze(-1)
        return torch.sin(2 * x) + 0.3 * x**2


def test_log_normalizer_against_quadrature_and_log_prob() -> None:
    """1-d: log E_N(0,1)[e^{-E}] by the trapezoid rule on a fine grid against the Monte
    Carlo estimate within Z standard errors; log_prob integrates to 1 on the grid."""
    generator = Generator(nn.Identity(), latent_dim=1, event_shape=(1,))
    base = dist.Normal(0.0, 1.0)
    gebm = GEBM(
        generator,
        Wiggly(),
        model_args=(None, 1),
        base_log_prob=lambda x: base.log_prob(x.squeeze(-1)),
    )
    grid = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    e = torch.sin(2 * grid) + 0.3 * grid**2
    exact = math.log(float(torch.trapezoid(base.log_prob(grid).exp() * torch.exp(-e), grid)))
    torch.manual_seed(0)
    est = gebm.log_normalizer(200_000)
    assert abs(est.value - exact) < Z * est.stderr, (est, exact)
    assert est.stderr < 0.01
    density = gebm.log_prob(grid.float().unsqueeze(-1), log_normalizer=exact).double().exp()
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-4)


def test_bad_input() -> None:
    gebm = GEBM(identity_generator, Quadratic(), model_args=(torch.zeros(1, 2),))
    with pytest.raises(ValueError, match="give step_size"):
        gebm.sample(10, kernel="ula")
    with pytest.raises(ValueError, match="base_log_prob"):
        gebm.log_prob(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="no site named"):
        GEBM(identity_generator, Quadratic(), model_args=(torch.zeros(1, 2),), data_site="y")
    with pytest.raises(TypeError, match="nn.Module"):
        GEBM(identity_generator, lambda x: x, model_args=(torch.zeros(1, 2),))  # type: ignore[arg-type]


def test_resampled_draws_have_the_closed_form_moments_and_ess() -> None:
    """Sampling importance resampling from 200,000 base draws: 3000 draws match Q's mean and
    variance within Z standard errors (a draw's variance from the resampling plus the
    weighted pool's, 1/n + 1/ESS), and the ESS is the closed form N E[w]^2 / E[w^2] for
    w = e^{-E} under N(0, I) within Z standard errors."""
    gebm = GEBM(identity_generator, Quadratic(), model_args=(torch.zeros(1, 2),))
    torch.manual_seed(0)
    n, proposals = 3000, 200_000
    out = gebm.resample(n, proposals, generator=torch.Generator().manual_seed(1))
    assert out.x.shape == (n, 2) and out.z.shape == (n, 2) and out.num_proposals == proposals
    torch.testing.assert_close(out.x, out.z)  # the identity generator

    def log_mean_w(c: float) -> float:  # log E[exp(-c |x - A|^2 / 2)], x ~ N(0, I_2)
        return -math.log(1 + c) - c * float(A.pow(2).sum()) / (2 * (1 + c))

    ess = proposals * math.exp(2 * log_mean_w(1 / S2) - log_mean_w(2 / S2))
    # ESS = (sum w)^2 / sum w^2: its relative s.e. from those of the two means (delta method,
    # their covariance left out), each sqrt(E[v^2] / E[v]^2 - 1) / sqrt(N) in closed form
    var_w = math.exp(log_mean_w(2 / S2) - 2 * log_mean_w(1 / S2)) - 1
    var_w2 = math.exp(log_mean_w(4 / S2) - 2 * log_mean_w(2 / S2)) - 1
    rel_se = math.sqrt((4 * var_w + var_w2) / proposals)
    assert out.ess == pytest.approx(ess, rel=Z * rel_se)
    scale = math.sqrt(1 / n + 1 / out.ess)
    sd = math.sqrt(Q_VAR)
    x = out.x
    assert bool(((x.mean(0) - Q_LOC).abs() < Z * sd * scale).all()), x.mean(0)
    assert bool(((x.var(0) - Q_VAR).abs() < Z * Q_VAR * math.sqrt(2) * scale).all()), x.var(0)
    # beta 0 is the base itself: every weight equal
    assert gebm.resample(10, 1000, beta=0.0).ess == pytest.approx(1000)


def test_resample_bad_input() -> None:
    gebm = GEBM(identity_generator, Quadratic(), model_args=(torch.zeros(1, 2),))
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        gebm.resample(0)
    with pytest.raises(ValueError, match="num_proposals must be a positive integer"):
        gebm.resample(10, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta must be a finite number"):
        gebm.resample(10, 100, beta=-1.0)
    with pytest.raises(ValueError, match="at most 2\\*\\*24"):
        gebm.resample(10, 2**24 + 1)
