"""The eight-schools model as rows of independent copies, and its implicit guide."""

import pyro.poutine as poutine
import torch

from pyrogen.models.eight_schools import ImplicitGuide, LatentCritic, data, model


def _log_joint(y: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(y)
    return trace.log_prob_sum()


def test_rows_are_independent_copies_of_the_model() -> None:
    """Three rows with their own latents: the log joint is the sum of the three one-row
    models' (so a row repeated K times gives K independent posterior draws)."""
    torch.manual_seed(0)
    y = data().expand(3, -1) + torch.randn(3, 8)
    values = {"mu": torch.randn(3), "tau": torch.rand(3) + 0.1, "eta": torch.randn(3, 8)}
    rows = [
        _log_joint(y[i : i + 1], {k: v[i : i + 1] for k, v in values.items()}) for i in range(3)
    ]
    torch.testing.assert_close(_log_joint(y, values), torch.stack(rows).sum())


def test_implicit_guide_draws_one_latent_per_row_and_starts_gaussian() -> None:
    guide = ImplicitGuide()
    torch.manual_seed(1)
    trace = poutine.trace(guide).get_trace(data().expand(50, -1))
    for name, shape in (("mu", (50,)), ("tau", (50,)), ("eta", (50, 8))):
        assert trace.nodes[name]["value"].shape == shape
        assert trace.nodes[name]["infer"]["implicit"]
    # the network's correction starts at zero: (mu, log tau, eta) = A eps + b exactly
    torch.manual_seed(1)
    expected = guide.linear(torch.randn(50, guide.noise)).detach()
    z = torch.cat(
        [
            trace.nodes["mu"]["value"][:, None],
            trace.nodes["tau"]["value"].log()[:, None],
            trace.nodes["eta"]["value"],
        ],
        -1,
    )
    torch.testing.assert_close(z.detach(), expected)
    assert LatentCritic()(data().expand(4, -1), torch.randn(4, 10)).shape == (4,)
