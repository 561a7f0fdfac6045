r"""Generators as Pyro programs, and the small networks of the 2-D mixture experiments.

:class:`Generator` wraps a network ``G`` as the Pyro model

.. code-block:: python

    with pyro.plate("data", n):
        z = pyro.sample("z", Normal(0, I))
        pyro.sample("x", Delta(G(z), event_dim), obs=x)

so it runs in :class:`pyro.infer.SVI`, in :class:`~pyrogen.inference.trainer.Trainer`, under
``poutine.trace`` and ``Predictive`` like any Pyro model; its data site has no usable
density, which is what the adversarial objectives expect. Call it with ``x=None`` and
``num_samples`` to draw.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

__all__ = ["Generator", "mlp"]


def mlp(
    sizes: list[int], activation: Callable[[], nn.Module] = nn.ReLU, batch_norm: bool = False
) -> nn.Sequential:
    """Linear layers of the given widths with ``activation()`` (and batch norm) between them
    (a module class, or any function making one: ``lambda: nn.LeakyReLU(0.2)``)."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(activation())
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """A network of Gaussian noise as a Pyro model with a ``Delta`` data site.

    Args:
        net: maps ``(n, latent_dim)`` to ``(n, *event_shape)``.
        latent_dim: dimension of ``z ~ N(0, I)``.
        event_shape: shape of one sample (``(2,)`` for the toy sets).
        name: the prefix of its parameters in Pyro's param store.
    """

    _zero: Tensor

    def __init__(
        self,
        net: nn.Module,
        latent_dim: int,
        event_shape: tuple[int, ...] | torch.Size,
        name: str = "generator",
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        self.net = net
        self.latent_dim = int(latent_dim)
        self.event_shape = torch.Size(event_shape)
        self.name = name
        self.register_buffer("_zero", torch.zeros(()))

    def forward(self, x: Tensor | None = None, num_samples: int | None = None) -> Tensor:
        """The Pyro model; returns the generated batch."""
        if x is None and num_samples is None:
            raise ValueError("pass the data x, or num_samples to draw without data")
        if x is not None and x.shape[1:] != self.event_shape:
            raise ValueError(
                f"data rows must have shape {tuple(self.event_shape)}, got {tuple(x.shape[1:])}"
            )
        n = x.shape[0] if x is not None else num_samples
        pyro.module(self.name, self)
        zero = self._zero
        with pyro.plate("data", n):
            prior = dist.Normal(zero, 1.0).expand([self.latent_dim]).to_event(1)
            z = pyro.sample("z", prior)
            value = self.net(z)
            return pyro.sample("x", dist.Delta(value, event_dim=len(self.event_shape)), obs=x)

    @torch.no_grad()
    def sample(self, num_samples: int) -> Tensor:
        """``num_samples`` draws, networks in evaluation mode (batch norm uses its running
        statistics), then restored to the mode they were in."""
        mode = self.training
        self.eval()
        try:
            z = torch.randn(num_samples, self.latent_dim, device=self._zero.device)
            return self.net(z)
        finally:
            self.train(mode)
