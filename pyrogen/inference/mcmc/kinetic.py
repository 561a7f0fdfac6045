r"""Kinetic (underdamped) Langevin dynamics, many chains at once: the BAOAB splitting.

The chains carry a momentum :math:`p` beside the position and follow

.. math:: dz = M^{-1} p\,dt, \qquad dp = -\nabla U(z)\,dt - \gamma p\,dt
    + \sqrt{2\gamma}\,M^{1/2} dW,

whose invariant law is :math:`e^{-U(z)} N(p; 0, M)`. The inverse mass :math:`M^{-1}` is
diagonal or dense (:class:`~pyrogen.inference.mcmc.mass.DenseInverseMass`, :math:`\Sigma =
L L^\top`: the drift is then :math:`\Sigma p` and the momentum noise :math:`L^{-\top}\xi`).
One step of size :math:`h` is BAOAB (Leimkuhler & Matthews, 2013,
https://doi.org/10.1093/amrx/abs010): half a kick, half a drift, the exact
Ornstein-Uhlenbeck update of the momentum
:math:`p \leftarrow e^{-\gamma h} p + \sqrt{1 - e^{-2\gamma h}}\,M^{1/2}\xi`, half a drift,
half a kick. It has no accept step (a bias of order :math:`h^2` in the positions; none for a
Gaussian target, whose position marginal BAOAB samples exactly) and one gradient per step.
The momentum persists between steps, which is what lets the chains travel: Arbel, Zhou &
Gretton (2021) sample their KALE models' latent spaces with it. ``friction`` is
:math:`\gamma`; large values approach overdamped Langevin (ULA).

Example:
    >>> import torch
    >>> from pyrogen.inference.mcmc import kinetic
    >>> potential = lambda z: 0.5 * (z**2).sum(-1)
    >>> state = kinetic.init(torch.zeros(8, 2), potential)
    >>> step = kinetic.build(step_size=0.3, friction=1.0)
    >>> state, info = step(state, potential)
    >>> state.position.shape
    torch.Size([8, 2])
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from pyrogen.inference.mcmc import mass
from pyrogen.inference.mcmc.langevin import LangevinInfo
from pyrogen.inference.mcmc.mass import DenseInverseMass
from pyrogen.inference.mcmc.state import (
    PotentialFn,
    check_step_size,
    per_chain,
    potential_and_grad,
)
from pyrogen.inference.mcmc.state import init as gradient_init

__all__ = ["KineticState", "build", "init", "step"]


class KineticState(NamedTuple):
    """Position, momentum, and the potential energy and its gradient at the position."""

    position: Tensor
    momentum: Tensor
    potential_energy: Tensor
    potential_grad: Tensor


def init(
    position: Tensor, potential_fn: PotentialFn, generator: torch.Generator | None = None
) -> KineticState:
    """Start chains at ``position`` with a standard normal momentum (the first step's
    refresh brings it to the mass matrix's scale)."""
    start = gradient_init(position, potential_fn)
    p = torch.randn(
        position.shape, dtype=position.dtype, device=position.device, generator=generator
    )
    return KineticState(start.position, p, start.potential_energy, start.potential_grad)


def step(
    state: KineticState,
    potential_fn: PotentialFn,
    step_size: Tensor | float,
    friction: float = 1.0,
    inverse_mass: Tensor | float | DenseInverseMass = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[KineticState, LangevinInfo]:
    """One BAOAB step of every chain; a chain whose new point is not finite stays put (its
    momentum refreshed)."""
    check_step_size(step_size)
    if not (math.isfinite(friction) and friction > 0):
        raise ValueError(f"friction must be positive and finite, got {friction!r}")
    z, p = state.position, state.momentum
    h = per_chain(step_size, z)
    inv_mass = mass.as_inverse_mass(inverse_mass, z)
    p = p - 0.5 * h * state.potential_grad
    z_new = z + mass.velocity(p, inv_mass, 0.5 * h)
    decay = torch.exp(-friction * h)
    noise = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    if isinstance(inv_mass, DenseInverseMass):
        p = decay * p + (1 - decay**2).sqrt() * mass.momentum(noise, inv_mass)
    else:
        p = decay * p + (1 - decay**2).sqrt() * inv_mass.rsqrt() * noise
    z_new = z_new + mass.velocity(p, inv_mass, 0.5 * h)
    u, grad = potential_and_grad(potential_fn, z_new)
    p = p - 0.5 * h * grad
    ok = (
        torch.isfinite(u)
        & torch.isfinite(grad.flatten(1)).all(1)
        & torch.isfinite(p.flatten(1)).all(1)
    )
    mask = ok.reshape(ok.shape + (1,) * (z.dim() - 1))
    fresh = mass.momentum(
        torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator), inv_mass
    )
    new = KineticState(
        torch.where(mask, z_new, z),
        torch.where(mask, p, fresh),
        torch.where(ok, u, state.potential_energy),
        torch.where(mask, grad, state.potential_grad),
    )
    steps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device).expand(z.shape[:1])
    info = LangevinInfo(ok.to(z.dtype), ok, ~ok, new.potential_energy, steps)
    return new, info


def build(
    step_size: Tensor | float,
    inverse_mass: Tensor | float | DenseInverseMass = 1.0,
    friction: float = 1.0,
) -> Callable[..., tuple[KineticState, LangevinInfo]]:
    """The registry's form of :func:`step`: ``(state, potential, generator)``."""

    def kinetic(
        state: KineticState, potential_fn: PotentialFn, generator: torch.Generator | None = None
    ) -> tuple[KineticState, LangevinInfo]:
        return step(state, potential_fn, step_size, friction, inverse_mass, generator)

    return kinetic
