r"""Langevin kernels: unadjusted (ULA) and Metropolis-adjusted (MALA), many chains at once.

With a diagonal preconditioner :math:`M^{-1}` and step :math:`h`, the proposal is

.. math:: z' = z - h M^{-1} \nabla U(z) + \sqrt{2h}\, M^{-1/2} \xi, \qquad \xi \sim N(0, I).

ULA takes it as is (its stationary law is biased, by :math:`O(h)`); MALA accepts it with
probability :math:`\min\{1, \pi(z') q(z \mid z') / \pi(z) q(z' \mid z)\}` per chain, so
:math:`\pi \propto e^{-U}` is exactly invariant.

With a dense preconditioner :math:`\Sigma = M^{-1} = L L^\top`
(:class:`~pyrogen.inference.mcmc.mass.DenseInverseMass`, over the flattened position) the
drift is :math:`h \Sigma \nabla U(z)`, the noise :math:`\sqrt{2h}\, L \xi`, and MALA's
proposal density :math:`q(z' \mid z) \propto \exp(-\|L^{-1}(z' - z + h \Sigma \nabla
U(z))\|^2 / 4h)`, the quadratic form in :math:`\Sigma^{-1}`: Riemann manifold Langevin
and Hamiltonian Monte Carlo methods (Girolami & Calderhead, 2011), section 5, with a
constant metric, https://doi.org/10.1111/j.1467-9868.2010.00765.x.

Exponential convergence of Langevin distributions and their discrete approximations
(Roberts & Tweedie, 1996), https://doi.org/10.2307/3318418.

Example:
    >>> import torch
    >>> from pyrogen.inference.mcmc import langevin
    >>> potential = lambda z: 0.5 * (z**2).sum(-1)
    >>> state = langevin.init(torch.zeros(8, 2), potential)
    >>> state, info = langevin.mala_step(state, potential, step_size=0.5)
    >>> bool((info.acceptance_prob <= 1).all())
    True
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
    check_step_size,
    init,
    per_chain,
    potential_and_grad,
    select,
    sum_event,
)

__all__ = ["LangevinInfo", "build_mala", "build_ula", "draw_stats", "init", "mala_step", "ula_step"]


class LangevinInfo(NamedTuple):
    """Per-chain report of a Langevin transition (ULA accepts every finite proposal).

    There is no Hamiltonian here: ``potential_energy`` is :math:`U` at the returned point.
    """

    acceptance_prob: Tensor
    is_accepted: Tensor
    is_divergent: Tensor
    potential_energy: Tensor
    step_size: Tensor


def _propose(
    state: GradientState,
    potential_fn: PotentialFn,
    step_size: Tensor | float,
    inverse_mass: Tensor | DenseInverseMass,
    generator: torch.Generator | None,
) -> GradientState:
    z = state.position
    h = per_chain(step_size, z)
    noise = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    if isinstance(inverse_mass, DenseInverseMass):
        drift = mass.velocity(state.potential_grad, inverse_mass, h)
        new = z - drift + (2 * h).sqrt() * mass.noise(noise, inverse_mass)
    else:
        new = z - h * inverse_mass * state.potential_grad + (2 * h * inverse_mass).sqrt() * noise
    u, grad = potential_and_grad(potential_fn, new)
    return GradientState(new, u, grad)


def _log_q(
    to: GradientState, frm: GradientState, h: Tensor, inverse_mass: Tensor | DenseInverseMass
) -> Tensor:
    """log q(to | from) up to a constant shared by both directions (the log-determinant of
    the proposal covariance is one)."""
    if isinstance(inverse_mass, DenseInverseMass):
        d = to.position - frm.position + mass.velocity(frm.potential_grad, inverse_mass, h)
        return -sum_event(mass.whiten(d, inverse_mass).pow(2) / (4 * h))
    mean = frm.position - h * inverse_mass * frm.potential_grad
    d = to.position - mean
    return -sum_event(d * d / (4 * h * inverse_mass))


def _finite(s: GradientState) -> Tensor:
    return (
        torch.isfinite(s.potential_energy)
        & torch.isfinite(s.position.flatten(1)).all(1)
        & torch.isfinite(s.potential_grad.flatten(1)).all(1)
    )


def _as_tensors(
    state: GradientState, step_size: Tensor | float, inverse_mass: Tensor | float | DenseInverseMass
) -> tuple[Tensor, Tensor | DenseInverseMass]:
    check_step_size(step_size)
    z = state.position
    return (
        torch.as_tensor(step_size, dtype=z.dtype, device=z.device).expand(z.shape[:1]),
        mass.as_inverse_mass(inverse_mass, z),
    )


def ula_step(
    state: GradientState,
    potential_fn: PotentialFn,
    step_size: Tensor | float,
    inverse_mass: Tensor | float | DenseInverseMass = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[GradientState, LangevinInfo]:
    """One unadjusted Langevin step; a chain whose proposal is not finite stays put."""
    step, inv_mass = _as_tensors(state, step_size, inverse_mass)
    proposal = _propose(state, potential_fn, step_size, inv_mass, generator)
    ok = _finite(proposal)
    new = select(ok, proposal, state)
    info = LangevinInfo(ok.to(step.dtype), ok, ~ok, new.potential_energy, step)
    return new, info


def mala_step(
    state: GradientState,
    potential_fn: PotentialFn,
    step_size: Tensor | float,
    inverse_mass: Tensor | float | DenseInverseMass = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[GradientState, LangevinInfo]:
    """One Metropolis-adjusted Langevin step, accepted or rejected per chain."""
    step, inv_mass = _as_tensors(state, step_size, inverse_mass)
    proposal = _propose(state, potential_fn, step_size, inv_mass, generator)
    h = per_chain(step_size, state.position)
    log_ratio = (
        state.potential_energy
        - proposal.potential_energy
        + _log_q(state, proposal, h, inv_mass)
        - _log_q(proposal, state, h, inv_mass)
    )
    ok = _finite(proposal) & ~torch.isnan(log_ratio)
    acceptance_prob = torch.where(ok, torch.exp(torch.clamp(log_ratio, max=0.0)), 0.0)
    z = state.position
    uniform = torch.rand(z.shape[:1], dtype=z.dtype, device=z.device, generator=generator)
    accept = (uniform < acceptance_prob) & ok
    new = select(accept, proposal, state)
    info = LangevinInfo(acceptance_prob, accept, ~ok, new.potential_energy, step)
    return new, info


def build_ula(
    step_size: Tensor | float, inverse_mass: Tensor | float | DenseInverseMass = 1.0
) -> Callable[..., tuple[GradientState, LangevinInfo]]:
    """The registry's form of :func:`ula_step`: ``(state, potential, generator)``."""

    def ula(
        state: GradientState, potential_fn: PotentialFn, generator: torch.Generator | None = None
    ) -> tuple[GradientState, LangevinInfo]:
        return ula_step(state, potential_fn, step_size, inverse_mass, generator)

    return ula


def build_mala(
    step_size: Tensor | float, inverse_mass: Tensor | float | DenseInverseMass = 1.0
) -> Callable[..., tuple[GradientState, LangevinInfo]]:
    """The registry's form of :func:`mala_step`: ``(state, potential, generator)``."""

    def mala(
        state: GradientState, potential_fn: PotentialFn, generator: torch.Generator | None = None
    ) -> tuple[GradientState, LangevinInfo]:
        return mala_step(state, potential_fn, step_size, inverse_mass, generator)

    return mala


def draw_stats(state: GradientState, info: LangevinInfo) -> dict[str, Tensor]:
    """Per-draw statistics. No ``energy``: ArviZ reads that as a Hamiltonian (``az.bfmi``), and
    a Langevin step has no momentum to resample; the potential is exported as ``lp = -U``."""
    return {
        "acceptance_rate": info.acceptance_prob,
        "diverging": info.is_divergent,
        "lp": -state.potential_energy,
        "step_size": info.step_size,
    }


init = init
