r"""Conjugate Gaussian models whose evidence and posterior are known in closed form.

The yardstick for every bound: :math:`z_n \sim \mathcal{N}(\mu_0, s_0^2 I_D)`,
:math:`x_n \mid z_n \sim \mathcal{N}(z_n, \sigma^2 I_D)`, so that
:math:`p(x_n) = \mathcal{N}(x_n; \mu_0, (s_0^2 + \sigma^2) I_D)` and the posterior is
:math:`\mathcal{N}\big(\frac{\mu_0/s_0^2 + x_n/\sigma^2}{1/s_0^2 + 1/\sigma^2},
(1/s_0^2 + 1/\sigma^2)^{-1}\big)`.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn


class ConjugateGaussian(PyroModule):
    r"""The model; the prior mean :math:`\mu_0` is a learnable parameter.

    Args:
        dim: :math:`D`.
        prior_loc: initial :math:`\mu_0`.
        prior_scale: :math:`s_0`.
        obs_scale: :math:`\sigma`.
    """

    def __init__(
        self, dim: int = 1, prior_loc: float = 0.0, prior_scale: float = 1.0, obs_scale: float = 0.5
    ) -> None:
        super().__init__(name="conjugate_model")
        self.prior_loc = nn.Parameter(torch.full((dim,), float(prior_loc)))
        self.prior_scale = float(prior_scale)
        self.obs_scale = float(obs_scale)

    def forward(self, x: torch.Tensor) -> None:
        loc = self.prior_loc.to(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, self.prior_scale).to_event(1))
            pyro.sample("x", dist.Normal(z, self.obs_scale).to_event(1), obs=x)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x_n)` for each row, shape ``(N,)``."""
        scale = math.sqrt(self.prior_scale**2 + self.obs_scale**2)
        return dist.Normal(self.prior_loc.to(x), scale).log_prob(x).sum(-1)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean (shape of ``x``) and standard deviation (a 0-d tensor)."""
        precision = 1.0 / self.prior_scale**2 + 1.0 / self.obs_scale**2
        loc = (self.prior_loc.to(x) / self.prior_scale**2 + x / self.obs_scale**2) / precision
        return loc, x.new_tensor(precision**-0.5)


class AmortizedGaussianGuide(PyroModule):
    r""":math:`q(z_n \mid x_n) = \mathcal{N}(a \odot x_n + b, \mathrm{diag}(s^2))`.

    The exact posterior of :class:`ConjugateGaussian` is in this family
    (:meth:`exact`), so a test can set the guide to it or move it away by a known amount.
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__(name="conjugate_guide")
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> None:
        loc = self.weight.to(x) * x + self.bias.to(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, self.log_scale.to(x).exp()).to_event(1))

    @torch.no_grad()
    def set_to(self, weight: float, bias: float, scale: float) -> AmortizedGaussianGuide:
        self.weight.fill_(weight)
        self.bias.fill_(bias)
        self.log_scale.fill_(math.log(scale))
        return self

    def exact(self, model: ConjugateGaussian) -> AmortizedGaussianGuide:
        """Set the guide to the model's exact posterior (needs a scalar prior mean)."""
        precision = 1.0 / model.prior_scale**2 + 1.0 / model.obs_scale**2
        mu0 = float(model.prior_loc.detach().mean())
        return self.set_to(
            weight=1.0 / model.obs_scale**2 / precision,
            bias=mu0 / model.prior_scale**2 / precision,
            scale=precision**-0.5,
        )
