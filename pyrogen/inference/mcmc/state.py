"""What every gradient-based kernel carries: position, potential energy and its gradient.

Positions have a leading chain dimension, ``(num_chains, *event_shape)``; a potential function
maps them to ``(num_chains,)``. Nothing here loops over chains.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

PotentialFn = Callable[[Tensor], Tensor]


class GradientState(NamedTuple):
    r"""State of HMC, MALA and Langevin chains.

    Attributes:
        position: ``(num_chains, *event_shape)``.
        potential_energy: :math:`U(z)`, ``(num_chains,)``.
        potential_grad: :math:`\nabla U(z)`, shaped like ``position``.
    """

    position: Tensor
    potential_energy: Tensor
    potential_grad: Tensor


def potential_and_grad(potential_fn: PotentialFn, position: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate ``U`` and its gradient for every chain at once (one backward pass).

    The gradient of the sum is the per-chain gradient because chains do not interact; a chain
    whose potential is NaN or infinite gets a non-finite gradient and no other chain is touched.
    A potential object with its own ``value_and_grad(position)`` (a
    :class:`~pyrogen.inference.mcmc.compiled.CompiledPotential`) is asked for both instead.
    """
    value_and_grad = getattr(potential_fn, "value_and_grad", None)
    if value_and_grad is not None:
        return value_and_grad(position)
    return eager_potential_and_grad(potential_fn, position)


def eager_potential_and_grad(potential_fn: PotentialFn, position: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`potential_and_grad` by running ``potential_fn`` and autograd."""
    with torch.enable_grad():
        z = position.detach().requires_grad_(True)
        u = potential_fn(z)
        if u.shape != position.shape[:1]:
            raise ValueError(
                f"the potential must return one value per chain, shape {tuple(position.shape[:1])}"
                f", got {tuple(u.shape)}"
            )
        (grad,) = torch.autograd.grad(u.sum(), z)
    return u.detach(), grad


def init(position: Tensor, potential_fn: PotentialFn) -> GradientState:
    """Start chains at ``position`` (``(num_chains, *event_shape)``).

    Raises:
        ValueError: a position without a chain dimension, a non-floating or non-finite
            position, or a potential that is not finite at some starting point.
    """
    if not isinstance(position, Tensor) or not position.is_floating_point():
        raise ValueError("the initial position must be a floating-point tensor")
    if position.dim() < 2:
        raise ValueError(
            "the initial position needs a leading chain dimension: (num_chains, *event_shape), "
            f"got shape {tuple(position.shape)}"
        )
    if position.shape[0] == 0:
        raise ValueError("at least one chain is needed")
    bad = ~torch.isfinite(position.flatten(1)).all(1)
    if bad.any():
        raise ValueError(f"non-finite initial position for chains {_listed(bad)}")
    u, grad = potential_and_grad(potential_fn, position)
    bad = ~(torch.isfinite(u) & torch.isfinite(grad.flatten(1)).all(1))
    if bad.any():
        raise ValueError(
            f"the potential or its gradient is not finite at the initial position of chains "
            f"{_listed(bad)}"
        )
    return GradientState(position.detach(), u, grad)


def per_chain(value: Tensor | float, position: Tensor) -> Tensor:
    """A scalar or ``(num_chains,)`` value shaped to broadcast against ``position``."""
    value = torch.as_tensor(value, dtype=position.dtype, device=position.device)
    if value.dim() == 0:
        return value
    if value.shape != position.shape[:1]:
        raise ValueError(
            f"a per-chain value must have shape {tuple(position.shape[:1])}, "
            f"got {tuple(value.shape)}"
        )
    return value.reshape(value.shape + (1,) * (position.dim() - 1))


def select(accept: Tensor, new: GradientState, old: GradientState) -> GradientState:
    """Per-chain choice between two states (a mask, never a Python branch)."""
    mask = accept.reshape(accept.shape + (1,) * (old.position.dim() - 1))
    return GradientState(
        torch.where(mask, new.position, old.position),
        torch.where(accept, new.potential_energy, old.potential_energy),
        torch.where(mask, new.potential_grad, old.potential_grad),
    )


def sum_event(x: Tensor) -> Tensor:
    """Sum everything but the chain dimension."""
    return x.flatten(1).sum(1)


def check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_step_size(step_size: Tensor | float) -> None:
    s = torch.as_tensor(step_size)
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"step_size must be positive and finite, got {step_size!r}")


def check_jitter(jitter: float) -> None:
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"step_size_jitter must be in [0, 1), got {jitter}")


def _listed(mask: Tensor) -> str:
    idx = mask.nonzero().flatten().tolist()
    return str(idx[:10])[:-1] + (", ...]" if len(idx) > 10 else "]")
