import pytest
import torch
from scipy import stats
from test_rbm import all_states, tiny_rbm

from pyrogen.inference.mcmc import gibbs


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
    assert ((info.hidden_probs.mean(0) - hidden_mean).abs() < 5 * se).all()


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
