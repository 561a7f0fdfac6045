r"""Eight schools (Rubin 1981; Gelman et al., Bayesian Data Analysis, section 5.5), non-centred.

The SAT coaching effects :math:`y_j` with standard errors :math:`\sigma_j` of eight schools,
Rubin's original data (not the rescaled variant of the AVB paper's notebook):

.. math:: \mu \sim \mathcal{N}(0, 5^2), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
    \eta_j \sim \mathcal{N}(0, 1), \quad \theta_j = \mu + \tau \eta_j, \quad
    y_j \sim \mathcal{N}(\theta_j, \sigma_j^2).

The model takes the data set as rows ``y`` of shape ``(n, 8)`` with every latent in a data
plate: one row is the posterior of the usual model (``data()``), and ``n`` rows are ``n``
independent copies, which is how an objective that repeats its rows (AVB's adaptive
contrast) draws many latents at once. :class:`ImplicitGuide` is a guide with no density,
``(mu, log tau, eta) = A eps + b + f(eps)`` with ``eps ~ N(0, I)`` and ``f`` a small ELU
network; :class:`LatentCritic` is a critic for it that looks at the latents only (the data
are fixed).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyrogen.inference.avb import implicit_sample

__all__ = ["SIGMA", "Y", "ImplicitGuide", "LatentCritic", "data", "model"]

Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)
SCHOOLS = len(Y)


def data() -> Tensor:
    """The observed effects as one row, ``(1, 8)``."""
    return torch.tensor([Y])


def model(y: Tensor) -> None:
    sigma = torch.tensor(SIGMA, dtype=y.dtype, device=y.device)
    with pyro.plate("data", y.shape[-2]):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0).expand([SCHOOLS]).to_event(1))
        theta = pyro.deterministic("theta", mu.unsqueeze(-1) + tau.unsqueeze(-1) * eta, 1)
        pyro.sample("obs", dist.Normal(theta, sigma).to_event(1), obs=y)


class ImplicitGuide(nn.Module):
    """``(mu, log tau, eta) = A eps + b + f(eps)``: a Gaussian plus a network's correction,
    with no density; the network's last layer starts at zero, so the guide starts Gaussian."""

    def __init__(self, noise: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.noise = noise
        self.linear = nn.Linear(noise, 2 + SCHOOLS)
        self.net = nn.Sequential(
            nn.Linear(noise, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, 2 + SCHOOLS),
        )
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, y: Tensor) -> None:
        pyro.module("eight_schools_implicit_guide", self)
        n = y.shape[-2]
        eps = torch.randn(n, self.noise, dtype=y.dtype, device=y.device)
        h = self.linear(eps) + self.net(eps)
        with pyro.plate("data", n):
            implicit_sample("mu", h[:, 0])
            implicit_sample("tau", h[:, 1].exp())
            implicit_sample("eta", h[:, 2:], event_dim=1)


class LatentCritic(nn.Module):
    """``T(y, z)``: an ELU network of the latents ``z`` alone (``y`` is the same in every
    row)."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 + SCHOOLS, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)
