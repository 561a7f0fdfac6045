r"""Importance-sampled log-likelihood and the number of active latent units.

.. math:: \log \hat p(x) = \log \frac{1}{K}\sum_{k=1}^K \frac{p(x, z_k)}{q(z_k \mid x)},
   \quad z_k \sim q(z \mid x),

the IWAE bound with many particles (Importance Weighted Autoencoders, Burda et al., 2015,
https://arxiv.org/abs/1509.00519, use K = 5000). Particles are drawn in chunks and combined
with a running log-sum-exp, and the data in batches, so memory is bounded by
``particle_chunk x batch_size`` log-weights (and the networks' activations for them),
whatever K and the data size.

A guide known only by its draws (an implicit guide, as Adversarial Variational Bayes
trains) has no :math:`q(z \mid x)` to divide by: :class:`FittedGaussianGuide` stands in for
it, a diagonal Gaussian fitted per row to the guide's draws, and
:func:`active_units_from_draws` counts its active units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from tqdm.auto import tqdm

from pyrogen.inference.importance import ParticlePath, draw_log_weights


class LogLikelihood(NamedTuple):
    r"""Per-point estimates and their summaries.

    Attributes:
        per_point: :math:`\log \hat p(x_n)`, shape ``(N,)``.
        mean: the mean over data points.
        stderr: the standard error of ``mean`` over data points (their spread).
        mc_stderr: the Monte Carlo standard error of ``mean`` from the importance weights,
            by the delta method, :math:`\sqrt{\sum_n \widehat{\mathrm{Var}}(w_n)/(K \bar w_n^2)}/N`;
            when it is not small against the gap to the true value, K is too small. NaN for
            K = 1.
        num_samples: K.
    """

    per_point: torch.Tensor
    mean: float
    stderr: float
    mc_stderr: float
    num_samples: int


@torch.no_grad()
def log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: torch.Tensor,
    num_samples: int = 5000,
    particle_chunk: int = 500,
    batch_size: int = 100,
    max_plate_nesting: float = math.inf,
    progress: bool = False,
) -> LogLikelihood:
    r"""Estimate :math:`\log p(x_n)` for every row of ``data``.

    ``model(batch)`` and ``guide(batch)`` are called on batches of rows; every latent site
    must sit in the data plate (one bound per point).

    Args:
        model: a Pyro model taking a batch of data.
        guide: its guide, the importance distribution.
        data: shape ``(N, ...)``.
        num_samples: particles per point, K.
        particle_chunk: particles drawn at once.
        batch_size: rows per call.
        max_plate_nesting: passed to the objective; give it (1 for a VAE) to skip the
            one-off trace that otherwise finds the plate depth.
        progress: show a progress bar over batches (tqdm).

    Example:
        >>> import torch
        >>> from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian
        >>> model = ConjugateGaussian(dim=2)
        >>> guide = AmortizedGaussianGuide(dim=2)
        >>> ll = log_likelihood(model, guide, torch.randn(50, 2), num_samples=200)
        >>> ll.per_point.shape
        torch.Size([50])
    """
    for name, value in [
        ("num_samples", num_samples),
        ("particle_chunk", particle_chunk),
        ("batch_size", batch_size),
    ]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if data.dim() < 1 or data.shape[0] == 0:
        raise ValueError(f"data must have at least one row, got shape {tuple(data.shape)}")
    sizes = [particle_chunk] * (num_samples // particle_chunk)
    if num_samples % particle_chunk:
        sizes.append(num_samples % particle_chunk)
    nesting = max_plate_nesting
    path = ParticlePath()  # the particle path is probed on the first chunk, then kept
    per_point, log_var_ratio = [], []
    batches = data.split(batch_size)
    bar = tqdm(batches, desc=f"log p(x), K={num_samples}", unit="batch", disable=not progress)
    for batch in bar:
        lse = torch.full((batch.shape[0],), -math.inf, dtype=batch.dtype, device=batch.device)
        lse2 = lse.clone()  # log sum w^2, for the Monte Carlo error
        for k in sizes:
            batching = path.get(model, guide)
            w, nesting = draw_log_weights(model, guide, (batch,), {}, k, nesting, batching=batching)
            if k > 1:
                path.keep(model, guide, w.batching)
            lw = w.log_weight
            lw = lw.reshape(k, -1)
            if lw.shape[1] != batch.shape[0]:
                raise ValueError(
                    f"expected one log-weight per data point ({batch.shape[0]}), got "
                    f"{lw.shape[1]}: put every latent site inside the data plate"
                )
            lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * lw, 0))
        log_mean = lse - math.log(num_samples)
        per_point.append(log_mean)
        # Var(w)/mean(w)^2 = mean(w^2)/mean(w)^2 - 1, in logs to avoid overflow
        log_second = lse2 - math.log(num_samples)
        log_var_ratio.append(log_second - 2 * log_mean)
    values = torch.cat(per_point)
    ratio = torch.cat(log_var_ratio).exp() - 1.0
    n = values.numel()
    stderr = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    mc_stderr = math.nan  # one particle carries no estimate of its own variance
    if num_samples > 1:
        mc_stderr = float(ratio.clamp(min=0).div(num_samples).sum().sqrt() / n)
    return LogLikelihood(values, float(values.mean()), stderr, mc_stderr, num_samples)


@torch.no_grad()
def active_units(
    guide: Callable[..., Any],
    data: torch.Tensor,
    site: str = "z",
    threshold: float = 1e-2,
    batch_size: int = 500,
) -> tuple[int, torch.Tensor]:
    r"""Latent units whose posterior mean varies with the data (Burda et al., 2015).

    Unit :math:`u` is active when :math:`\mathrm{Cov}_x(\mathbb{E}_{q(z \mid x)}[z_u])` exceeds
    ``threshold`` (0.01 in the paper). The mean is read off the guide's distribution at
    ``site``.

    Returns:
        The number of active units and the per-unit variances.
    """
    means = []
    for batch in data.split(batch_size):
        trace = poutine.trace(guide).get_trace(batch)
        if site not in trace.nodes:
            raise ValueError(f"the guide has no site '{site}' (sites: {list(trace.nodes)})")
        fn: Any = trace.nodes[site]["fn"]
        means.append(fn.mean.reshape(batch.shape[0], -1))
    variances = torch.cat(means).var(0, unbiased=True)
    return int((variances > threshold).sum()), variances


Draw = Callable[[torch.Tensor, int], torch.Tensor]
r"""``draw(x, num)``: ``num`` draws of :math:`q(z \mid x)` per row of ``x``, shape
``(num, n, d)`` (as :meth:`pyrogen.models.avb_mnist.ImplicitVAE.posterior_draws`)."""


def _check_draws(z: torch.Tensor, n: int, num: int) -> torch.Tensor:
    if z.dim() != 3 or z.shape[0] != num or z.shape[1] != n:
        raise ValueError(
            f"draw(x, {num}) must return ({num}, {n}, d) for {n} rows, got {tuple(z.shape)}"
        )
    return z


class FittedGaussianGuide:
    r"""An importance proposal for a guide with no density: per data row, the diagonal
    Gaussian fitted to ``num_draws`` of the guide's own draws.

    Called on a batch ``x`` (as a Pyro guide), it draws ``draw(x, num_draws)`` under
    ``torch.no_grad``, fits per row and unit ``loc`` = the draws' mean and ``scale`` = their
    standard deviation floored at ``min_scale``, and samples ``site`` from
    :math:`r(z \mid x) = \mathcal{N}(\mathrm{loc}, \mathrm{diag}\,\mathrm{scale}^2)` inside
    ``pyro.plate(plate, n)``: a guide with a density, for :func:`log_likelihood` (whose
    log-mean-exp of :math:`w = p(x, z) / r(z \mid x)` stays a stochastic lower bound of
    :math:`\log p(x)`: a Gaussian has full support, so :math:`E[w \mid r] = p(x)` whatever
    the fit) and :func:`active_units` (which reads ``loc``; but see
    :func:`active_units_from_draws`).

    Every call fits afresh, from fresh draws: :func:`log_likelihood` calls the guide once
    per chunk of particles, so the chunks weigh under different fits. Since
    :math:`E[w \mid r] = p(x)` for each, weights of one fit are uncorrelated, and the
    estimate's Monte Carlo standard error keeps its meaning. The fit takes the guide's
    marginal moments, not its shape: the closer :math:`q` is to a diagonal Gaussian, the
    tighter the estimate (the benchmark ``benchmarks/avb_mnist.py`` starts AIS from the
    same fit).

    Args:
        draw: ``draw(x, num) -> (num, n, d)``, the guide's draws per row.
        num_draws: draws per row for the fit (at least 2).
        min_scale: floor on the fitted standard deviation.
        site: the latent site's name in the model.
        plate: the data plate's name in the model.
    """

    def __init__(
        self,
        draw: Draw,
        num_draws: int = 64,
        min_scale: float = 1e-3,
        site: str = "z",
        plate: str = "data",
    ) -> None:
        if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 2:
            raise ValueError(f"num_draws must be an int of at least 2, got {num_draws!r}")
        if not min_scale > 0:
            raise ValueError(f"min_scale must be positive, got {min_scale!r}")
        self.draw = draw
        self.num_draws = num_draws
        self.min_scale = float(min_scale)
        self.site = site
        self.plate = plate

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` per row, ``(n, d)`` each, from ``num_draws`` fresh draws."""
        z = _check_draws(self.draw(x, self.num_draws), x.shape[0], self.num_draws)
        return z.mean(0), z.std(0).clamp_min(self.min_scale)

    def __call__(self, x: torch.Tensor) -> None:
        loc, scale = self.fit(x)
        with pyro.plate(self.plate, x.shape[0]):
            pyro.sample(self.site, dist.Normal(loc, scale).to_event(1))


