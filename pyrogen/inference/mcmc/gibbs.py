r"""Block Gibbs sampling for a Bernoulli RBM, every chain at once.

Given the visible layer the hidden units are independent, and conversely, so one sweep draws
:math:`h \sim p(h \mid v)` then :math:`v \sim p(v \mid h)` for all chains in two matrix
products. The chain dimension is the leading dimension of ``visible``.

Example:
    >>> import torch
    >>> from pyrogen.models.rbm import BernoulliRBM
    >>> from pyrogen.inference.mcmc import gibbs
    >>> rbm = BernoulliRBM(4, 3)
    >>> state = gibbs.init(torch.zeros(10, 4), rbm)
    >>> state, info = gibbs.step(state, rbm)
    >>> state.visible.shape
    torch.Size([10, 4])
"""

from typing import NamedTuple

import torch
from torch import Tensor

from pyrogen.models.rbm import BernoulliRBM

__all__ = ["RBMGibbsInfo", "RBMGibbsState", "init", "step"]


class RBMGibbsState(NamedTuple):
    """Visible ``(num_chains, V)`` and hidden ``(num_chains, H)`` binary states."""

    visible: Tensor
    hidden: Tensor


class RBMGibbsInfo(NamedTuple):
    """Conditional probabilities of the last sweep (Rao-Blackwellised statistics for CD).

    Attributes:
        hidden_probs: :math:`p(h=1 \\mid v_{old})`.
        visible_probs: :math:`p(v=1 \\mid h_{new})`.
    """

    hidden_probs: Tensor
    visible_probs: Tensor


def _bernoulli(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    return (torch.rand(probs.shape, generator=generator, device=probs.device) < probs).to(
        probs.dtype
    )


@torch.no_grad()
def init(
    visible: Tensor, rbm: BernoulliRBM, generator: torch.Generator | None = None
) -> RBMGibbsState:
    """Chains start at ``visible`` (``(num_chains, V)``, values in {0, 1}); hidden drawn."""
    if visible.dim() != 2 or visible.shape[1] != rbm.num_visible:
        raise ValueError(
            f"visible must be (num_chains, {rbm.num_visible}), got {tuple(visible.shape)}"
        )
    if not ((visible == 0) | (visible == 1)).all():
        raise ValueError("visible states must be 0 or 1")
    visible = visible.to(rbm.weight.dtype)
    hidden = _bernoulli(torch.sigmoid(rbm.hidden_logits(visible)), generator)
    return RBMGibbsState(visible, hidden)


@torch.no_grad()
def step(
    state: RBMGibbsState, rbm: BernoulliRBM, generator: torch.Generator | None = None
) -> tuple[RBMGibbsState, RBMGibbsInfo]:
    """One sweep ``v -> h -> v`` for every chain."""
    hidden_probs = torch.sigmoid(rbm.hidden_logits(state.visible))
    hidden = _bernoulli(hidden_probs, generator)
    visible_probs = torch.sigmoid(rbm.visible_logits(hidden))
    visible = _bernoulli(visible_probs, generator)
    return RBMGibbsState(visible, hidden), RBMGibbsInfo(hidden_probs, visible_probs)
