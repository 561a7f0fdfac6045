r"""Hamiltonian Monte Carlo with a leading chain dimension and a per-chain accept.

One transition: draw :math:`p \sim N(0, M)`, take ``num_steps`` leapfrog steps of size
:math:`\epsilon` for :math:`H(z, p) = U(z) + \tfrac12 p^\top M^{-1} p`, and accept each chain's
end point with probability :math:`\min(1, e^{-\Delta H})`. The inverse mass :math:`M^{-1}` is
a diagonal tensor or a :class:`~pyrogen.inference.mcmc.mass.DenseInverseMass` over the
flattened position (:mod:`~pyrogen.inference.mcmc.mass`). A chain whose energy error is NaN,
infinite or above ``divergence_threshold`` is rejected and flagged divergent; the others are
untouched, because every operation is row-wise.

MCMC Using Hamiltonian Dynamics (Neal, 2011), https://arxiv.org/abs/1206.1901.

Example:
    >>> import torch
    >>> from pyrogen.inference.mcmc import hmc
    >>> potential = lambda z: 0.5 * (z**2).sum(-1)
    >>> state = hmc.init(torch.zeros(8, 3), potential)
    >>> state, info = hmc.step(state, potential, step_size=0.3, num_steps=5)
    >>> info.acceptance_prob.shape
    torch.Size([8])
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from pyrogen.inference.mcmc import mass
from pyrogen.inference.mcmc.mass import DenseInverseMass
from pyrogen.inference.mcmc.state import (
    GradientState,
    PotentialFn,
    check_jitter,
    check_positive_int,
    check_step_size,
    init,
    per_chain,
    potential_and_grad,
    select,
)

__all__ = [
    "HMCInfo",
    "build",
    "draw_stats",
    "init",
    "jitter_step_size",
    "kinetic_energy",
    "leapfrog",
    "step",
]


class HMCInfo(NamedTuple):
    """What one HMC transition reports, per chain.

    Attributes:
        acceptance_prob: Metropolis acceptance probability, ``(num_chains,)`` (0 for divergent).
        is_accepted: whether the proposal was taken.
        is_divergent: energy error non-finite or above the threshold.
        energy: Hamiltonian at the returned point (Stan's ``energy__``, used by BFMI).
        step_size: the step size used, ``(num_chains,)``.
        num_steps: leapfrog steps taken (the same for every chain).
        proposal: end of the trajectory, before the accept (ChEES needs it).
        proposal_momentum: momentum at the end of the trajectory.
    """

    acceptance_prob: Tensor
    is_accepted: Tensor
    is_divergent: Tensor
    energy: Tensor
    step_size: Tensor
    num_steps: int
    proposal: Tensor
    proposal_momentum: Tensor


def jitter_step_size(
    step_size: Tensor, num_chains: int, jitter: float, generator: torch.Generator | None = None
) -> Tensor:
    """Each chain's step size times a uniform factor in ``[1 - jitter, 1 + jitter]``.

    A fixed trajectory length can be close to a period of some direction, and chains barely
    move along it; jittering the step breaks that (Neal, 2011, section 5.4.2.2).
    """
    check_jitter(jitter)
    u = torch.rand(num_chains, dtype=step_size.dtype, device=step_size.device, generator=generator)
    return step_size * (1 + jitter * (2 * u - 1))


def kinetic_energy(
    momentum: Tensor, inverse_mass: Tensor | float | DenseInverseMass = 1.0
) -> Tensor:
    """:math:`\\tfrac12 p^T M^{-1} p` per chain, ``inverse_mass`` diagonal or dense."""
    return mass.kinetic_energy(momentum, inverse_mass)


def leapfrog(
    state: GradientState,
    momentum: Tensor,
    potential_fn: PotentialFn,
    step_size: Tensor | float,
    num_steps: int,
    inverse_mass: Tensor | float | DenseInverseMass = 1.0,
) -> tuple[GradientState, Tensor]:
    """``num_steps`` leapfrog steps for all chains; ``step_size`` scalar or per chain; the
    position moves by :math:`\\epsilon M^{-1} p` (diagonal or dense)."""
    eps = per_chain(step_size, state.position)
    z, grad = state.position, state.potential_grad
    p = momentum - 0.5 * eps * grad
    u = state.potential_energy
    for i in range(num_steps):
        z = z + mass.velocity(p, inverse_mass, eps)
        u, grad = potential_and_grad(potential_fn, z)
        p = p - (eps if i < num_steps - 1 else 0.5 * eps) * grad
    return GradientState(z, u, grad), p


def step(
    state: GradientState,
    potential_fn: PotentialFn,
    step_size: Tensor | float,
    num_steps: int,
    inverse_mass: Tensor | float | DenseInverseMass = 1.0,
    divergence_threshold: float = 1000.0,
    generator: torch.Generator | None = None,
) -> tuple[GradientState, HMCInfo]:
    """One HMC transition of every chain.

    Args:
        state: from :func:`init` or a previous step.
        potential_fn: ``U``, mapping ``(num_chains, *event_shape)`` to ``(num_chains,)``.
        step_size: a positive scalar or one per chain, ``(num_chains,)``.
        num_steps: leapfrog steps (a positive integer, shared by all chains).
        inverse_mass: diagonal of :math:`M^{-1}`, broadcastable to the event shape, or a
            :class:`~pyrogen.inference.mcmc.mass.DenseInverseMass` over the flattened event.
        divergence_threshold: energy error above which a transition counts as divergent.
        generator: optional ``torch.Generator`` for the momentum and the accept.
    """
    check_positive_int("num_steps", num_steps)
    check_step_size(step_size)
    z0 = state.position
    inverse_mass = mass.as_inverse_mass(inverse_mass, z0)
    noise = torch.randn(z0.shape, dtype=z0.dtype, device=z0.device, generator=generator)
    momentum = mass.momentum(noise, inverse_mass)
    energy0 = state.potential_energy + kinetic_energy(momentum, inverse_mass)
    proposal, p = leapfrog(state, momentum, potential_fn, step_size, num_steps, inverse_mass)
    energy1 = proposal.potential_energy + kinetic_energy(p, inverse_mass)
    delta = torch.nan_to_num(energy1 - energy0, nan=float("inf"))
    finite = torch.isfinite(delta) & torch.isfinite(proposal.potential_grad.flatten(1)).all(1)
    is_divergent = ~finite | (delta > divergence_threshold)
    acceptance_prob = torch.where(finite, torch.exp(torch.clamp(-delta, max=0.0)), 0.0)
    uniform = torch.rand(delta.shape, dtype=z0.dtype, device=z0.device, generator=generator)
    accept = (uniform < acceptance_prob) & finite
    new_state = select(accept, proposal, state)
    info = HMCInfo(
        acceptance_prob=acceptance_prob,
        is_accepted=accept,
        is_divergent=is_divergent,
        energy=torch.where(accept, energy1, energy0),
        step_size=torch.as_tensor(step_size, dtype=z0.dtype, device=z0.device).expand(z0.shape[:1]),
        num_steps=num_steps,
        proposal=proposal.position,
        proposal_momentum=p,
    )
    return new_state, info


def build(
    step_size: Tensor | float,
    num_steps: int,
    inverse_mass: Tensor | float | DenseInverseMass = 1.0,
    step_size_jitter: float = 0.0,
    divergence_threshold: float = 1000.0,
) -> Callable[..., tuple[GradientState, HMCInfo]]:
    """The registry's form: :func:`step` with these settings, ``(state, potential, generator)``.

    With ``step_size_jitter`` each transition first draws every chain's step size
    (:func:`jitter_step_size`).
    """
    check_jitter(step_size_jitter)

    def hmc_step(
        state: GradientState, potential_fn: PotentialFn, generator: torch.Generator | None = None
    ) -> tuple[GradientState, HMCInfo]:
        eps = step_size
        if step_size_jitter:
            z = state.position
            eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
            eps = jitter_step_size(eps, z.shape[0], step_size_jitter, generator)
        return step(
            state, potential_fn, eps, num_steps, inverse_mass, divergence_threshold, generator
        )

    return hmc_step


def draw_stats(state: GradientState, info: HMCInfo) -> dict[str, Tensor]:
    """Per-draw statistics under ArviZ's names (``num_steps`` becomes ``n_steps`` there)."""
    return {
        "acceptance_rate": info.acceptance_prob,
        "diverging": info.is_divergent,
        "energy": info.energy,
        "lp": -state.potential_energy,
        "step_size": info.step_size,
        "num_steps": torch.full_like(info.step_size, info.num_steps),
    }


# Re-exported so that ``hmc.init`` reads like BlackJAX's ``hmc.init``.
init = init
