r"""AVB for the posterior of any Pyro model: an implicit guide fitted through the model's potential.

:class:`~pyrogen.inference.AVB` infers latents that sit in a data plate, one per row. A
Bayesian model with global latents (a regression's weights, eight schools' ``mu`` and
``tau``) fits it as one row; :func:`fit_avb_posterior` makes that row for any such model,
so that AVB stands beside the Gaussian guides and HMC in a posterior comparison without the
model being rewritten:

- the model's posterior in unconstrained coordinates is its potential
  :math:`U(\zeta) = -\log p(\text{data}, T(\zeta)) - \log |\det J_T(\zeta)|`
  (:class:`~pyrogen.inference.mcmc.ModelPotential`, as HMC uses; batched over draws by the
  plate, vmap or loop path its probe picks);
- the *rows model* has one real latent ``z`` of that dimension per row, a standard normal
  site, and a ``pyro.factor`` of :math:`-U(z) - \log \mathcal{N}(z; 0, I)`, so its joint
  density is the posterior's, unnormalised, and AVB's ELBO is the model's ELBO in
  unconstrained coordinates;
- the guide is :class:`FlatImplicitGuide`, :math:`z = A \epsilon + b + f(\epsilon)` with
  :math:`\epsilon \sim \mathcal{N}(0, I)` and ``f`` a small ELU network whose last layer
  starts at zero (a Gaussian at the start, with no density once ``f`` moves);
- AVB runs with adaptive contrast, ``draws`` guide draws per step standardised by their own
  mean and sd, against a critic of the standardised latents (:class:`FlatCritic`).

The rows' plate sits left of every plate of the model and of the potential's chain plate,
and the potential runs under ``poutine.block``, so the model's own sites and plates are as
in any other run of it.

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", y.shape[0]):
    ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> fit = fit_avb_posterior(model, torch.tensor([0.5, 1.5]), num_steps=5, draws=16)
    >>> fit.draws(100)["mu"].shape
    torch.Size([100])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import Tensor, nn

from pyrogen.inference.avb import AVB, implicit_sample
from pyrogen.inference.mcmc import ModelPotential
from pyrogen.inference.objective import check_int
from pyrogen.inference.trainer import Trainer

__all__ = ["AVBPosterior", "FlatCritic", "FlatImplicitGuide", "fit_avb_posterior"]


class FlatImplicitGuide(nn.Module):
    """``z = A eps + b + f(eps)``, ``eps ~ N(0, I_noise)``, ``f`` a two-layer ELU network
    whose last layer starts at zero: a Gaussian at the start, with no density once ``f``
    has moved."""

    def __init__(self, dim: int, noise: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.dim, self.noise = check_int("dim", dim, 1), check_int("noise", noise, 1)
        self.linear = nn.Linear(noise, dim)
        self.net = nn.Sequential(
            nn.Linear(noise, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU()
        )
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, n: int) -> Tensor:
        """``n`` draws, ``(n, dim)``."""
        eps = torch.randn(n, self.noise, dtype=self.linear.weight.dtype)
        return self.linear(eps) + self.out(self.net(eps))


class FlatCritic(nn.Module):
    """``T(x, u)``: a two-layer ELU network of the (standardised) latents alone; the one
    data row is the same in every pair."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


