r"""A Bernoulli restricted Boltzmann machine: energy, free energy, conditionals, exact log Z.

.. math:: E(v, h) = -b^\top v - c^\top h - v^\top W h, \qquad
    F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + (v^\top W)_j),

so :math:`p(v) = e^{-F(v)} / Z`. The Pyro form of the model scores rows of data with
``pyro.factor("energy", -F(v))``, the unnormalized-model convention of this project.

Training Products of Experts by Minimizing Contrastive Divergence (Hinton, 2002),
https://doi.org/10.1162/089976602760128018.

Example:
    >>> import torch
    >>> rbm = BernoulliRBM(num_visible=4, num_hidden=3)
    >>> rbm.free_energy(torch.ones(2, 4)).shape
    torch.Size([2])
"""

from collections.abc import Iterator

import pyro
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BernoulliRBM"]


class BernoulliRBM(nn.Module):
    """Binary visible and hidden units, weights ``(num_visible, num_hidden)``.

    Args:
        num_visible: visible units.
        num_hidden: hidden units.
        init_scale: standard deviation of the initial weights (biases start at zero).
    """

    def __init__(self, num_visible: int, num_hidden: int, init_scale: float = 0.01) -> None:
        super().__init__()
        if num_visible < 1 or num_hidden < 1:
            raise ValueError("an RBM needs at least one visible and one hidden unit")
        self.weight = nn.Parameter(init_scale * torch.randn(num_visible, num_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(num_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(num_hidden))

    @property
    def num_visible(self) -> int:
        return self.weight.shape[0]

    @property
    def num_hidden(self) -> int:
        return self.weight.shape[1]

    def _check(self, v: Tensor, size: int, name: str) -> None:
        if v.shape[-1] != size:
            raise ValueError(f"{name} must end in {size} units, got shape {tuple(v.shape)}")

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """:math:`E(v, h)` over the batch dimensions."""
        self._check(v, self.num_visible, "visible")
        self._check(h, self.num_hidden, "hidden")
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - ((v @ self.weight) * h).sum(-1)

    def free_energy(self, v: Tensor) -> Tensor:
        """:math:`F(v) = -\\log \\sum_h e^{-E(v, h)}`."""
        self._check(v, self.num_visible, "visible")
        return -(v @ self.visible_bias) - F.softplus(v @ self.weight + self.hidden_bias).sum(-1)

    def hidden_logits(self, v: Tensor) -> Tensor:
        """Logits of :math:`p(h_j = 1 \\mid v)`."""
        return v @ self.weight + self.hidden_bias

    def visible_logits(self, h: Tensor) -> Tensor:
        """Logits of :math:`p(v_i = 1 \\mid h)`."""
        return h @ self.weight.T + self.visible_bias

    def check_visible(self, visible: Tensor) -> Tensor:
        """Chain states ``(num_chains, V)`` with values in {0, 1}, in the weights' dtype."""
        if visible.dim() != 2 or visible.shape[1] != self.num_visible:
            raise ValueError(
                f"visible must be (num_chains, {self.num_visible}), got {tuple(visible.shape)}"
            )
        if not ((visible == 0) | (visible == 1)).all():
            raise ValueError("visible states must be 0 or 1")
        return visible.to(self.weight.dtype)

    def sample_hidden(
        self, visible: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""A draw of :math:`h \sim p(h \mid v)` per row and :math:`p(h_j = 1 \mid v)`."""
        probs = torch.sigmoid(self.hidden_logits(visible))
        return _bernoulli(probs, generator), probs

    def sample_visible(
        self, hidden: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""A draw of :math:`v \sim p(v \mid h)` per row and :math:`p(v_i = 1 \mid h)`."""
        probs = torch.sigmoid(self.visible_logits(hidden))
        return _bernoulli(probs, generator), probs

    def model(self, data: Tensor) -> None:
        """Unnormalized Pyro program: ``pyro.factor("energy", -F(v))`` per row of ``data``."""
        with pyro.plate("data", data.shape[0]):
            pyro.factor("energy", -self.free_energy(data))

    @torch.no_grad()
    def log_partition(self, chunk_size: int = 4096) -> Tensor:
        """Exact :math:`\\log Z` by enumerating the smaller layer (up to about 24 units).

        Summing out the larger layer analytically leaves :math:`2^{\\min(V, H)}` terms, taken in
        chunks so memory stays bounded.
        """
        small = min(self.num_visible, self.num_hidden)
        if small > 24:
            raise ValueError(
                f"exact enumeration needs a layer of at most 24 units, the smaller has {small}"
            )
        hidden_smaller = self.num_hidden <= self.num_visible
        total = torch.tensor(float("-inf"), dtype=self.weight.dtype, device=self.weight.device)
        for states in _binary_states(small, chunk_size, self.weight):
            if hidden_smaller:
                terms = states @ self.hidden_bias + F.softplus(
                    states @ self.weight.T + self.visible_bias
                ).sum(-1)
            else:
                terms = -self.free_energy(states)
            total = torch.logaddexp(total, torch.logsumexp(terms, 0))
        return total


def _bernoulli(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(probs.shape, generator=generator, device=probs.device)
    return (u < probs).to(probs.dtype)


def _binary_states(n: int, chunk_size: int, like: Tensor) -> Iterator[Tensor]:
    """All 2^n binary vectors, in chunks of rows."""
    bits = 2 ** torch.arange(n, device=like.device)
    for start in range(0, 2**n, chunk_size):
        idx = torch.arange(start, min(start + chunk_size, 2**n), device=like.device)
        yield ((idx.unsqueeze(-1) & bits) > 0).to(like.dtype)