@torch.no_grad()
def active_units_from_draws(
    draw: Draw,
    data: torch.Tensor,
    num_draws: int = 64,
    threshold: float = 1e-2,
    batch_size: int = 500,
) -> tuple[int, torch.Tensor]:
    r""":func:`active_units` for a guide known by its draws: :math:`\mathbb{E}_q[z \mid x]`
    is the mean of ``num_draws`` draws per row.

    That mean's own noise adds :math:`\mathbb{E}_x[\mathrm{Var}_q(z_u \mid x)] /` ``num_draws``
    to its variance over the rows: 1/64 = 0.016 for a unit left at the prior
    :math:`\mathcal{N}(0, 1)` with 64 draws, above the threshold of 0.01. It is taken off
    (the mean over rows of the draws' unbiased variance divided by ``num_draws``), so each
    unit's variance is an unbiased estimate of the variance over the rows of
    :math:`\mathbb{E}_q[z_u \mid x]`, what :func:`active_units` reads off a guide's
    distribution.

    Args:
        draw: ``draw(x, num) -> (num, n, d)``, the guide's draws per row.
        data: the rows, ``(N, ...)``.
        num_draws: draws per row (at least 2).
        threshold: a unit is active above it (0.01 in Burda et al.).
        batch_size: rows per call of ``draw``.

    Returns:
        The number of active units and the per-unit variances.
    """
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 2:
        raise ValueError(f"num_draws must be an int of at least 2, got {num_draws!r}")
    means, noise = [], []
    for batch in data.split(batch_size):
        z = _check_draws(draw(batch, num_draws), batch.shape[0], num_draws)
        means.append(z.mean(0).reshape(batch.shape[0], -1))
        noise.append(z.var(0).reshape(batch.shape[0], -1) / num_draws)
    variances = torch.cat(means).var(0, unbiased=True) - torch.cat(noise).mean(0)
    return int((variances > threshold).sum()), variances
