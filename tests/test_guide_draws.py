"""A guide's draws and densities, checked site by site against densities computed by hand,
and their ArviZ export."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrogen.inference import implicit_sample
from pyrogen.metrics import draw_guide, to_arviz
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian

N, D = 30, 3
X = torch.randn(N, D, generator=torch.Generator().manual_seed(0))
Y = (X @ torch.tensor([1.0, -0.5, 0.2]) + 0.3 * torch.randn(N)).round().clamp(0, 1)


def regression(x: torch.Tensor, y: torch.Tensor) -> None:
    """Global latents (a positive one among them), a data plate and a deterministic site."""
    coef = pyro.sample("coef", dist.Normal(torch.zeros(D), 1.0).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    pyro.deterministic("norm", coef.norm(dim=-1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * coef).sum(-1), scale), obs=y)


class MeanField(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.tensor([0.8, -0.4, 0.1]))
        self.log_sd = torch.nn.Parameter(torch.full((D,), -1.5))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pyro.sample("coef", dist.Normal(self.loc, self.log_sd.exp()).to_event(1))
        pyro.sample("scale", dist.LogNormal(-0.7, 0.2))


def test_global_latents_densities_by_hand() -> None:
    guide = MeanField()
    pyro.set_rng_seed(0)
    draws = draw_guide(regression, guide, X, Y, num_samples=64)
    coef, scale, norm = draws.samples["coef"], draws.samples["scale"], draws.samples["norm"]
    assert coef.shape == (64, D) and scale.shape == (64,) and norm.shape == (64,)
    assert draws.log_p.shape == draws.log_q.shape == draws.log_weight.shape == (64,)
    torch.testing.assert_close(norm, coef.norm(dim=-1))
    with torch.no_grad():
        log_q = dist.Normal(guide.loc, guide.log_sd.exp()).log_prob(coef).sum(-1)
        log_q = log_q + dist.LogNormal(-0.7, 0.2).log_prob(scale)
        log_p = dist.Normal(0.0, 1.0).log_prob(coef).sum(-1)
        log_p = log_p + dist.LogNormal(0.0, 0.5).log_prob(scale)
        log_p = log_p + dist.Normal(coef @ X.T, scale[:, None]).log_prob(Y).sum(-1)
    torch.testing.assert_close(draws.log_q, log_q)
    torch.testing.assert_close(draws.log_p, log_p)
    # the draws are the guide's: 64 draws of a N(0.8, e^-1.5) coordinate
    se = math.exp(-1.5) / 8
    assert abs(float(coef[:, 0].mean()) - 0.8) < 5 * se


def test_local_latents_give_one_weight_per_point_and_the_evidence_when_exact() -> None:
    model = ConjugateGaussian(dim=2, prior_loc=0.3)
    guide = AmortizedGaussianGuide(dim=2).exact(model)
    x = X[:7, :2]
    draws = draw_guide(model, guide, x, num_samples=50)
    assert draws.samples["z"].shape == (50, 7, 2) and draws.log_weight.shape == (50, 7)
    truth = model.log_marginal(x).detach().expand(50, 7)
    torch.testing.assert_close(draws.log_weight, truth, rtol=0, atol=1e-4)
    # one draw is a plate of one, kept as a leading dimension
    assert draw_guide(model, guide, x, num_samples=1).log_weight.shape == (1, 7)


def test_to_arviz_round_trips_draws_and_weights() -> None:
    pyro.set_rng_seed(1)
    draws = draw_guide(regression, MeanField(), X, Y, num_samples=40)
    idata = to_arviz(draws)
    assert dict(idata.posterior.sizes) == {"chain": 1, "draw": 40, "coef_dim_0": D}
    for name, value in draws.samples.items():
        torch.testing.assert_close(torch.as_tensor(idata.posterior[name].values[0]), value)
    stats = idata.sample_stats
    for key, value in [("lp", draws.log_p), ("log_q", draws.log_q)]:
        torch.testing.assert_close(torch.as_tensor(stats[key].values[0]), value)
    torch.testing.assert_close(torch.as_tensor(stats["log_weight"].values[0]), draws.log_weight)


def test_implicit_guides_and_bad_counts_are_refused() -> None:
    model = ConjugateGaussian(dim=2)

    def implicit(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            implicit_sample("z", x + torch.randn_like(x), event_dim=1)

    with pytest.raises(ValueError, match="implicit"):
        draw_guide(model, implicit, X[:4, :2], num_samples=5)
    with pytest.raises(ValueError, match="positive int"):
        draw_guide(model, AmortizedGaussianGuide(dim=2), X[:4, :2], num_samples=0)
