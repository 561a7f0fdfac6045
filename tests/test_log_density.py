"""The cheaper log-densities equal the distributions' own, bit for bit, values and gradients."""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrogen.inference import RenyiBound, importance, log_density
from pyrogen.inference.log_density import log_prob


def _value_and_grad(fn_of_logits: Any, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = logits.detach().requires_grad_()
    out = fn_of_logits(leaf)
    (grad,) = torch.autograd.grad(out, leaf, torch.linspace(-1.0, 2.0, out.numel()).view_as(out))
    return out.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("event_dims", [0, 1, 2])
def test_independent_bernoulli_equals_torch_exactly(dtype: torch.dtype, event_dims: int) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(5, 16, 7, 9, generator=gen, dtype=dtype)
    x = (torch.rand(16, 7, 9, generator=gen) > 0.5).to(dtype)  # broadcast over the 5

    def ours(lg: torch.Tensor) -> torch.Tensor:
        return log_prob(dist.Bernoulli(logits=lg).to_event(event_dims), x)

    def theirs(lg: torch.Tensor) -> torch.Tensor:
        return dist.Bernoulli(logits=lg).to_event(event_dims).log_prob(x)

    (v1, g1), (v2, g2) = _value_and_grad(ours, logits), _value_and_grad(theirs, logits)
    assert v1.shape == v2.shape and torch.equal(v1, v2)
    assert torch.equal(g1, g2)


def test_other_distributions_fall_back_to_their_own_log_prob() -> None:
    probs = torch.rand(3, 4)
    x = torch.bernoulli(probs)
    from_probs = dist.Bernoulli(probs=probs).to_event(1)  # its logits are computed lazily
    assert torch.equal(log_prob(from_probs, x), from_probs.log_prob(x))

    class Tempered(dist.Bernoulli):  # a subclass may mean something else by log_prob
        def log_prob(self, value: torch.Tensor) -> torch.Tensor:
            return 0.5 * super().log_prob(value)

    tempered = Tempered(logits=torch.zeros(3, 4)).to_event(1)
    assert torch.equal(log_prob(tempered, x), tempered.log_prob(x))
    normal = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    assert torch.equal(log_prob(normal, torch.ones(3)), normal.log_prob(torch.ones(3)))


def test_validation_errors_are_the_distributions_own() -> None:
    bern = dist.Bernoulli(logits=torch.zeros(2, 3), validate_args=True).to_event(1)
    with pytest.raises(ValueError, match="support"):
        log_prob(bern, torch.full((2, 3), 0.5))


class _VAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(12, 4)
        self.dec = nn.Linear(2, 12)

    def model(self, x: torch.Tensor) -> None:
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("enc", self.enc)
        with pyro.plate("data", x.shape[0]):
            h = self.enc(x)
            pyro.sample("z", dist.Normal(h[:, :2], nn.functional.softplus(h[:, 2:])).to_event(1))


@pytest.mark.parametrize("alpha,k", [(1.0, 1), (0.0, 5)])
def test_a_bound_and_its_gradients_are_unchanged(
    alpha: float, k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    vae = _VAE()
    x = torch.bernoulli(torch.full((8, 12), 0.3), generator=torch.Generator().manual_seed(1))

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        pyro.clear_param_store()
        torch.manual_seed(2)
        loss = RenyiBound(alpha, k).differentiable_loss(vae.model, vae.guide, x)
        return loss.detach(), list(torch.autograd.grad(loss, list(vae.parameters())))

    taken = []
    kernel = log_density._independent_bernoulli
    monkeypatch.setattr(
        log_density, "_independent_bernoulli", lambda *a: taken.append(1) or kernel(*a)
    )
    fast = loss_and_grads()
    assert taken  # the likelihood went through the cheaper kernel
    monkeypatch.setattr(importance, "log_prob", lambda fn, v, *a, **kw: fn.log_prob(v, *a, **kw))
    general = loss_and_grads()
    assert torch.equal(fast[0], general[0])
    assert all(torch.equal(a, b) for a, b in zip(fast[1], general[1], strict=True))
