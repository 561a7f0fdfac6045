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
