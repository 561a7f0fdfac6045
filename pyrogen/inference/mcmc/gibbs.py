r"""Block Gibbs sampling for any model with two conditionally independent blocks.

When the units of each block are independent given the other block, as in a restricted
Boltzmann machine, one sweep draws :math:`h \sim p(h \mid v)` then :math:`v \sim p(v \mid h)`
for all chains at once. The kernel asks the model only for those two conditionals
(:class:`BlockConditionals`); :class:`~pyrogen.models.BernoulliRBM` provides them. The chain
dimension is the leading dimension of ``visible``.

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

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

__all__ = [
    "BlockConditionals",
    "GibbsInfo",
    "GibbsState",
    "RBMGibbsInfo",
    "RBMGibbsState",
    "build",
    "init",
    "step",
]


class BlockConditionals(Protocol):
    """What block Gibbs needs of a model: a check of the starting states and one draw of each
    block given the other, with its conditional mean (the Rao-Blackwellised statistic)."""

    def check_visible(self, visible: Tensor) -> Tensor:
        """The chains' visible states ``(num_chains, ...)``, validated and cast."""
        ...

    def sample_hidden(
        self, visible: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """A draw of :math:`h \\sim p(h \\mid v)` per chain and :math:`E[h \\mid v]`."""
        ...

    def sample_visible(
        self, hidden: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """A draw of :math:`v \\sim p(v \\mid h)` per chain and :math:`E[v \\mid h]`."""
        ...


class GibbsState(NamedTuple):
    """Visible ``(num_chains, ...)`` and hidden ``(num_chains, ...)`` states."""

    visible: Tensor
    hidden: Tensor

    @property
    def position(self) -> Tensor:
        """The visible states: what :func:`~pyrogen.inference.mcmc.sample` records."""
        return self.visible


class GibbsInfo(NamedTuple):
    """Conditional means of the last sweep (Rao-Blackwellised statistics for CD).

    Attributes:
        hidden_mean: :math:`E[h \\mid v_{old}]` (for binary units, :math:`p(h=1 \\mid v)`).
        visible_mean: :math:`E[v \\mid h_{new}]`.
    """

    hidden_mean: Tensor
    visible_mean: Tensor


# The names under which the RBM sampler was first written (ContrastiveDivergence uses them).
RBMGibbsState = GibbsState
RBMGibbsInfo = GibbsInfo


@torch.no_grad()
def init(
    visible: Tensor, model: BlockConditionals, generator: torch.Generator | None = None
) -> GibbsState:
    """Chains start at ``visible`` (checked by the model); the hidden block is drawn."""
    visible = model.check_visible(visible)
    hidden, _ = model.sample_hidden(visible, generator)
    return GibbsState(visible, hidden)


@torch.no_grad()
def step(
    state: GibbsState, model: BlockConditionals, generator: torch.Generator | None = None
) -> tuple[GibbsState, GibbsInfo]:
    """One sweep ``v -> h -> v`` for every chain (the hidden block of ``state`` is not read)."""
    hidden, hidden_mean = model.sample_hidden(state.visible, generator)
    visible, visible_mean = model.sample_visible(hidden, generator)
    return GibbsState(visible, hidden), GibbsInfo(hidden_mean, visible_mean)


def build() -> Callable[..., tuple[GibbsState, GibbsInfo]]:
    """The registry's form: Gibbs has no settings, so the step is :func:`step` itself."""
    return step
