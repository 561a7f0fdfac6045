r"""A correlated Gaussian "posterior" and the mean-field Gaussians that every divergence picks.

The textbook picture of variational inference (Bishop, PRML 10.1.2; MacKay): for
:math:`p = \mathcal N(\mu, \Sigma)` and a mean-field Gaussian
:math:`q = \prod_i \mathcal N(m_i, v_i)`,

* minimizing :math:`\mathrm{KL}(q \,\|\, p)` (the ELBO) gives :math:`m = \mu` and
  :math:`v_i = 1 / \Lambda_{ii}`, :math:`\Lambda = \Sigma^{-1}`: too narrow, 0.19 for
  :math:`\Sigma = [[1, .9], [.9, 1]]`;
* minimizing :math:`\mathrm{KL}(p \,\|\, q)` gives the marginals, :math:`v_i = \Sigma_{ii}`;
* maximizing the Rényi bound :math:`\mathcal L_\alpha = \frac{1}{1-\alpha}\log \mathbb E_q
  [(p/q)^{1-\alpha}]` (Li & Turner 2016) moves between them as :math:`\alpha` goes from 1
  to 0. With equal means, :math:`\mathbb E_q[(p/q)^{1-\alpha}] = \int q^\alpha p^{1-\alpha}` is
  a Gaussian integral, so

  .. math:: \mathcal L_\alpha(v) = \frac{1}{1-\alpha}\Big(-\frac{\alpha}{2}\sum_i \log v_i
     - \frac{1-\alpha}{2}\log|\Sigma| - \frac12 \log\big|\alpha\,\mathrm{diag}(1/v)
     + (1-\alpha)\Lambda\big|\Big),

  finite while the matrix in the last term is positive definite. :meth:`renyi_variances`
  maximizes it (L-BFGS in float64). In two dimensions with equal variances :math:`v` the
  optimum solves :math:`2(1-\alpha)\,\lambda_1\lambda_2 v^2 + (2\alpha - 1)(\lambda_1 +
  \lambda_2)v - 2\alpha = 0`, :math:`\lambda_j` the eigenvalues of :math:`\Lambda`
  (:meth:`renyi_variance_2d`).

The model is a Pyro program with one latent site ``"z"`` and no data: its evidence is 1, so
every bound's optimum is also its value's gap to :math:`\log p(x) = 0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

__all__ = ["CorrelatedGaussian", "FullRankGuide", "MeanFieldGuide"]


class CorrelatedGaussian:
    r"""The target :math:`\mathcal N(\mu, \Sigma)` as a Pyro model, with its closed forms.

    Args:
        mean: :math:`\mu` (default the lecture's (0, 1)).
        cov: :math:`\Sigma` (default [[1, .9], [.9, 1]]).
    """

    def __init__(
        self,
        mean: Sequence[float] | Tensor = (0.0, 1.0),
        cov: Sequence[Sequence[float]] | Tensor = ((1.0, 0.9), (0.9, 1.0)),
    ) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.get_default_dtype())
        self.cov = torch.as_tensor(cov, dtype=torch.get_default_dtype())
        d = self.mean.shape[0]
        if self.mean.dim() != 1 or self.cov.shape != (d, d):
            raise ValueError(
                f"mean must be (d,) and cov (d, d); got {tuple(self.mean.shape)} and "
                f"{tuple(self.cov.shape)}"
            )
        if not torch.allclose(self.cov, self.cov.T) or torch.linalg.eigvalsh(self.cov).min() <= 0:
            raise ValueError("cov must be symmetric positive definite")
        self.precision = torch.linalg.inv(self.cov)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def model(self) -> None:
        """The Pyro model: ``z ~ N(mean, cov)``."""
        pyro.sample("z", dist.MultivariateNormal(self.mean, self.cov))

    def kl_qp_variances(self) -> Tensor:
        r""":math:`1/\Lambda_{ii}`: the mean-field optimum of KL(q || p), the ELBO's."""
        return 1.0 / torch.diagonal(self.precision)

    def kl_pq_variances(self) -> Tensor:
        r""":math:`\Sigma_{ii}`: the mean-field optimum of KL(p || q), the marginals."""
        return torch.diagonal(self.cov).clone()

    def renyi_bound(self, alpha: float, variances: Tensor) -> Tensor:
        r""":math:`\mathcal L_\alpha` of the mean-field Gaussian centred at :math:`\mu` with
        these variances (the ELBO at :math:`\alpha = 1`); ``-inf`` where the integral
        diverges."""
        v = torch.as_tensor(variances, dtype=torch.float64)
        precision, cov = self.precision.double(), self.cov.double()
        if alpha == 1.0:  # -KL(q || p) for equal means
            return 0.5 * (
                v.log().sum() - torch.logdet(cov) + self.dim - (torch.diagonal(precision) * v).sum()
            )
        a = alpha * torch.diag(1.0 / v) + (1.0 - alpha) * precision
        if torch.linalg.eigvalsh(a).min() <= 0:
            return torch.tensor(-math.inf, dtype=torch.float64)
        return (
            -0.5 * alpha * v.log().sum()
            - 0.5 * (1 - alpha) * torch.logdet(cov)
            - 0.5 * torch.logdet(a)
        ) / (1.0 - alpha)

    def renyi_variances(self, alpha: float) -> Tensor:
        r"""The variances of the mean-field Gaussian that maximizes :math:`\mathcal L_\alpha`
        (:math:`0 < \alpha \le 1`), by L-BFGS on their logs in float64."""
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if alpha == 1.0:
            return self.kl_qp_variances()
        log_v = self.kl_pq_variances().double().log().clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [log_v],
            max_iter=500,
            tolerance_grad=1e-14,
            tolerance_change=0.0,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            opt.zero_grad()
            loss = -self.renyi_bound(alpha, log_v.exp())
            loss.backward()
            return loss

        opt.step(closure)
        return log_v.detach().exp().to(self.mean.dtype)

    def renyi_variance_2d(self, alpha: float) -> float:
        """The closed-form optimum in two dimensions for a covariance with equal variances
        (the common variance of both coordinates)."""
        if self.dim != 2 or not torch.isclose(self.cov[0, 0], self.cov[1, 1]):
            raise ValueError("the 2-d closed form needs a 2x2 covariance with equal variances")
        if alpha == 1.0:
            return float(self.kl_qp_variances()[0])
        lam = torch.linalg.eigvalsh(self.precision.double())
        s, p = float(lam.sum()), float(lam.prod())
        a, b, c = 2 * (1 - alpha) * p, (2 * alpha - 1) * s, -2 * alpha
        return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


class MeanFieldGuide(nn.Module):
    """``z ~ N(loc, diag(exp(log_scale))^2)`` for the target's one site."""

    def __init__(self, dim: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.full((dim,), math.log(init_scale)))

    def forward(self) -> None:
        pyro.sample("z", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))

    def summary(self) -> Tensor:
        """Means then variances, detached."""
        return torch.cat([self.loc, (2 * self.log_scale).exp()]).detach()


class FullRankGuide(nn.Module):
    """``z ~ N(loc, L L^T)``, L lower triangular with a positive diagonal."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.raw_tril = nn.Parameter(torch.zeros(dim, dim))

    def scale_tril(self) -> Tensor:
        return self.raw_tril.tril(-1) + torch.diag_embed(self.raw_tril.diagonal().exp())

    def forward(self) -> None:
        pyro.sample("z", dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril()))

    def summary(self) -> Tensor:
        """Means then variances (the diagonal of the covariance), detached."""
        tril = self.scale_tril()
        return torch.cat([self.loc, (tril * tril).sum(-1)]).detach()
