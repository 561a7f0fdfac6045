r"""KALE: an energy on a generator, trained as the critic of a KL lower bound.

Generalized Energy Based Models (Arbel, Zhou & Gretton, ICLR 2021),
https://arxiv.org/abs/2003.05033. The learned model is
:math:`Q(dx) \propto e^{-E(x)} G(dx)`: a base generator :math:`G` (a Pyro model whose data
site has no usable density, as for :mod:`~pyrogen.inference.gan`) tilted by an energy
:math:`E`. With a learned scalar :math:`A` (a log-normaliser), the KL Approximate Lower-bound
Estimate is

.. math:: \mathrm{KALE}(P \| G) = \sup_{E, A}\; 1 - E_P[E + A] - E_G[e^{-(E + A)}]
    \;\le\; KL(P \| G),

with equality when :math:`E + A = -\log dP/dG` is in the family; then
:math:`e^{-E} G / e^{-A}` is :math:`P`, and at the optimum in :math:`A` alone
:math:`A = \log E_G[e^{-E}]`, the log-normaliser of :math:`Q`.

Roles, as the reference code (MichaelArbel/GeneralizedEBM, ``trainer.py``, ``compute.py``):

- ``critic`` (the energy and :math:`A`): minimises :math:`-\mathrm{KALE}`, computed in log
  space, :math:`E_P[E + A] + \exp(\mathrm{logmeanexp}(-(E(G(z)) + A))) - 1`, plus
  ``penalty`` times the paper's gradient penalty, the mean *squared* gradient norm of
  :math:`E` at random interpolates between data and generated points (not WGAN-GP's
  :math:`(\|g\| - 1)^2`). :math:`A` starts at :math:`\mathrm{logmeanexp}(-E(G(z)))` over
  ``init_batches`` generated batches, before the first energy step.
- ``generator``: minimises :math:`-\hat A = -(\mathrm{logsumexp}(-E(G(z))) - \log n)`, the
  batch estimate of the log-normaliser, with the energy held fixed: the generated points
  move towards low energy, each weighted by its share of :math:`e^{-E}`.

Energy steps follow the paper's schedule (:meth:`KALE.steps_at`): ``energy_steps`` per
generator step (5), and ``warmup_steps`` (100) in the first two iterations and every
``warmup_every`` (500) generator steps. ``stats["kale"]`` is the KALE estimate of the last
energy step (its penalty left out). Adam with lr 1e-4 and betas (0.5, 0.999) for both roles
(the reference's ``configs/training.yaml``; its learning-rate decay is left to the user).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pyrogen.inference import critic as losses
from pyrogen.inference.gan import Adversarial
from pyrogen.inference.objective import check_int

__all__ = ["KALE", "LogNormaliser"]


class LogNormaliser(nn.Module):
    """The scalar :math:`A` of KALE, and whether it was initialised (a buffer, so that a
    checkpoint keeps both)."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()))
        self.register_buffer("initialised", torch.tensor(False))

    def forward(self) -> Tensor:
        return self.value


def _log_mean_exp(x: Tensor) -> Tensor:
    return torch.logsumexp(x, 0) - math.log(x.shape[0])


class KALE(Adversarial):
    r"""KALE's energy and generator losses (see the module notes).

    Args:
        energy: module mapping a batch ``(n, *event)`` to energies ``(n,)``.
        penalty: weight of the paper's gradient penalty (1 in the reference's training
            configuration; 0 turns it off).
        energy_steps: energy updates per generator update (5).
        warmup_steps: energy updates in the first two iterations and every ``warmup_every``
            generator updates (100, and 500).
        init_batches: generated batches whose log-mean-exp of ``-E`` starts :math:`A`.
        data_site: name of the generator's data site.
        r1, r2: the R1 / R2 penalties on the energy at data / generated points, as for
            :class:`~pyrogen.inference.gan.Adversarial` (0: off).

    ``stats`` after an energy step: ``kale`` (the estimate), ``energy_data`` and
    ``energy_generated`` (mean energies), ``log_normaliser`` (:math:`A`).
    """

    default_optimizers: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
        "critic": (torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.999)}),
        "generator": (torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.999)}),
    }

    def __init__(
        self,
        energy: nn.Module,
        penalty: float = 1.0,
        energy_steps: int = 5,
        warmup_steps: int = 100,
        warmup_every: int = 500,
        init_batches: int = 10,
        data_site: str = "x",
        *,
        r1: float = 0.0,
        r2: float = 0.0,
    ) -> None:
        super().__init__(energy, data_site, pack=1, critic_steps=energy_steps, r1=r1, r2=r2)
        self.energy = self.critic
        self.log_normaliser: LogNormaliser = self.add_player(  # type: ignore[assignment]
            "log_normaliser", LogNormaliser(), role="critic"
        )
        if not (isinstance(penalty, int | float) and penalty >= 0):
            raise ValueError(f"penalty must be a number >= 0, got {penalty!r}")
        self.penalty = float(penalty)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 1)
        self.warmup_every = check_int("warmup_every", warmup_every, 1)
        self.init_batches = check_int("init_batches", init_batches, 1)

    def steps_at(self, iteration: int) -> dict[str, int]:
        """The reference's schedule: long energy phases at the start and every
        ``warmup_every`` generator steps (one generator step per iteration)."""
        warm = iteration < 2 or iteration % self.warmup_every == 0
        return {"critic": self.warmup_steps if warm else self.critic_steps, "generator": 1}

    # The losses, on energies.
    def critic_objective(
        self, real: Tensor, fake: Tensor, real_x: Tensor, fake_x: Tensor
    ) -> Tensor:
        a = self.log_normaliser()
        # minus KALE in log space, with the log-ratio r = -(E + A)
        loss = losses.kale(-(real + a), -(fake + a))
        self.stats.update(
            kale=-float(loss.detach()),
            energy_data=float(real.detach().mean()),
            energy_generated=float(fake.detach().mean()),
            log_normaliser=float(a.detach()),
        )
        if self.penalty > 0:
            energy = self._critic_values
            loss = loss + self.penalty * losses.gradient_penalty(energy, real_x, fake_x, target=0.0)
        return loss

    def generator_objective(self, fake: Tensor) -> Tensor:
        return -_log_mean_exp(-fake)  # minus the batch estimate of A

    def critic_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        self._start_log_normaliser(model, args, kwargs)
        return super().critic_loss(model, guide, *args, **kwargs)

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        self._start_log_normaliser(model, args, kwargs)
        return super().differentiable_loss(model, guide, *args, **kwargs)

    def _start_log_normaliser(self, model: Callable[..., Any], args: Any, kwargs: Any) -> None:
        """Before the first energy loss (trainer or SVI): A from generated batches."""
        if not bool(self.log_normaliser.initialised):
            self.initialise_log_normaliser(model, *args, **kwargs)

    @torch.no_grad()
    def initialise_log_normaliser(
        self, model: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> float:
        """Set :math:`A = \\log E_G[e^{-E}]` from ``init_batches`` generated batches (the
        model called with the given arguments); returns it."""
        energies = []
        for _ in range(self.init_batches):
            _, fake = self._batches(model, args, kwargs)
            energies.append(self._critic_values(fake))
        value = _log_mean_exp(-torch.cat(energies))
        self.log_normaliser.value.copy_(value)
        flag = self.log_normaliser.initialised
        assert isinstance(flag, Tensor)
        flag.fill_(True)
        return float(value)
