r"""The four-point toy of Adversarial Variational Bayes (Mescheder et al., 2017, section 6.1).

x is uniform over the 4 one-hot vectors of length 4, z is 2-d with a standard normal prior,
p(x | z) has 4 Bernoulli logits. :class:`FourPointToy` holds the decoder and an encoder,
implicit (``z = f(x, eps)``, eps ~ N(0, I_64), for AVB) or Gaussian (the plain VAE), each
3 x 64 ELU as in the paper; :class:`ResidualCritic` is its critic T(x, z). The optimum of
the expected log-likelihood is -log 4.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrogen.inference.avb import implicit_sample

__all__ = ["FourPointToy", "ResidualCritic", "elu_net"]

NOISE = 64


def elu_net(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class FourPointToy(nn.Module):
    """Decoder p(x | z) and an encoder: implicit (AVB) or Gaussian (VAE)."""

    def __init__(self, implicit: bool, hidden: int = 64) -> None:
        super().__init__()
        self.implicit = implicit
        self.decoder = elu_net([2, hidden, hidden, hidden, 4])
        self.encoder = elu_net(
            [4 + (NOISE if implicit else 0), hidden, hidden, hidden, 2 if implicit else 4]
        )

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            if self.implicit:
                eps = torch.randn(x.shape[0], NOISE, device=x.device)
                implicit_sample("z", self.encoder(torch.cat([x, eps], -1)), event_dim=1)
            else:
                loc, log_scale = self.encoder(x).chunk(2, -1)
                pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    @torch.no_grad()
    def posterior_samples(self, x: torch.Tensor, num: int) -> torch.Tensor:
        """``num`` draws of q(z | x) for one row ``x``."""
        rows = x.expand(num, -1)
        trace = pyro.poutine.trace(self.guide).get_trace(rows)
        value = trace.nodes["z"]["value"]
        assert isinstance(value, torch.Tensor)
        return value

    @torch.no_grad()
    def log_px(self, points: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x) of each point by prior sampling, and its delta-method standard error."""
        z = torch.randn(num, 2, device=points.device)
        logits = self.decoder(z)  # (num, 4)
        log_lik = dist.Bernoulli(logits=logits.unsqueeze(1)).log_prob(points).sum(-1)
        log_mean = torch.logsumexp(log_lik, 0) - math.log(num)
        ratio = torch.softmax(log_lik, 0) * num
        return log_mean, (ratio.var(0) / num).sqrt()


class ResidualCritic(nn.Module):
    """T_psi(x, z): [x, z] -> 256 -> residual blocks -> 1 (the paper's toy critic)."""

    def __init__(self, width: int = 256, blocks: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(6, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ELU(), nn.Linear(width, width), nn.ELU(), nn.Linear(width, width))
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.ELU(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([x, z], -1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).squeeze(-1)
