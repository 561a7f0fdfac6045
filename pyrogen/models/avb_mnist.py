r"""The fully connected MNIST networks of Adversarial Variational Bayes (Mescheder et al. 2017).

The paper's code (LMescheder/AdversarialVariationalBayes, ``full0`` and ``full0_ac``)
decodes with z-300-300-784 (softplus) into Bernoulli logits. Its encoders, rewritten here:

- :class:`NoiseEncoder` (AVB): ``x`` centred to [-1, 1]; before each of the two 300-unit
  softplus layers and the output layer, a linear map of the noise ``eps ~ N(0, I_32)`` is
  added to the layer's input; the output layer starts near zero.
- :class:`BasisNoiseEncoder` (AVB + adaptive contrast): ``z = m(x) + sum_k a_k(x) v_k(eps_k)``
  with ``a_k(x) = elu(l_k(x) - 5) + 1 > 0`` and each ``v_k`` a 3 x 128 ELU network of its
  own noise. Since ``v_k`` does not depend on ``x``, the mean and variance of ``q(z | x)``
  follow from the moments of the ``v_k`` (estimated over the batch), ``E z = m + sum a_k E
  v_k`` and ``Var z = sum a_k^2 Var v_k``; the guide hands them to AVB's adaptive contrast
  (:func:`~pyrogen.inference.avb.implicit_sample` with ``moments``).

:class:`InnerProductCritic` follows the paper's adversary,
``T(x, z) = <theta(x), s(z)> + T_x(x) + T_z(z)``, smaller for a CPU: one trunk per input
(two 300-unit leaky-ReLU layers) feeds both of that input's heads (the paper's code has a
separate 3 x 1024 network for each of the four, and 8192 features), 256 features.
:func:`build` assembles the model/guide pairs of the benchmark: a Gaussian VAE (the same
decoder, a 784-300-300 softplus Gaussian encoder) for the ELBO and IWAE, and the two
implicit ones.
"""

from __future__ import annotations

import math

import pyro
import torch
from torch import Tensor, nn

from pyrogen.inference.avb import implicit_sample
from pyrogen.models.vae import VAE, MLPDecoder, MLPEncoder

__all__ = [
    "KINDS",
    "BasisNoiseEncoder",
    "ImplicitVAE",
    "InnerProductCritic",
    "NoiseEncoder",
    "build",
]

KINDS = ("gaussian", "implicit", "implicit-ac")
X_DIM = 784
HIDDEN = 300


def _tiny(layer: nn.Linear) -> nn.Linear:
    """A layer that starts near zero, as the paper's code initialises its output layers."""
    nn.init.trunc_normal_(layer.weight, std=1e-5)
    nn.init.zeros_(layer.bias)
    return layer


class NoiseEncoder(nn.Module):
    """``x, eps -> z``: noise added linearly before every layer (the paper's ``full0``);
    ``hidden`` units per layer (the paper's 300 by default)."""

    def __init__(
        self, z_dim: int, eps_dim: int = 32, x_dim: int = X_DIM, hidden: int = HIDDEN
    ) -> None:
        super().__init__()
        self.eps_dim = eps_dim
        self.layers = nn.ModuleList([nn.Linear(x_dim, hidden), nn.Linear(hidden, hidden)])
        self.noise = nn.ModuleList(
            [nn.Linear(eps_dim, x_dim), nn.Linear(eps_dim, hidden), nn.Linear(eps_dim, hidden)]
        )
        self.out = _tiny(nn.Linear(hidden, z_dim))

    def forward(self, x: Tensor) -> Tensor:
        eps = torch.randn(*x.shape[:-1], self.eps_dim, dtype=x.dtype, device=x.device)
        h = 2 * x - 1
        for layer, noise in zip(self.layers, self.noise, strict=False):
            h = nn.functional.softplus(layer(h + noise(eps)))
        out: Tensor = self.out(h + self.noise[-1](eps))
        return out


