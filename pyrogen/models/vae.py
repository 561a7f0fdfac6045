r"""Variational autoencoders as Pyro model/guide pairs, usable with any pyrogen objective.

.. math:: p(x, z) = \mathcal{N}(z; 0, I)\, p_\theta(x \mid z), \qquad
   q_\phi(z \mid x) = \mathcal{N}(z; \mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2),

with a Bernoulli (logits from the decoder) or a Gaussian (mean from the decoder, one learned
scale per pixel) likelihood. Data are always rows of ``D`` values, shape ``(N, D)``; the
convolutional variant reshapes them to images inside its networks, so every objective,
log-likelihood estimate and data loader sees the same layout.

Architectures:

* ``"burda"``: D-200-200-50, tanh, the two-hidden-layer MLP of Importance Weighted
  Autoencoders (Burda et al., 2015, https://arxiv.org/abs/1509.00519);
* ``"pyro"``: D-400-50, softplus, the network of Pyro's VAE tutorial;
* ``"conv"``: two stride-2 convolutions (32 and 64 channels) and a linear layer each way, for
  images whose height and width are multiples of 4 (28x28 MNIST, 8x8 digits).

Sizes follow the data: ``data_shape`` is ``(D,)`` or ``(C, H, W)``; ``z_dim`` is free.
Particles of vectorized objectives arrive as extra leading dimensions of ``z``; every
network maps any leading shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["ARCHITECTURES", "LIKELIHOODS", "VAE", "build_vae"]

ARCHITECTURES = ("burda", "pyro", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "softplus": nn.Softplus}
_MIN_SCALE = 1e-3  # floor on the Gaussian likelihood's scale: keeps log p(x|z) bounded


def _mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """``x (..., D) -> (loc, scale)`` of q(z | x), through hidden layers."""

    def __init__(self, x_dim: int, hidden: Sequence[int], z_dim: int, activation: str) -> None:
        super().__init__()
        self.net = _mlp([x_dim, *hidden, 2 * z_dim], activation)
        self.z_dim = z_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = self.net(x).split(self.z_dim, -1)
        return loc, log_scale.exp()


class MLPDecoder(nn.Module):
    """``z (..., z_dim) -> (..., D)``: logits (Bernoulli) or means (Gaussian)."""

    def __init__(self, z_dim: int, hidden: Sequence[int], x_dim: int, activation: str) -> None:
        super().__init__()
        self.net = _mlp([z_dim, *reversed(hidden), x_dim], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(z)
        return out


class ConvEncoder(nn.Module):
    """Rows of ``C*H*W`` values -> (loc, scale): two stride-2 4x4 convolutions, then linear."""

    def __init__(self, image_shape: tuple[int, int, int], z_dim: int) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape = image_shape
        self.z_dim = z_dim
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(64 * (h // 4) * (w // 4), 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = x.shape[:-1]
        hidden = self.conv(x.reshape(-1, *self.image_shape))
        loc, log_scale = self.head(hidden).reshape(*lead, 2 * self.z_dim).split(self.z_dim, -1)
        return loc, log_scale.exp()


class ConvDecoder(nn.Module):
    """``z -> rows of C*H*W``: linear, then two stride-2 transposed convolutions."""

    def __init__(self, z_dim: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape = image_shape
        self.grid = (64, h // 4, w // 4)
        self.head = nn.Sequential(nn.Linear(z_dim, math.prod(self.grid)), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, c, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        hidden = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.grid)
        out: torch.Tensor = self.deconv(hidden).reshape(*lead, math.prod(self.image_shape))
        return out


class _PixelScale(nn.Module):
    """One learned scale per dimension, softplus-parameterized and floored."""

    def __init__(self, x_dim: int) -> None:
        super().__init__()
        self.raw = nn.Parameter(torch.zeros(x_dim))

    def forward(self) -> torch.Tensor:
        return torch.nn.functional.softplus(self.raw) + _MIN_SCALE


class VAE(nn.Module):
    r"""A VAE whose :meth:`model` and :meth:`guide` are Pyro programs over rows ``x (N, D)``.

    Both register their networks with ``pyro.module`` (Pyro's VAE tutorial convention), so
    ``pyro.infer.SVI`` finds the parameters; a custom loop can also optimize
    ``vae.parameters()`` directly with any pyrogen objective as a module.

    Args:
        encoder: maps ``x`` to the guide's ``(loc, scale)``.
        decoder: maps ``z`` to logits (Bernoulli) or means (Gaussian) of ``x``.
        x_dim: D.
        z_dim: latent size.
        likelihood: ``"bernoulli"`` (data in {0, 1}) or ``"gaussian"`` (real data; one
            learned scale per dimension, floored at 1e-3).
        name: prefix of the ``pyro.module`` names; distinct VAEs trained in one param
            store need distinct names.

    Example:
        >>> import pyro, torch
        >>> from pyrogen.inference import IWAE
        >>> vae = build_vae("burda", data_shape=(64,), z_dim=8)
        >>> x = torch.bernoulli(torch.full((10, 64), 0.3))
        >>> loss = IWAE(num_particles=5).differentiable_loss(vae.model, vae.guide, x)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        x_dim: int,
        z_dim: int,
        likelihood: str = "bernoulli",
        name: str = "vae",
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.x_dim = int(x_dim)
        self.z_dim = int(z_dim)
        self.likelihood = likelihood
        self.name = name
        if likelihood == "gaussian":
            self.noise = _PixelScale(self.x_dim)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.x_dim:
            raise ValueError(
                f"expected data of shape (N, {self.x_dim}), got {tuple(x.shape)}: "
                "flatten images to rows"
            )

    def observation(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) with the pixel dimension as one event."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        return dist.Normal(out, self.noise()).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        """p(z) p(x | z), with ``z`` and ``x`` inside ``pyro.plate("data")``."""
        self._check(x)
        pyro.module(f"{self.name}.decoder", self.decoder)
        if self.likelihood == "gaussian":
            pyro.module(f"{self.name}.noise", self.noise)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(self.z_dim), 1.0).expand([self.z_dim]).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", self.observation(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z | x), amortized by the encoder."""
        self._check(x)
        pyro.module(f"{self.name}.encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images E[x | z] for z from the prior, shape ``(num_samples, D)``."""
        device = next(self.decoder.parameters()).device
        z = torch.randn(num_samples, self.z_dim, generator=generator, device=device)
        out = self.decoder(z)
        return out.sigmoid() if self.likelihood == "bernoulli" else out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean images E[x | z = mean of q(z | x)]."""
        self._check(x)
        loc, _ = self.encoder(x)
        out = self.decoder(loc)
        return out.sigmoid() if self.likelihood == "bernoulli" else out


def build_vae(
    architecture: str = "burda",
    data_shape: Sequence[int] = (784,),
    z_dim: int = 50,
    likelihood: str = "bernoulli",
    name: str = "vae",
) -> VAE:
    r"""One of the ready architectures, sized for the data.

    Args:
        architecture: ``"burda"`` (D-200-200-z, tanh), ``"pyro"`` (D-400-z, softplus) or
            ``"conv"``.
        data_shape: ``(D,)``, or ``(C, H, W)`` / ``(H, W)`` for images (required by
            ``"conv"``, which needs H and W divisible by 4).
        z_dim: latent size (50 in both papers).
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        name: prefix of the ``pyro.module`` names.
    """
    shape = tuple(int(s) for s in data_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"data_shape must be positive sizes, got {data_shape!r}")
    if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim < 1:
        raise ValueError(f"z_dim must be a positive int, got {z_dim!r}")
    x_dim = math.prod(shape)
    encoder: nn.Module
    decoder: nn.Module
    if architecture == "burda":
        encoder = MLPEncoder(x_dim, (200, 200), z_dim, "tanh")
        decoder = MLPDecoder(z_dim, (200, 200), x_dim, "tanh")
    elif architecture == "pyro":
        encoder = MLPEncoder(x_dim, (400,), z_dim, "softplus")
        decoder = MLPDecoder(z_dim, (400,), x_dim, "softplus")
    elif architecture == "conv":
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
            raise ValueError(
                "the conv architecture needs data_shape (C, H, W) or (H, W) with H and W "
                f"divisible by 4, got {data_shape!r}"
            )
        image = (shape[0], shape[1], shape[2])
        encoder, decoder = ConvEncoder(image, z_dim), ConvDecoder(z_dim, image)
    else:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    return VAE(encoder, decoder, x_dim, z_dim, likelihood, name)
