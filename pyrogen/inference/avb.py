r"""Adversarial Variational Bayes: a guide with no density, a critic in place of log q.

Adversarial Variational Bayes: Unifying Variational Autoencoders and Generative Adversarial
Networks (Mescheder, Nowozin & Geiger, 2017), https://arxiv.org/abs/1701.04722. The guide
may be any sampler :math:`z = f_\phi(x, \epsilon)`, whose density is unknown. A critic
:math:`T(x, z)` is trained to tell pairs :math:`(x, z \sim q_\phi(z \mid x))` from pairs
:math:`(x, z \sim p(z))` by the logistic loss; its optimum is

.. math:: T^*(x, z) = \log q_\phi(z \mid x) - \log p(z),

so the ELBO :math:`E_q[\log p(x \mid z) - (\log q_\phi(z \mid x) - \log p(z))]` becomes
:math:`E_q[\log p(x \mid z) - T^*(x, z)]`, which needs no density of the guide.

**The critic's parameterisation, as in the paper's code.** The network learns only
:math:`\log q`: :math:`T(x, z) = T_\psi(x, z) - \log p(z)` (for a standard normal prior,
:math:`T_\psi(x, z) + \|z\|^2/2` up to a constant), with :math:`\log p(z)` the model's own
prior density at :math:`z`. At the optimum :math:`T_\psi = \log q_\phi(z \mid x)`, and the
model/guide loss is the negative ELBO with :math:`T_\psi` standing in for :math:`\log q`:

.. math:: \mathcal{L}_{model} = -\sum_n \big(\log p(x_n, z_n) - T_\psi(x_n, z_n)\big),
    \qquad z_n = f_\phi(x_n, \epsilon_n).

**What is differentiated.** The critic's loss reaches the critic only (the latents and the
prior term are detached). The model/guide loss reaches the model's parameters through
:math:`\log p(x, z)` and the guide's through the sample path :math:`z = f_\phi(x, \epsilon)`,
in :math:`\log p(x, z)` and in :math:`T_\psi(x, z)` (whose parameters are held fixed). It
does not differentiate :math:`T^*`'s own dependence on :math:`\phi`: by the paper's
Proposition 2, :math:`E_q[\nabla_\phi T^*(x, z)] = 0`, so that term's expectation vanishes.

**Implicit guides, the Pyro way.** The guide writes its latent at a ``Delta`` site marked
``infer={"implicit": True}`` (:func:`implicit_sample` does both); its noise is drawn inside
the guide's network, or at sample sites the model does not have. Importance-weighted
objectives and :func:`~pyrogen.metrics.log_likelihood` refuse such a guide;
:class:`pyro.infer.Predictive` and plain guide sampling run it as any other.

Every latent site of the model must sit in the data plate (one latent per data row); the
critic sees the rows ``x`` and the latents of a row flattened and concatenated in the
model's order, ``z`` of shape ``(n, d)``. A constrained latent (a positive scale, a simplex)
enters in unconstrained coordinates, Pyro's ``biject_to(support)`` as HMC uses: ``z`` is
then the log of a scale, and every density above is the one of the unconstrained latents
(the site's density plus ``log |det J|``), so the critic learns a density on the whole
space, and adaptive contrast standardises a symmetric-looking variable rather than a
skewed positive one. The ELBO is the same in either coordinates. A Bayesian model with
global latents fits as one data row (``x`` of shape ``(1, ...)``, the latents in a data
plate of size 1) with adaptive contrast: the row is repeated ``contrast_particles`` times.

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> from torch import nn
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    ...         pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)
    >>> encoder = nn.Linear(4, 2)
    >>> def guide(x):
    ...     pyro.module("encoder", encoder)
    ...     with pyro.plate("data", x.shape[0]):
    ...         eps = torch.randn(x.shape[0], 2)
    ...         implicit_sample("z", encoder(torch.cat([x, eps], -1)), event_dim=1)
    >>> class Critic(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.net = nn.Sequential(nn.Linear(4, 32), nn.ELU(), nn.Linear(32, 1))
    ...     def forward(self, x, z):
    ...         return self.net(torch.cat([x, z], -1)).squeeze(-1)
    >>> avb = AVB(Critic())
    >>> losses = avb.differentiable_loss(model, guide, torch.randn(8, 2))
    >>> losses._fields
    ('critic', 'model')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.poutine.trace_struct import Trace
from torch import Tensor, nn
from torch.distributions import biject_to

from pyrogen.compat import is_subsample
from pyrogen.inference import critic as losses
from pyrogen.inference.densities import per_row, site_log_prob_per_row
from pyrogen.inference.objective import FromIterable, Objective, check_int, frozen

__all__ = ["AVB", "AVBLosses", "implicit_sample"]


def implicit_sample(
    name: str,
    value: Tensor,
    event_dim: int = 0,
    moments: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """A latent whose value a network computed, with no usable density: a ``Delta`` site
    marked ``infer={"implicit": True}``, the marker importance-weighted objectives refuse.

    ``moments``: the mean and standard deviation of ``q(z | x)`` when the guide's structure
    gives them (e.g. ``z = m(x) + sum_k a_k(x) v_k(eps_k)``, as in the AVB paper's
    adaptive-contrast encoder), each broadcastable to ``value``; adaptive contrast then
    standardises with them instead of drawing several latents per row."""
    infer: Any = {"implicit": True}  # pyrogen's marker, beside Pyro's own infer keys
    if moments is not None:
        loc, scale = moments
        infer["moments"] = (loc.expand_as(value), scale.expand_as(value))
    out: Tensor = pyro.sample(name, dist.Delta(value, event_dim=event_dim), infer=infer)
    return out


class _Losses(NamedTuple):
    critic: Any
    model: Any


class AVBLosses(FromIterable, _Losses):
    """``(critic, model)`` losses; also built from one iterable, as Pyro's SVI rebuilds
    tuple losses."""

    __slots__ = ()


class _Pass(NamedTuple):
    """One run of guide and model on a batch (``K`` particles per row; 1 without adaptive
    contrast), and the contrast draws."""

    z: Tensor  # (K, n, d): the guide's latents, on the sample path
    log_joint: Tensor  # (K, n): log p(x, z) at the guide's latents
    log_prior: Tensor  # (K, n): log p(z) at the guide's latents
    z_contrast: Tensor  # (K, n, d): latents from the contrast (the prior, or N(0, I))
    log_contrast: Tensor  # (K, n): its log-density at them
    moments: tuple[Tensor, Tensor] | None = None  # (K, n, d) each: the guide's own mean, sd


def _total(parts: list[Tensor]) -> Tensor:
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out


def _standard_normal(u: Tensor) -> Tensor:
    """log N(u; 0, I) per row: the last dimension is the event."""
    return -0.5 * (u**2).sum(-1) - 0.5 * u.shape[-1] * math.log(2 * math.pi)


def _is_real(support: Any) -> bool:
    return support is constraints.real or (
        isinstance(support, constraints.independent) and support.base_constraint is constraints.real
    )


def _unconstrained_rows(name: str, site: Any, n: int, k: int) -> tuple[Tensor, Tensor]:
    """A latent site's value in unconstrained coordinates as ``(K, n, d)`` (particles, data
    rows, the row's values; the rows were repeated particle-major, ``K n`` of them), and
    ``log |det J|`` of the map back to the site's support per particle and row, ``(K, n)``.
    The map is Pyro's ``biject_to(support)``, as HMC uses; a real latent is its own value."""
    fn, value = site["fn"], site["value"]
    if _is_real(fn.support):
        rows = per_row(name, site, value, k * n, fn.event_dim).reshape(k, n, -1)
        return rows, value.new_zeros(k, n)
    transform = biject_to(fn.support)
    u = transform.inv(value)
    log_det = transform.log_abs_det_jacobian(u, value)
    site_event = fn.event_dim - transform.codomain.event_dim  # event dims left in log_det
    u_event = transform.domain.event_dim + site_event
    rows = per_row(name, site, u, k * n, u_event).reshape(k, n, -1)
    return rows, per_row(name, site, log_det, k * n, site_event).sum(1).reshape(k, n)


