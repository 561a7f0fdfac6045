import warnings

import pytest
import torch
from scipy import stats
from test_rbm import all_states, tiny_rbm

from pyrogen.inference.mcmc import gibbs, sample
from pyrogen.metrics import to_arviz


def test_block_gibbs_matches_the_exact_distribution_of_a_tiny_rbm():
    """20,000 independent chains after 50 sweeps against p(v) by enumeration (chi-square)."""
    rbm = tiny_rbm().requires_grad_(False)
    states = all_states(4)
    exact = torch.softmax(-rbm.free_energy(states), 0)
    g = torch.Generator().manual_seed(0)
    n = 20000
    state = gibbs.init(torch.zeros(n, 4, dtype=torch.float64), rbm, g)
    for _ in range(50):
        state, info = gibbs.step(state, rbm, g)
    index = (state.visible * 2 ** torch.arange(3, -1, -1, dtype=torch.float64)).sum(1).long()
    counts = torch.bincount(index, minlength=16).double()
    _, p = stats.chisquare(counts.numpy(), (n * exact).numpy())
    assert p > 1e-3
    # the hidden layer too: E[h | v] averaged over chains is the exact E[h]
    hidden_mean = (exact[:, None] * torch.sigmoid(rbm.hidden_logits(states))).sum(0)
    # a probability varies less than the Bernoulli it is the mean of: a conservative s.e.
    se = (hidden_mean * (1 - hidden_mean) / n).sqrt()
    assert ((info.hidden_mean.mean(0) - hidden_mean).abs() < 5 * se).all()


def test_the_chi_square_test_can_fail():
    """Chains that never left their all-zero start are rejected by the same test."""
    rbm = tiny_rbm().requires_grad_(False)
    exact = torch.softmax(-rbm.free_energy(all_states(4)), 0)
    n = 20000
    state = gibbs.init(torch.zeros(n, 4, dtype=torch.float64), rbm)
    counts = torch.bincount(
        (state.visible * 2 ** torch.arange(3, -1, -1)).sum(1).long(), minlength=16
    ).double()
    _, p = stats.chisquare(counts.numpy(), (n * exact).numpy())
    assert p < 1e-3


def test_bad_states_are_refused():
    rbm = tiny_rbm()
    with pytest.raises(ValueError, match="num_chains, 4"):
        gibbs.init(torch.zeros(3, 5), rbm)
    with pytest.raises(ValueError, match="0 or 1"):
        gibbs.init(torch.full((3, 4), 0.5), rbm)


def chi_square_p(visible: torch.Tensor, exact: torch.Tensor) -> float:
    index = (visible * 2 ** torch.arange(3, -1, -1, dtype=visible.dtype)).sum(1).long()
    counts = torch.bincount(index, minlength=16).double()
    return stats.chisquare(counts.numpy(), (visible.shape[0] * exact).numpy()).pvalue


def test_sample_runs_the_gibbs_kernel_from_the_registry():
    """sample(rbm, v0, kernel="gibbs"): the last draw of 20,000 chains against p(v)."""
    rbm = tiny_rbm().requires_grad_(False)
    exact = torch.softmax(-rbm.free_energy(all_states(4)), 0)
    result = sample(
        rbm,
        torch.zeros(20000, 4, dtype=torch.float64),
        kernel="gibbs",
        num_warmup=50,
        num_samples=2,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert result.samples["z"].shape == (20000, 2, 4)
    assert result.stats == {} and result.step_size is None and result.inverse_mass is None
    assert chi_square_p(result.samples["z"][:, -1], exact) > 1e-3
    assert torch.equal(result.final_state.position, result.samples["z"][:, -1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # arviz: more chains than draws
        assert to_arviz(result).posterior["z"].shape == (20000, 2, 4)


class GaussianPair:
    """Two unit Gaussians with correlation rho as two blocks: no RBM anywhere.
    y | x ~ N(rho x, 1 - rho^2), and the same for x | y."""

    def __init__(self, rho: float) -> None:
        self.rho = rho

    def check_visible(self, visible: torch.Tensor) -> torch.Tensor:
        if visible.dim() != 2:
            raise ValueError("visible must be (num_chains, 1)")
        return visible

    def _draw(self, given: torch.Tensor, generator: torch.Generator | None):
        mean = self.rho * given
        noise = torch.randn(given.shape, dtype=given.dtype, generator=generator)
        return mean + (1 - self.rho**2) ** 0.5 * noise, mean

    def sample_hidden(self, visible, generator=None):
        return self._draw(visible, generator)

    def sample_visible(self, hidden, generator=None):
        return self._draw(hidden, generator)


def test_block_gibbs_runs_any_model_with_block_conditionals():
    """Var(x) = 1 and E[xy] = rho after 30 sweeps (the chain contracts by rho^2 per sweep,
    0.64^30 < 1e-5), within 5 standard errors of the sample moments of 20,000 chains."""
    rho, n = 0.8, 20000
    g = torch.Generator().manual_seed(0)
    model = GaussianPair(rho)
    state = gibbs.init(torch.zeros(n, 1, dtype=torch.float64), model, g)
    step = gibbs.build()
    for _ in range(30):
        state, info = step(state, model, g)
    x, y = state.visible[:, 0], state.hidden[:, 0]
    assert torch.equal(info.visible_mean, rho * y[:, None])
    assert abs(x.var().item() - 1) < 5 * (2 / (n - 1)) ** 0.5
    assert abs((x * y).mean().item() - rho) < 5 * ((1 + rho**2) / n) ** 0.5
