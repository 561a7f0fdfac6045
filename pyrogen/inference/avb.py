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
model's order, ``z`` of shape ``(n, d)``.

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

from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from torch import Tensor, nn

from pyrogen.compat import is_subsample
from pyrogen.inference import critic as losses
from pyrogen.inference.densities import per_row, site_log_prob_per_row
from pyrogen.inference.objective import Objective, frozen

__all__ = ["AVB", "AVBLosses", "implicit_sample"]


def implicit_sample(name: str, value: Tensor, event_dim: int = 0) -> Tensor:
    """A latent whose value a network computed, with no usable density: a ``Delta`` site
    marked ``infer={"implicit": True}``, the marker importance-weighted objectives refuse."""
    infer: Any = {"implicit": True}  # pyrogen's marker, beside Pyro's own infer keys
    out: Tensor = pyro.sample(name, dist.Delta(value, event_dim=event_dim), infer=infer)
    return out


class _Losses(NamedTuple):
    critic: Any
    model: Any


class AVBLosses(_Losses):
    """``(critic, model)`` losses; also built from one iterable, as Pyro's SVI rebuilds
    tuple losses."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> AVBLosses:
        if len(args) == 1 and not kwargs and not isinstance(args[0], Tensor | float):
            args = tuple(args[0])
        return super().__new__(cls, *args, **kwargs)


class _Pass(NamedTuple):
    """One run of guide and model on a batch, and a draw of the prior."""

    z: Tensor  # (n, d): the guide's latents, on the sample path
    log_joint: Tensor  # (n,): log p(x, z) at the guide's latents
    log_prior: Tensor  # (n,): log p(z) at the guide's latents
    z_prior: Tensor  # (n, d): latents drawn from the model's prior
    log_prior_of_prior: Tensor  # (n,): log p(z) at them


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

    def __init__(self, critic: nn.Module, critic_steps: int = 1) -> None:
        super().__init__(num_particles=1, max_plate_nesting=1)
        self.critic = self.add_player("critic", critic, role="critic")
        if isinstance(critic_steps, bool) or not isinstance(critic_steps, int):
            raise TypeError(f"critic_steps must be an int, got {critic_steps!r}")
        if critic_steps < 1:
            raise ValueError(f"critic_steps must be at least 1, got {critic_steps}")
        self.critic_steps = critic_steps
        self.stats: dict[str, float] = {}

    def steps_per_iteration(self) -> dict[str, int]:
        return {"critic": self.critic_steps, "model": 1}

    # One pass over guide, model and prior.
    def _pass(
        self, model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any
    ) -> _Pass:
        if not args or not isinstance(args[0], Tensor) or args[0].dim() < 1:
            raise TypeError("AVB's first argument after model and guide must be the data rows")
        n = args[0].shape[0]
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        latent = _latent_sites(model_trace)
        if not latent:
            raise ValueError("the model has no latent site: AVB needs one to infer")
        missing = [name for name, _ in latent if name not in guide_trace.nodes]
        if missing:
            raise ValueError(f"the guide has no site for the model's latent site(s) {missing}")
        log_joint = sum(
            site_log_prob_per_row(name, site, n)
            for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and not is_subsample(site["fn"])
        )
        log_prior = sum(site_log_prob_per_row(name, site, n) for name, site in latent)
        z = torch.cat(
            [per_row(name, s, s["value"], n, s["fn"].event_dim) for name, s in latent], -1
        )
        # The prior's draws: the model run with its latents free (observed sites stay).
        with torch.no_grad(), poutine.block():
            prior_trace = poutine.trace(model).get_trace(*args, **kwargs)
        prior_latent = _latent_sites(prior_trace)
        z_prior = torch.cat(
            [per_row(name, s, s["value"], n, s["fn"].event_dim) for name, s in prior_latent], -1
        )
        with torch.no_grad():
            log_prior_of_prior = sum(
                site_log_prob_per_row(name, site, n) for name, site in prior_latent
            )
        assert isinstance(log_joint, Tensor) and isinstance(log_prior, Tensor)
        assert isinstance(log_prior_of_prior, Tensor)
        return _Pass(z, log_joint, log_prior, z_prior, log_prior_of_prior)

    def _score(self, x: Tensor, z: Tensor) -> Tensor:
        return losses.per_sample(self.critic(x, z), x.shape[0])

    def _critic_loss(self, x: Tensor, p: _Pass) -> Tensor:
        t_post = self._score(x, p.z.detach()) - p.log_prior.detach()
        t_prior = self._score(x, p.z_prior) - p.log_prior_of_prior
        self.stats.update(
            critic_posterior=float(t_post.detach().mean()),
            critic_prior=float(t_prior.detach().mean()),
        )
        return x.shape[0] * losses.logistic(t_post, t_prior)

    def _model_loss(self, x: Tensor, p: _Pass) -> Tensor:
        with frozen(self.critic.parameters()):
            log_q = self._score(x, p.z)  # T_psi: the critic's stand-in for log q(z|x)
        elbo = p.log_joint - log_q
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
