r"""Sampling a generator tilted by a density-ratio critic, in its latent space.

A generator :math:`x = G(z)`, :math:`z \sim N(0, I)`, defines :math:`q(x)`; a critic
:math:`r(x) \approx \log p(x) / q(x)` (the logit of a logistic GAN critic at its optimum, an
NCE classifier, a KALE energy's negative) defines the tilted distribution
:math:`q(x) e^{r(x)} / Z`, which equals :math:`p` when :math:`r` is exact. Pushing the tilt
through :math:`G` gives a density on the latent space that needs no Jacobian,

.. math:: \pi(z) \propto N(z; 0, I)\, e^{r(G(z))}, \qquad U(z) = \tfrac12 \|z\|^2 - r(G(z)),

and :math:`G(z)` for :math:`z \sim \pi` is a draw of the tilted distribution (Che et al. 2020,
"Your GAN is secretly an energy-based model", DDLS; Arbel et al. 2021, "Generalized Energy
Based Models", whose KALE energies are sampled the same way). The chains start at
:math:`z \sim N(0, I)`, i.e. at exact draws of :math:`q`, and run MALA or HMC from
:mod:`pyrogen.inference.mcmc`, one chain per sample, with the step size adapted in warm-up.
Where the generator puts mass between the data's modes and the critic says there is none,
the chains leave; where it has no mass, they cannot create any.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pyrogen.inference.critic import per_sample
from pyrogen.inference.mcmc import MCMCResult, sample

__all__ = ["TiltedSamples", "tilted_sample"]


class TiltedSamples(NamedTuple):
    """Draws of the tilted generator.

    Attributes:
        x: ``(num_samples, *event_shape)``, :math:`G(z)` at the chains' last positions.
        z: ``(num_samples, latent_dim)``, those positions.
        acceptance: the chains' mean acceptance probability after warm-up.
        result: the sampler's :class:`~pyrogen.inference.mcmc.MCMCResult`.
    """

    x: Tensor
    z: Tensor
    acceptance: float
    result: MCMCResult


def tilted_sample(
    net: nn.Module,
    log_ratio: Callable[[Tensor], Tensor],
    num_samples: int,
    latent_dim: int,
    *,
    num_warmup: int = 200,
    kernel: str = "mala",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> TiltedSamples:
    r"""Draw ``num_samples`` from :math:`q(x) e^{r(x)} / Z` where ``net`` maps
    :math:`z \sim N(0, I_{latent\_dim})` to :math:`x` and ``log_ratio`` is :math:`r`.

    Args:
        net: the generator's network, ``(n, latent_dim) -> (n, *event_shape)``
            (``Generator.net`` for :class:`pyrogen.models.Generator`).
        log_ratio: ``(n, *event_shape) -> (n,)`` or ``(n, 1)``: an estimate of
            :math:`\log p(x)/q(x)`, e.g. the logistic GAN critic's logit. Critics of packed
            samples (PacGAN) or of Wasserstein and hinge losses are not log ratios.
        num_samples: chains, one draw each.
        num_warmup: MALA (or HMC) transitions before the draw, adapting the step size.
        kernel: ``"mala"`` or ``"hmc"``.
        generator: ``torch.Generator`` for the starting points and the chains.
        device: where the chains live (default: the network's parameters' device).
        progress: the sampler's progress bar.
    """
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer of at least 2, got {num_samples!r}")
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    if kernel not in ("mala", "hmc"):
        raise ValueError(f"kernel must be 'mala' or 'hmc', got {kernel!r}")
    if device is None:
        first = next(net.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    modules = [m for m in (net, log_ratio) if isinstance(m, nn.Module)]
    modes = [m.training for m in modules]

    def potential(z: Tensor) -> Tensor:
        r = per_sample(log_ratio(net(z)), z.shape[0], "log_ratio")
        return 0.5 * z.pow(2).sum(-1) - r

    z0 = torch.randn(num_samples, latent_dim, generator=generator, device=device)
    for m in modules:
        m.eval()
    try:
        result = sample(
            potential,
            z0,
            kernel=kernel,
            num_warmup=num_warmup,
            num_samples=1,
            adapt_mass_matrix=False,
            generator=generator,
            progress=progress,
        )
        z = result.final_state.position
        with torch.no_grad():
            x = net(z)
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
    acceptance = float(result.stats["acceptance_rate"].mean())
    return TiltedSamples(x=x, z=z, acceptance=acceptance, result=result)