class _Basis(nn.Module):
    """``K`` ELU networks eps_dim-128-128-128-z_dim, one per noise vector, as batched
    matrix products over ``(K, n, ...)``."""

    def __init__(self, num: int, eps_dim: int, z_dim: int, width: int = 128) -> None:
        super().__init__()
        sizes = [eps_dim, width, width, width, z_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1 / math.sqrt(a)  # nn.Linear's default initialisation
            self.weights.append(nn.Parameter(torch.empty(num, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num, 1, b).uniform_(-bound, bound)))

    def forward(self, eps: Tensor) -> Tensor:
        h = eps
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = nn.functional.elu(h)
        return h


class BasisNoiseEncoder(nn.Module):
    """``x, eps -> (z, E z, sd z)``: ``z = m(x) + sum_k a_k(x) v_k(eps_k)`` (the paper's
    ``full0_ac``); the moments from those of the ``v_k`` over the batch. ``hidden`` units
    per trunk layer and ``basis_width`` per layer of each ``v_k`` (the paper's 300 and 128
    by default)."""

    def __init__(
        self,
        z_dim: int,
        num_basis: int,
        eps_dim: int = 32,
        x_dim: int = X_DIM,
        hidden: int = HIDDEN,
        basis_width: int = 128,
    ) -> None:
        super().__init__()
        self.z_dim, self.num_basis, self.eps_dim = z_dim, num_basis, eps_dim
        self.x_dim = x_dim
        self.trunk = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus()
        )
        self.mean = _tiny(nn.Linear(hidden, z_dim))
        self.weight = nn.Linear(hidden, num_basis * z_dim)
        self.basis = _Basis(num_basis, eps_dim, z_dim, width=basis_width)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if x.dim() != 2:
            raise ValueError(f"expected rows (n, {self.x_dim}), got {tuple(x.shape)}")
        n = x.shape[0]
        h = self.trunk(2 * x - 1)
        m = self.mean(h)
        a = nn.functional.elu(self.weight(h) - 5.0) + 1.0  # (n, K z_dim), positive
        a = a.reshape(n, self.num_basis, self.z_dim).transpose(0, 1)  # (K, n, z_dim)
        eps = torch.randn(self.num_basis, n, self.eps_dim, dtype=x.dtype, device=x.device)
        v = self.basis(eps)  # (K, n, z_dim)
        z = m + (a * v).sum(0)
        # v does not depend on x: its moments over the batch are those of the noise's map
        v_mean = v.mean(1, keepdim=True)
        v_var = v.var(1, keepdim=True) if n > 1 else torch.zeros_like(v_mean)
        loc = m + (a * v_mean).sum(0)
        scale = (a.square() * v_var).sum(0).sqrt()
        return z, loc, scale


class ImplicitVAE(VAE):
    """:class:`~pyrogen.models.vae.VAE`'s model with an implicit guide: the encoder maps
    ``x`` (and its own noise) to ``z``, or to ``(z, loc, scale)`` when it knows its
    moments."""

    def guide(self, x: Tensor) -> None:
        self._check(x)
        pyro.module(f"{self.name}.encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            out = self.encoder(x)
            if isinstance(out, tuple):
                z, loc, scale = out
                implicit_sample("z", z, event_dim=1, moments=(loc, scale))
            else:
                implicit_sample("z", out, event_dim=1)

    @torch.no_grad()
    def posterior_draws(self, x: Tensor, num: int) -> Tensor:
        """``num`` draws of ``q(z | x)`` per row, ``(num, n, z_dim)``: the rows repeated
        (each repeat draws its own noise), one encoder call."""
        out = self.encoder(x.repeat(num, 1))
        z = out[0] if isinstance(out, tuple) else out
        return z.reshape(num, x.shape[0], -1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        z = self.posterior_draws(x, 1)[0]
        return self.decoder(z).sigmoid()


class InnerProductCritic(nn.Module):
    """``T(x, z) = <theta(x), s(z)> + T_x(x) + T_z(z)`` (the paper's adversary, smaller)."""

    def __init__(
        self, z_dim: int, x_dim: int = X_DIM, hidden: int = HIDDEN, features: int = 256
    ) -> None:
        super().__init__()

        def trunk(d: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(d, hidden),
                nn.LeakyReLU(0.2),
                nn.Linear(hidden, hidden),
                nn.LeakyReLU(0.2),
            )

        self.x_trunk, self.z_trunk = trunk(x_dim), trunk(z_dim)
        self.theta = _tiny(nn.Linear(hidden, features))
        self.s = nn.Linear(hidden, features)
        self.t_x = _tiny(nn.Linear(hidden, 1))
        self.t_z = _tiny(nn.Linear(hidden, 1))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        hx, hz = self.x_trunk(2 * x - 1), self.z_trunk(z)
        theta = nn.functional.elu(self.theta(hx))
        out = (theta * self.s(hz)).sum(-1) + self.t_x(hx).squeeze(-1) + self.t_z(hz).squeeze(-1)
        return out


def build(kind: str, z_dim: int, x_dim: int = X_DIM, name: str = "avb_mnist") -> VAE:
    """The model/guide pair of one benchmark row; the decoder is built first, so with the
    same seed every kind starts from the same decoder."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    decoder = MLPDecoder(z_dim, (HIDDEN, HIDDEN), x_dim, "softplus")
    if kind == "gaussian":
        encoder = MLPEncoder(x_dim, (HIDDEN, HIDDEN), z_dim, "softplus")
        return VAE(encoder, decoder, x_dim, z_dim, name=name)
    implicit: nn.Module
    if kind == "implicit":
        implicit = NoiseEncoder(z_dim, x_dim=x_dim)
    else:  # the paper's code: 16 noise vectors at z = 8, 32 at z = 32
        implicit = BasisNoiseEncoder(z_dim, num_basis=max(16, z_dim), x_dim=x_dim)
    return ImplicitVAE(implicit, decoder, x_dim, z_dim, name=name)
