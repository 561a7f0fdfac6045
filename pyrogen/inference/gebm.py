r"""A generalized energy-based model: a Pyro generator tilted by an energy, sampled in its
latent space.

Arbel, Zhou & Gretton (2021), https://arxiv.org/abs/2003.05033: the model
:math:`Q(dx) \propto e^{-E(x)} G(dx)`, with :math:`G` the law of a generator's data site
(any Pyro model whose data site is a function of its latents, e.g. a ``Delta`` of a network;
:class:`~pyrogen.models.gan.Generator` is one). :math:`Q` has no density when :math:`G` has
none, but it is the image under the generator of the latent law

.. math:: \pi(z) \propto p(z)\, e^{-\beta E(G(z))}, \qquad
    U(z) = -\log p(z) + \beta E(G(z)),

(:math:`\beta = 1` is :math:`Q`; the reference code calls :math:`\beta` its temperature), so
:meth:`GEBM.sample` runs a kernel of the registry on :math:`U` in the latents' unconstrained
coordinates, one chain per sample, from exact draws of :math:`p(z)`, and returns
:math:`G(z)` at the chains' last positions. The default is kinetic Langevin (the paper's
choice); ``"mala"`` and ``"hmc"`` adapt their step size in warm-up, ``"ula"`` and
``"kinetic_langevin"`` need one. :meth:`GEBM.resample` draws :math:`Q` without a chain, by
sampling importance resampling from base draws (exact as their number grows, with the
effective sample size that says whether it is large enough): in a low-dimensional latent
space it is the reference a chain's draws can be checked against. A check worth making:
a generator through ReLU layers folds its latent space, so :math:`U` has cliffs where the
generator stretches it (between modes); a Metropolis-adjusted chain with a large step then
rejects every move into or out of them, and its draws can stay far from :math:`Q` while
accepting half of its moves. :meth:`GEBM.log_normalizer` estimates
:math:`\log Z = \log E_G[e^{-E}]` from base draws with its standard error, and
:meth:`GEBM.log_prob` is :math:`\log g(x) - E(x) - \log Z` where the base density
:math:`g` is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor, nn

from pyrogen.inference.critic import per_sample
from pyrogen.inference.gan import unobserved
from pyrogen.inference.mcmc import MCMCResult, ModelPotential, sample
from pyrogen.inference.mcmc.kernels import get_kernel

__all__ = ["GEBM", "GEBMResampled", "GEBMSamples", "LogNormalizer"]


class GEBMSamples(NamedTuple):
    """Draws of a GEBM.

    Attributes:
        x: ``(num_samples, *event_shape)``, the generator's data site at the chains' last
            latent positions.
        z: ``(num_samples, dim)``, those positions (flat, unconstrained).
        result: the sampler's :class:`~pyrogen.inference.mcmc.MCMCResult` (acceptance,
            divergences, wall time).
    """

    x: Tensor
    z: Tensor
    result: MCMCResult


class GEBMResampled(NamedTuple):
    r"""Draws of a GEBM by sampling importance resampling (:meth:`GEBM.resample`).

    Attributes:
        x: ``(num_samples, *event_shape)``, the generator's data site at the drawn latents.
        z: ``(num_samples, dim)``, those latents (flat, unconstrained).
        ess: the effective sample size of the proposals' weights,
            :math:`(\sum w)^2 / \sum w^2`: the draws are as good as that many independent
            ones at best, and near :math:`Q` only when it is large.
        num_proposals: the base draws resampled.
    """

    x: Tensor
    z: Tensor
    ess: float
    num_proposals: int


class LogNormalizer(NamedTuple):
    value: float
    """:math:`\\log E_G[e^{-E}]`."""
    stderr: float
    """Its Monte Carlo standard error (delta method)."""


class GEBM:
    """The generator ``model`` tilted by ``energy``.

    Args:
        model: a Pyro generator; ``model(*model_args, **model_kwargs)`` must draw one sample
            (its data plate of size 1), and broadcast over a leading batch dimension (the
            chains), as :class:`~pyrogen.inference.mcmc.ModelPotential` requires.
        energy: module mapping samples ``(n, *event_shape)`` to energies ``(n,)``.
        model_args, model_kwargs: how to call the model for one sample (for
            :class:`~pyrogen.models.gan.Generator`: ``(None, 1)``, or one data row).
        data_site: the generator's data site.
        base_log_prob: ``x -> log g(x)`` when the base has a density (for :meth:`log_prob`).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        energy: nn.Module,
        model_args: tuple[Any, ...] = (),
        model_kwargs: dict[str, Any] | None = None,
        data_site: str = "x",
        base_log_prob: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not isinstance(energy, nn.Module):
            raise TypeError(f"energy must be an nn.Module, got {type(energy).__name__}")
        self.model, self.energy, self.data_site = model, energy, data_site
        self.base_log_prob = base_log_prob
        self.prior = ModelPotential(
            poutine.block(model, hide=[data_site]), model_args, model_kwargs
        )
        self._generator_model = unobserved(model, data_site)
        with torch.no_grad():
            trace = self.prior.trace_at(
                self.prior.initial_position(1, radius=0.0), self._generator_model
            )
        if data_site not in trace.nodes:
            raise ValueError(f"the model has no site named {data_site!r}")
        value: Any = trace.nodes[data_site]["value"]
        self.event_shape = (
            value.shape[1:] if value.dim() > 0 and value.shape[0] == 1 else value.shape
        )

    def generated(self, z: Tensor) -> Tensor:
        """:math:`G(z)` for flat latent positions ``(n, dim)``: ``(n, *event_shape)``."""
        trace = self.prior.trace_at(z, self._generator_model)
        value: Tensor = trace.nodes[self.data_site]["value"]
        return value.reshape(z.shape[0], *self.event_shape)

    def _energy(self, x: Tensor) -> Tensor:
        return per_sample(self.energy(x), x.shape[0])

    def potential(self, beta: float = 1.0) -> Callable[[Tensor], Tensor]:
        """:math:`U(z) = -\\log p(z) + \\beta E(G(z))` over flat unconstrained latents
        (with the prior's ``log |det J|``)."""

        def u(z: Tensor) -> Tensor:
            return self.prior(z) + beta * self._energy(self.generated(z))

        return u

    @torch.no_grad()
    def base_latents(self, num_samples: int) -> Tensor:
        """Exact draws of the latents' prior, flat and unconstrained, ``(n, dim)``."""
        prior = self.prior
        chains = pyro.plate("_pyrogen_chains", num_samples, dim=-(prior.max_plate_nesting + 1))
        with chains:
            trace = poutine.trace(prior.model).get_trace(*prior.model_args, **prior.model_kwargs)
        values = {}
        for name in prior.names:
            value: Any = trace.nodes[name]["value"]
            values[name] = value.reshape((num_samples,) + prior.shapes[name])
        return prior.unconstrain(values)

    def sample(
        self,
        num_samples: int,
        *,
        kernel: str = "kinetic_langevin",
        num_steps: int = 500,
        step_size: float | None = None,
        beta: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> GEBMSamples:
        """``num_samples`` draws: one chain each, from exact base draws, ``num_steps``
        transitions (the warm-up of :func:`~pyrogen.inference.mcmc.sample`, adapting the
        step size where the kernel has an accept step; no mass matrix), the last kept."""
        if not (isinstance(beta, int | float) and beta >= 0):
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        spec = get_kernel(kernel)
        if spec.target_accept is None and step_size is None:
            raise ValueError(f"kernel {kernel!r} has no accept step: give step_size")
        start = self.base_latents(num_samples)
        result = sample(
            self.potential(beta),
            start,
            kernel=kernel,
            num_warmup=num_steps,
            num_samples=1,
            step_size=step_size,
            adapt_step_size=spec.target_accept is not None,
            adapt_mass_matrix=False,
            generator=generator,
            progress=progress,
        )
        z = result.final_state.position.detach()
        with torch.no_grad():
            x = self.generated(z)
        return GEBMSamples(x, z, result)

    def _base_energies(self, num_samples: int, batch_size: int) -> tuple[Tensor, Tensor]:
        """Exact base draws, in batches: their latents ``(n, dim)`` and energies ``(n,)``."""
        latents, energies = [], []
        left = num_samples
        while left > 0:
            z = self.base_latents(min(batch_size, left))
            latents.append(z)
            energies.append(self._energy(self.generated(z)))
            left -= z.shape[0]
        return torch.cat(latents), torch.cat(energies)

    @torch.no_grad()
    def resample(
        self,
        num_samples: int,
        num_proposals: int = 100_000,
        *,
        beta: float = 1.0,
        batch_size: int = 10_000,
        generator: torch.Generator | None = None,
    ) -> GEBMResampled:
        r"""``num_samples`` draws of :math:`\pi(z) \propto p(z) e^{-\beta E(G(z))}` (``beta``
        1: the GEBM) by sampling importance resampling: ``num_proposals`` exact base draws
        (torch's global random state, as :meth:`base_latents`), weighted by
        :math:`e^{-\beta E(G(z))}`, then drawn with replacement in proportion to their
        weights (``generator``). Exact as ``num_proposals`` grows; the draws repeat
        proposals, and are close to :math:`\pi` only when the returned ``ess`` is large
        (beside ``num_samples``). Memory: the proposals' latents and energies."""
        for name, value in (
            ("num_samples", num_samples),
            ("num_proposals", num_proposals),
            ("batch_size", batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_proposals > 2**24:  # torch.multinomial's limit on categories
            raise ValueError(f"num_proposals must be at most 2**24, got {num_proposals}")
        if not (isinstance(beta, int | float) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        z, energies = self._base_energies(num_proposals, batch_size)
        log_w = -beta * energies.double()
        if not bool(torch.isfinite(log_w).all()):
            raise FloatingPointError("the energy is not finite at some base draws")
        w = torch.softmax(log_w, 0)
        ess = float(1.0 / (w * w).sum())
        where = generator.device if generator is not None else w.device
        index = torch.multinomial(w.to(where), num_samples, replacement=True, generator=generator)
        chosen = z[index.to(z.device)]
        return GEBMResampled(self.generated(chosen), chosen, ess, num_proposals)

    @torch.no_grad()
    def log_normalizer(self, num_samples: int = 100_000, batch_size: int = 10_000) -> LogNormalizer:
        """:math:`\\log E_G[e^{-E}]` from ``num_samples`` base draws, with its standard
        error (the delta method on the mean of :math:`e^{-E}`)."""
        neg = -self._base_energies(num_samples, batch_size)[1].double()
        log_mean = torch.logsumexp(neg, 0) - math.log(neg.numel())
        ratio = torch.exp(neg - log_mean)  # weights over their mean
        return LogNormalizer(float(log_mean), float(ratio.std() / math.sqrt(neg.numel())))

    def log_prob(self, x: Tensor, log_normalizer: float | None = None) -> Tensor:
        """:math:`\\log g(x) - E(x) - \\log Z` (``log_normalizer`` estimated when not given);
        needs ``base_log_prob``."""
        if self.base_log_prob is None:
            raise ValueError(
                "the base generator's density is not known here: pass base_log_prob to GEBM "
                "(a generator through a network has none, and neither has the GEBM)"
            )
        log_z = self.log_normalizer().value if log_normalizer is None else log_normalizer
        return self.base_log_prob(x) - self._energy(x) - log_z
