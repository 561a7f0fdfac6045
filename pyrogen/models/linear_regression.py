r"""Variational linear regression (Bishop, PRML section 10.3): the fixed point that
coordinate ascent reaches in closed form, for an SVI fit to be measured against.

Model: targets :math:`t_n = w^\top \phi_n + \epsilon_n`, noise precision :math:`\beta` known;
:math:`w \mid \alpha \sim \mathcal N(0, \alpha^{-1} I_M)`,
:math:`\alpha \sim \mathrm{Gamma}(a_0, b_0)` (rate :math:`b_0`). The factorised posterior
:math:`q(w)\,q(\alpha)` has :math:`q(\alpha) = \mathrm{Gamma}(a_N, b_N)` and
:math:`q(w) = \mathcal N(m_N, S_N)`, with (PRML 10.93-10.105)

.. math::
    a_N = a_0 + M/2, \quad b_N = b_0 + \tfrac12\,\mathbb E[w^\top w], \quad
    \mathbb E[w^\top w] = m_N^\top m_N + \mathrm{tr}\,S_N,

    S_N = (\mathbb E[\alpha] I + \beta\,\Phi^\top\Phi)^{-1}, \quad
    m_N = \beta S_N \Phi^\top t, \quad \mathbb E[\alpha] = a_N / b_N,

iterated to convergence by :meth:`BayesianLinearRegression.cavi`. With :math:`a_0 = b_0 = 0`
the fixed point satisfies :math:`\mathbb E[\alpha] = M / (m_N^\top m_N + \mathrm{tr}\,S_N)`
(10.104). :meth:`~BayesianLinearRegression.elbo` is the lower bound of any
:math:`(m, S, a, b)` in closed form (the terms of PRML 10.107-10.112, written out below).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

__all__ = ["BayesianLinearRegression", "CAVIResult", "FactorisedGuide"]


class CAVIResult(NamedTuple):
    """The coordinate-ascent fixed point: q(w) = N(mean, cov), q(alpha) = Gamma(a, b); the
    bound there, and the iterations taken."""

    mean: Tensor
    cov: Tensor
    a: float
    b: float
    elbo: float
    iterations: int


class BayesianLinearRegression:
    r"""The model on a design matrix :math:`\Phi` (N x M) and targets t (N,).

    Args:
        phi, t: the data (float64 keeps the closed forms exact to rounding).
        beta: the known noise precision.
        a0, b0: the Gamma prior of :math:`\alpha` (shape, rate); 0 and 0 for the improper
            limit, which :meth:`cavi` accepts and :meth:`model` does not.
    """

    def __init__(
        self, phi: Tensor, t: Tensor, beta: float, a0: float = 1e-2, b0: float = 1e-2
    ) -> None:
        if phi.dim() != 2 or t.shape != phi.shape[:1]:
            raise ValueError(
                f"phi must be (N, M) and t (N,); got {tuple(phi.shape)} and {tuple(t.shape)}"
            )
        if beta <= 0 or a0 < 0 or b0 < 0:
            raise ValueError(f"need beta > 0 and a0, b0 >= 0; got {beta}, {a0}, {b0}")
        self.phi, self.t = phi, t
        self.beta, self.a0, self.b0 = float(beta), float(a0), float(b0)

    @property
    def num_features(self) -> int:
        return int(self.phi.shape[1])

    def model(self) -> None:
        """The Pyro model, with the data bound: sites ``alpha``, ``w`` and observed ``t``."""
        if self.a0 == 0 or self.b0 == 0:
            raise ValueError("the Pyro model needs a proper Gamma prior: a0 > 0 and b0 > 0")
        phi, t = self.phi, self.t
        alpha = pyro.sample("alpha", dist.Gamma(phi.new_tensor(self.a0), phi.new_tensor(self.b0)))
        scale = alpha.rsqrt()[..., None]
        w = pyro.sample("w", dist.Normal(phi.new_zeros(self.num_features), scale).to_event(1))
        with pyro.plate("data", phi.shape[0]):
            pyro.sample("t", dist.Normal((phi * w).sum(-1), self.beta**-0.5), obs=t)

    def cavi(self, tol: float = 1e-12, max_iterations: int = 10000) -> CAVIResult:
        """Coordinate ascent from E[alpha] = 1 until E[alpha] changes by less than ``tol``
        (relative)."""
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be at least 1, got {max_iterations}")
        phi, t, m = self.phi.double(), self.t.double(), self.num_features
        gram, proj = phi.T @ phi, phi.T @ t
        a_n = self.a0 + m / 2
        e_alpha, iterations, done = 1.0, 0, False
        while not done and iterations < max_iterations:
            iterations += 1
            cov = torch.linalg.inv(e_alpha * torch.eye(m, dtype=torch.float64) + self.beta * gram)
            mean = self.beta * cov @ proj
            b_n = self.b0 + 0.5 * float(mean @ mean + torch.trace(cov))
            new = a_n / b_n
            done = abs(new - e_alpha) <= tol * abs(e_alpha)
            e_alpha = new
        return CAVIResult(mean, cov, a_n, b_n, float(self.elbo(mean, cov, a_n, b_n)), iterations)

    def elbo(self, mean: Tensor, cov: Tensor, a: float, b: float) -> Tensor:
        r"""The lower bound :math:`\mathbb E_q[\log p(t, w, \alpha) - \log q(w)q(\alpha)]`
        for :math:`q(w) = \mathcal N(\text{mean}, \text{cov})`,
        :math:`q(\alpha) = \mathrm{Gamma}(a, b)` (needs a0, b0 > 0, or the prior's
        normaliser is infinite)."""
        phi, t = self.phi.double(), self.t.double()
        mean, cov = mean.double(), cov.double()
        n, m = phi.shape
        a_t, b_t = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
        e_alpha, e_log_alpha = a_t / b_t, torch.digamma(a_t) - b_t.log()
        e_wtw = mean @ mean + torch.trace(cov)
        log2pi = math.log(2 * math.pi)
        resid = t - phi @ mean
        # E[ln p(t | w)]: the expected squared residual adds tr(Phi^T Phi S)
        lik = 0.5 * n * (math.log(self.beta) - log2pi) - 0.5 * self.beta * (
            resid @ resid + torch.trace(phi.T @ phi @ cov)
        )
        prior_w = 0.5 * m * (e_log_alpha - log2pi) - 0.5 * e_alpha * e_wtw
        a0, b0 = (
            torch.tensor(self.a0, dtype=torch.float64),
            torch.tensor(self.b0, dtype=torch.float64),
        )
        prior_alpha = a0 * b0.log() - torch.lgamma(a0) + (a0 - 1) * e_log_alpha - b0 * e_alpha
        entropy_w = 0.5 * torch.logdet(cov) + 0.5 * m * (1 + log2pi)
        entropy_alpha = torch.lgamma(a_t) - (a_t - 1) * torch.digamma(a_t) - b_t.log() + a_t
        return lik + prior_w + prior_alpha + entropy_w + entropy_alpha


class FactorisedGuide(nn.Module):
    r"""Bishop's factorisation in Pyro: :math:`q(\alpha) = \mathrm{Gamma}(a, b)` times a
    full-covariance :math:`q(w)`, independent of each other."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(num_features))
        self.raw_tril = nn.Parameter(torch.zeros(num_features, num_features))
        self.log_a = nn.Parameter(torch.tensor(0.0))
        self.log_b = nn.Parameter(torch.tensor(0.0))

    def scale_tril(self) -> Tensor:
        return self.raw_tril.tril(-1) + torch.diag_embed(self.raw_tril.diagonal().exp())

    def forward(self) -> None:
        pyro.sample("alpha", dist.Gamma(self.log_a.exp(), self.log_b.exp()))
        pyro.sample("w", dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril()))

    def summary(self) -> Tensor:
        """m, the diagonal of S, a and b, detached."""
        tril = self.scale_tril()
        return torch.cat(
            [self.loc, (tril * tril).sum(-1), self.log_a.exp()[None], self.log_b.exp()[None]]
        ).detach()
