r"""Density-ratio and critic losses shared by the objectives with a second player.

Every function here takes the critic's values on samples of two distributions, ``real``
(from the data, :math:`p`) and ``fake`` (from the generator, noise or guide, :math:`q`),
and returns a scalar loss for the critic to *minimise*. A larger critic value means "more
like the data". At the optimum of each loss the critic is a known function of the density
ratio :math:`p/q`, which is what AVB, NCE, GANs and KALE use:

- :func:`logistic`: minimises :math:`E_p\,\mathrm{sp}(-r) + \nu E_q\,\mathrm{sp}(r)`
  (sp is softplus); optimum :math:`r = \log p/(\nu q)`.
- :func:`hinge`: minimises :math:`E_p [1-r]_+ + E_q [1+r]_+`; optimum
  :math:`r = \mathrm{sign} \log(p/q)`.
- :func:`wasserstein`: minimises :math:`E_q r - E_p r` over 1-Lipschitz ``r``; optimum a
  Kantorovich potential, and the negated minimum is :math:`W_1(p, q)`.
- :func:`kale`: minimises :math:`-E_p r + E_q e^{r} - 1`; optimum :math:`r = \log p/q`.

:func:`gradient_penalty` and :func:`clip_weights` keep a Wasserstein critic near the
1-Lipschitz set; :func:`squared_gradient_norm` at the data (R1) or at generated points (R2)
makes GAN training converge locally (Mescheder, Geiger & Nowozin 2018). References:
Goodfellow et al. (2014); Gutmann & Hyvärinen (2010) for the logistic loss with noise
ratio :math:`\nu`; Lim & Ye (2017) for the hinge; Arjovsky et al. (2017) for clipping;
Gulrajani et al. (2017) for the penalty; Arbel, Zhou & Gretton (2021) for KALE, whose
value :math:`1 + \sup_r (E_p r - E_q e^{r})` is :math:`KL(p \| q)` over all functions and
a lower bound on it over a class of critics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "per_sample",
    "clip_weights",
    "gradient_penalty",
    "hinge",
    "kale",
    "logistic",
    "squared_gradient_norm",
    "wasserstein",
]


def per_sample(out: Tensor, n: int, what: str = "the critic") -> Tensor:
    """A critic's output as one value per sample: ``(n,)`` or ``(n, 1)`` -> ``(n,)``;
    any other shape is refused naming ``what``."""
    if out.dim() == 2 and out.shape[1] == 1:
        out = out.squeeze(1)
    if out.shape != (n,):
        raise ValueError(
            f"{what} must return one value per sample, shape ({n},) or ({n}, 1), "
            f"got {tuple(out.shape)}"
        )
    return out


def _check(real: Tensor, fake: Tensor) -> None:
    for name, t in (("real", real), ("fake", fake)):
        if t.dim() != 1:
            raise ValueError(
                f"critic values on {name} samples must be one number per sample (shape (n,)), "
                f"got shape {tuple(t.shape)}"
            )
        if t.numel() == 0:
            raise ValueError(f"no {name} samples")


def logistic(real: Tensor, fake: Tensor, nu: float = 1.0) -> Tensor:
    r"""Binary cross-entropy of telling real (label 1) from fake (label 0) by logit ``r``.

    With ``nu`` fake samples per real one (weight ``nu`` on the fake term), the minimiser is
    :math:`r = \log p(x) - \log(\nu\, q(x))`: the NCE classifier of Gutmann & Hyvärinen.
    """
    _check(real, fake)
    if nu <= 0:
        raise ValueError(f"nu must be positive, got {nu}")
    return F.softplus(-real).mean() + nu * F.softplus(fake).mean()


def hinge(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge loss of the critic (Lim & Ye 2017; Miyato et al. 2018)."""
    _check(real, fake)
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def wasserstein(real: Tensor, fake: Tensor) -> Tensor:
    r"""Minus the Kantorovich-Rubinstein estimate :math:`E_p r - E_q r` of :math:`W_1(p, q)`.

    Only an estimate of :math:`W_1` when ``r`` is (near) 1-Lipschitz: pair it with
    :func:`clip_weights` or :func:`gradient_penalty`.
    """
    _check(real, fake)
    return fake.mean() - real.mean()


def kale(real: Tensor, fake: Tensor) -> Tensor:
    r"""Minus the KALE objective :math:`1 + E_p r - E_q e^{r}` (Arbel et al. 2021).

    In their notation the energy is :math:`E = -r`; the minimiser is :math:`r = \log p/q`
    and the negated minimum is :math:`KL(p \| q)`.
    """
    _check(real, fake)
    # E_q e^r as exp(logmeanexp r): finite as long as the mean is, not only every term
    log_mean_exp = torch.logsumexp(fake, 0) - math.log(fake.shape[0])
    return -real.mean() + torch.exp(log_mean_exp) - 1.0


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    target: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r""":math:`E_{\hat x} (\|\nabla_{\hat x} r(\hat x)\|_2 - 1)^2` at random interpolates.

    :math:`\hat x = \epsilon x + (1 - \epsilon) \tilde x` with :math:`\epsilon \sim U(0, 1)`
    per pair (Gulrajani et al. 2017); ``real`` and ``fake`` pair up row by row, and every
    dimension after the first is one sample's event. The penalty is differentiable in the
    critic's parameters (``create_graph``); ``fake`` is detached.
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"real and fake batches must have the same shape to interpolate, got "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, generator=generator, device=real.device, dtype=real.dtype)
    graph = torch.is_grad_enabled()  # a graph for the critic's update; none under no_grad
    with torch.enable_grad():  # also under no_grad (Objective.loss): the penalty needs it
        x = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
        out = critic(x)
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=graph)
    norm = grad.flatten(1).norm(dim=1)
    return ((norm - target) ** 2).mean()


def squared_gradient_norm(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    r""":math:`E_x \|\nabla_x r(x)\|_2^2` at the given points: the R1 penalty at data points
    and the R2 penalty at generated ones (Mescheder, Geiger & Nowozin 2018, who weight it by
    :math:`\gamma / 2`).

    Every dimension after the first is one sample's event; ``x`` is detached, and the result
    is differentiable in the critic's parameters (also under ``no_grad``, as
    :func:`gradient_penalty`).
    """
    graph = torch.is_grad_enabled()
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = critic(x)
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=graph)
    return grad.flatten(1).pow(2).sum(1).mean()


@torch.no_grad()
def clip_weights(module: nn.Module, clip: float) -> None:
    """Clamp every parameter of ``module`` to ``[-clip, clip]`` in place (WGAN)."""
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    for p in module.parameters():
        p.clamp_(-clip, clip)