def _latents(sites: list[tuple[str, Any]], n: int, k: int) -> tuple[Tensor, Tensor]:
    """The latents of each particle and row, unconstrained and concatenated in the model's
    order, ``(K, n, d)``, and the summed ``log |det J|``, ``(K, n)``."""
    parts = [_unconstrained_rows(name, site, n, k) for name, site in sites]
    return torch.cat([z for z, _ in parts], -1), _total([j for _, j in parts])


def _log_prob_rows(name: str, site: Any, n: int, k: int) -> Tensor:
    """A site's log-density summed per particle and data row, ``(K, n)``."""
    return site_log_prob_per_row(name, site, k * n).reshape(k, n)


def _repeat(args: tuple[Any, ...], n: int, k: int) -> tuple[Any, ...]:
    """Tensor arguments with the data's rows, each row repeated ``k`` times (particle-major);
    so every guide draws ``k`` independent latents per row, whatever its noise source."""
    return tuple(
        a.repeat(k, *([1] * (a.dim() - 1)))
        if isinstance(a, Tensor) and a.dim() >= 1 and a.shape[0] == n
        else a
        for a in args
    )


def _latent_sites(trace: Trace) -> list[tuple[str, Any]]:
    return [
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not is_subsample(site["fn"])
    ]


class AVB(Objective):
    r"""Adversarial Variational Bayes with a critic :math:`T(x, z)`; two roles.

    - ``critic``: the logistic loss of :func:`~pyrogen.inference.critic.logistic` on
      :math:`T(x, z)` for :math:`z \sim q(z \mid x)` (label 1) against
      :math:`z \sim p(z)` (label 0), summed over the data points.
    - ``model``: the negative ELBO with :math:`T_\psi` for :math:`\log q` (see the module
      notes), summed over the data points; the model's and guide's Pyro parameters.

    Both losses in one call (:class:`pyro.infer.SVI`: simultaneous steps), or each on its own
    batch through :class:`~pyrogen.inference.Trainer` (alternating steps,
    ``critic_steps`` critic updates per model update). :attr:`stats` holds the mean critic
    values on posterior and prior pairs and the ELBO estimate per data point.

    Args:
        critic: a module ``critic(x, z) -> (n,)``: data rows ``(n, ...)``, latents ``(n, d)``.
        critic_steps: critic updates per model update in the trainer.
        adaptive_contrast: compare the standardised latents :math:`u = (z - \mu(x)) /
            \sigma(x)` (the row's mean and standard deviation over ``contrast_particles``
            draws of the guide, detached) with :math:`\mathcal{N}(0, I)` instead of
            :math:`z` with the prior (the paper's section 3.3): the critic then learns
            :math:`T_\psi(x, u) = \log \tilde q(u \mid x)`, a density much closer to its
            contrast, and :math:`\log q(z \mid x) = T_\psi(x, u) - \sum \log \sigma(x)`.
            The rows (every tensor argument with the data's first dimension) are repeated
            ``contrast_particles`` times, so any guide draws that many latents per row.
            A guide that knows its own mean and sd (``implicit_sample(..., moments=)``, as
            the paper's adaptive-contrast encoder does) is standardised with them, and one
            draw per row is enough.
        contrast_particles: guide draws per row for adaptive contrast (the losses average
            over them; at least 2 unless the guide gives its moments). The
            standardisation's finite-sample shape biases the fit: on the conjugate test
            the posterior sd came out 1 % high at 8 draws (0.4520 against 0.4472) and
            within its standard error at 64.

    The data rows are the first argument after model and guide; the model and guide may
    take more.

    The optimisers default to the paper's code on MNIST: Adam with betas (0.5, 0.999), lr
    1e-4 for the critic and 5e-5 for model and guide.
    """

    roles = ("critic", "model")
    model_role = "model"
    default_optimizers: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
        "critic": (torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.999)}),
        "model": (torch.optim.Adam, {"lr": 5e-5, "betas": (0.5, 0.999)}),
    }

    def __init__(
        self,
        critic: nn.Module,
        critic_steps: int = 1,
        adaptive_contrast: bool = False,
        contrast_particles: int = 8,
    ) -> None:
        super().__init__(num_particles=1, max_plate_nesting=1)
        if isinstance(contrast_particles, bool) or not isinstance(contrast_particles, int):
            raise TypeError(f"contrast_particles must be an int, got {contrast_particles!r}")
        if contrast_particles < 1:
            raise ValueError(f"contrast_particles must be at least 1, got {contrast_particles}")
        self.adaptive_contrast = bool(adaptive_contrast)
        self.contrast_particles = contrast_particles if adaptive_contrast else 1
        self.critic = self.add_player("critic", critic, role="critic")
        self.critic_steps = check_int("critic_steps", critic_steps, 1)
        self.stats: dict[str, float] = {}

    def steps_per_iteration(self) -> dict[str, int]:
        return {"critic": self.critic_steps, "model": 1}

    # One pass over guide, model and the contrast.
    def _traces(
        self, model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any
    ) -> tuple[Trace, Trace]:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        return model_trace, guide_trace

    def _pass(
        self, model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any
    ) -> _Pass:
        if not args or not isinstance(args[0], Tensor) or args[0].dim() < 1:
            raise TypeError("AVB's first argument after model and guide must be the data rows")
        n, k = args[0].shape[0], self.contrast_particles
        # k > 1: several draws per row (the rows repeated), to standardise each row's latents
        model_trace, guide_trace = self._traces(model, guide, _repeat(args, n, k), kwargs)
        latent = _latent_sites(model_trace)
        if not latent:
            raise ValueError("the model has no latent site: AVB needs one to infer")
        missing = [name for name, _ in latent if name not in guide_trace.nodes]
        if missing:
            raise ValueError(f"the guide has no site for the model's latent site(s) {missing}")
        sites = [
            (name, site)
            for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and not is_subsample(site["fn"])
        ]
        # Densities of the unconstrained latents: the site densities plus log |det J|.
        z, log_det = _latents(latent, n, k)
        log_joint = _total([_log_prob_rows(name, site, n, k) for name, site in sites]) + log_det
        log_prior = _total([_log_prob_rows(name, site, n, k) for name, site in latent]) + log_det
        if self.adaptive_contrast:
            eps = torch.randn_like(z)
            moments = self._moments(latent, guide_trace, n, k)
            return _Pass(z, log_joint, log_prior, eps, _standard_normal(eps), moments)
        # The prior's draws: the model run with its latents free (observed sites stay).
        with torch.no_grad(), poutine.block():
            prior_trace = poutine.trace(model).get_trace(*args, **kwargs)
        prior_latent = _latent_sites(prior_trace)
        with torch.no_grad():
            z_prior, log_det_prior = _latents(prior_latent, n, 1)
            log_p = _total([_log_prob_rows(name, site, n, 1) for name, site in prior_latent])
            log_p = log_p + log_det_prior
        return _Pass(z, log_joint, log_prior, z_prior, log_p)

    def _score(self, x: Tensor, z: Tensor) -> Tensor:
        """The critic on every particle's pair, ``(K, n)``."""
        k, n = z.shape[:2]
        rows = x.unsqueeze(0).expand(k, *x.shape).reshape(k * n, *x.shape[1:])
        return losses.per_sample(self.critic(rows, z.reshape(k * n, -1)), k * n).reshape(k, n)

    def _moments(
        self, latent: list[tuple[str, Any]], guide_trace: Trace, n: int, k: int
    ) -> tuple[Tensor, Tensor] | None:
        """The guide's own mean and sd of every latent (``implicit_sample(...,
        moments=)``), ``(K, n, d)`` each and detached; ``None`` when it gives none."""
        given: list[Any] = [
            (guide_trace.nodes[name]["infer"] or {}).get("moments") for name, _ in latent
        ]
        if all(m is None for m in given):
            if k < 2:
                raise ValueError(
                    "adaptive contrast standardises each row by its latents' mean and sd: "
                    "give them with implicit_sample(..., moments=(loc, scale)) or draw "
                    f"contrast_particles >= 2 latents per row (got {k})"
                )
            return None
        names = [name for (name, _), m in zip(latent, given, strict=True) if m is None]
        if names:
            raise ValueError(f"the guide gives moments for some latent sites, not for {names}")
        locs, scales = [], []
        for (name, site), (loc, scale) in zip(latent, given, strict=True):
            fn = site["fn"]
            if not _is_real(fn.support):
                raise ValueError(f"moments are for real latents; site {name!r} is constrained")
            locs.append(per_row(name, site, loc.detach(), k * n, fn.event_dim).reshape(k, n, -1))
            scales.append(
                per_row(name, site, scale.detach(), k * n, fn.event_dim).reshape(k, n, -1)
            )
        return torch.cat(locs, -1), torch.cat(scales, -1)

    def _standardised(
        self, z: Tensor, moments: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor]:
        """Adaptive contrast: ``(z - mu(x)) / sigma(x)`` per row, with the guide's own
        moments or else the row's mean and standard deviation over its particles (either
        detached), and ``sum log sigma(x)``."""
        if moments is None:
            mu, sigma = z.detach().mean(0), z.detach().std(0)
        else:
            mu, sigma = moments
        sigma = sigma.clamp_min(torch.finfo(z.dtype).tiny)
        return (z - mu) / sigma, sigma.log().sum(-1)

    def _critic_loss(self, x: Tensor, p: _Pass) -> Tensor:
        if self.adaptive_contrast:
            u, _ = self._standardised(p.z.detach(), p.moments)
            t_post = self._score(x, u) - _standard_normal(u)
        else:
            t_post = self._score(x, p.z.detach()) - p.log_prior.detach()
        t_contrast = self._score(x, p.z_contrast) - p.log_contrast
        self.stats.update(
            critic_posterior=float(t_post.detach().mean()),
            critic_prior=float(t_contrast.detach().mean()),
        )
        return x.shape[0] * losses.logistic(t_post.flatten(), t_contrast.flatten())

    def _model_loss(self, x: Tensor, p: _Pass) -> Tensor:
        with frozen(self.critic.parameters()):
            if self.adaptive_contrast:  # log q(z|x) = log q~(u|x) - sum log sigma(x)
                u, log_sigma = self._standardised(p.z, p.moments)
                log_q = self._score(x, u) - log_sigma
            else:
                log_q = self._score(x, p.z)  # T_psi: the critic's stand-in for log q(z|x)
        elbo = (p.log_joint - log_q).mean(0)  # per row, over its particles
        self.stats["elbo"] = float(elbo.detach().mean())
        return -elbo.sum()

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> AVBLosses:
        p = self._pass(model, guide, args, kwargs)
        x = args[0]
        return AVBLosses(critic=self._critic_loss(x, p), model=self._model_loss(x, p))

    def role_loss(
        self,
        role: str,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        self._check_role(role)
        if role == "critic":
            with torch.no_grad():
                p = self._pass(model, guide, args, kwargs)
            return self._critic_loss(args[0], p)
        return self._model_loss(args[0], self._pass(model, guide, args, kwargs))