class AVBPosterior:
    """A model's posterior as AVB's rows: :meth:`model` and :meth:`guide` take the rows
    (``(n, 1)``, their values unused), :meth:`draws` maps guide draws to the model's sites.

    Args:
        potential: the model's :class:`~pyrogen.inference.mcmc.ModelPotential`.
        guide: a module ``guide(n) -> (n, potential.dim)`` of unconstrained draws.
    """

    def __init__(self, potential: ModelPotential, guide: nn.Module) -> None:
        self.potential = potential
        self.net = guide
        # left of the model's plates and of the potential's chain plate at -(nesting + 1)
        self.plate_dim = -(potential.max_plate_nesting + 2)
        self._base = dist.Normal(torch.zeros(potential.dim, dtype=potential.dtype), 1.0).to_event(1)
        self._name = f"avb_posterior_guide_{id(self):x}"  # a fit of its own in the param store
        self.history: dict[str, list[float]] = {}
        """The trainer's history (``elbo``, ``critic``, ``model`` per step)."""
        self.seconds = 0.0
        """The fit's wall time."""
        self.gradient_evaluations = 0
        """Evaluations of the model's gradient: steps times draws per step."""

    def _rows(self, n: int) -> Any:
        return pyro.plate("avb_rows", n, dim=self.plate_dim)

    def model(self, rows: Tensor) -> None:
        n, d = rows.shape[0], self.potential.dim
        with self._rows(n):
            z = pyro.sample("z", self._base)
            flat = z.reshape(n, d)
            with poutine.block():
                u = self.potential(flat)
            log_factor = -u - self._base.log_prob(flat)
            pyro.factor("posterior", log_factor.reshape(z.shape[:-1]))

    def guide(self, rows: Tensor) -> None:
        pyro.module(self._name, self.net)
        n = rows.shape[0]
        with self._rows(n):
            z = self.net(n)
            implicit_sample("z", z.reshape((n,) + (1,) * (-self.plate_dim - 1) + z.shape[1:]), 1)

    @torch.no_grad()
    def draws(self, num: int) -> dict[str, Tensor]:
        """``num`` draws of every latent and deterministic site, ``(num, *shape)``."""
        flat = self.net(num).to(self.potential.dtype)
        out = self.potential.draws(flat.unsqueeze(1))  # num "chains" of one draw each
        return {k: v.squeeze(1) for k, v in out.items()}


def fit_avb_posterior(
    model: Callable[..., Any],
    *args: Any,
    num_steps: int = 3000,
    draws: int = 256,
    critic_steps: int = 5,
    lr: float = 3e-4,
    critic_lr: float = 1e-3,
    noise: int = 16,
    hidden: int = 64,
    critic_hidden: int = 128,
    seed: int = 0,
    progress: bool = False,
    **kwargs: Any,
) -> AVBPosterior:
    """Fits an implicit guide to ``model(*args, **kwargs)``'s posterior by AVB with adaptive
    contrast (module notes), with pyrogen's :class:`~pyrogen.inference.Trainer`.

    Args:
        num_steps: guide updates, each after ``critic_steps`` critic updates.
        draws: guide draws per update (the adaptive contrast's particles).
        lr, critic_lr: Adam learning rates of the guide and the critic.
        noise, hidden, critic_hidden: the networks' sizes.

    Returns:
        the fitted :class:`AVBPosterior`, with its ``history``, ``seconds`` and
        ``gradient_evaluations``.
    """
    num_steps = check_int("num_steps", num_steps, 1)
    draws = check_int("draws", draws, 2)
    potential = ModelPotential(model, args, kwargs)
    _ = potential.batching  # the probe, outside any handler of the fit
    torch.manual_seed(seed)
    fit = AVBPosterior(
        potential, FlatImplicitGuide(potential.dim, noise, hidden).to(potential.dtype)
    )
    avb = AVB(
        FlatCritic(potential.dim, critic_hidden).to(potential.dtype),
        critic_steps=critic_steps,
        adaptive_contrast=True,
        contrast_particles=draws,
    )
    trainer = Trainer(
        avb,
        fit.model,
        fit.guide,
        optimizers={
            "critic": (torch.optim.Adam, {"lr": critic_lr}),
            "model": (torch.optim.Adam, {"lr": lr}),
        },
        progress=progress,
    )
    rows = torch.zeros(1, 1, dtype=potential.dtype)
    start = time.perf_counter()
    fit.history = trainer.fit(rows, num_steps, 1, seed=seed)
    fit.seconds = time.perf_counter() - start
    fit.gradient_evaluations = num_steps * draws
    return fit
