"""The four-point toy's networks: shapes, the implicit marker, and log p(x) in closed form."""

import pyro.poutine as poutine
import torch

from pyrogen.models.avb_toy import FourPointToy, ResidualCritic


def test_log_px_is_exact_when_the_decoder_ignores_z() -> None:
    toy = FourPointToy(implicit=True)
    last = toy.decoder[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    points = torch.eye(4)
    log_px, se = toy.log_px(points, 1000)
    expected = torch.distributions.Bernoulli(logits=last.bias).log_prob(points).sum(-1)
    torch.testing.assert_close(log_px, expected)
    assert float(se.abs().max()) < 1e-6  # every prior draw gives the same likelihood


def test_shapes_and_the_implicit_site() -> None:
    x = torch.eye(4).repeat(3, 1)
    for implicit in (True, False):
        toy = FourPointToy(implicit=implicit)
        trace = poutine.trace(toy.guide).get_trace(x)
        assert trace.nodes["z"]["value"].shape == (12, 2)
        assert bool(trace.nodes["z"]["infer"].get("implicit")) is implicit
        assert toy.posterior_samples(x[0], 7).shape == (7, 2)
    assert ResidualCritic()(x, torch.randn(12, 2)).shape == (12,)
