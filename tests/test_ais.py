"""AIS for RBMs against exact partition functions (tiny RBMs enumerated), from both sides."""

import math

import pytest
import torch
from test_rbm import all_states, tiny_rbm

from pyrogen.metrics import (
    ais_log_partition,
    base_log_partition,
    base_rate_bias,
    default_betas,
    exact_samples,
    rbm_log_likelihood,
    reverse_ais_log_partition,
)
from pyrogen.models import BernoulliRBM

Z = 4.0


def wide_rbm(seed: int = 0) -> BernoulliRBM:
    """40 visible x 16 hidden: exact log Z by enumerating the 2^16 hidden states."""
    gen = torch.Generator().manual_seed(seed)
    rbm = BernoulliRBM(40, 16).double()
    with torch.no_grad():
        rbm.weight.copy_(0.5 * torch.randn(40, 16, generator=gen))
        rbm.visible_bias.copy_(-0.5 + 0.5 * torch.randn(40, generator=gen))
        rbm.hidden_bias.copy_(0.5 * torch.randn(16, generator=gen))
    return rbm


def base_for(rbm: BernoulliRBM) -> torch.Tensor:
    return base_rate_bias(exact_samples(rbm, 500, torch.Generator().manual_seed(5)))


def test_base_log_partition_is_analytic() -> None:
    bias = torch.linspace(-2, 1.5, 8, dtype=torch.float64)
    states = all_states(8)
    # the base model is an RBM with no weights: 2^H from the free hidden units
    enumerated = torch.logsumexp(states @ bias, 0) + 3 * math.log(2)
    assert torch.allclose(base_log_partition(bias, 3), enumerated)
    as_rbm = BernoulliRBM(8, 3).double()
    with torch.no_grad():
        as_rbm.weight.zero_()
        as_rbm.visible_bias.copy_(bias)
    assert torch.allclose(base_log_partition(bias, 3), as_rbm.log_partition())


def test_beta_zero_alone_returns_the_base_log_partition_exactly() -> None:
    rbm = tiny_rbm(8, 3)
    bias = torch.linspace(-2, 1.5, 8, dtype=torch.float64)
    out = ais_log_partition(rbm, bias, betas=torch.tensor([0.0]), num_runs=7)
    assert torch.equal(out.log_weights, torch.zeros(7, dtype=torch.float64))
    assert out.log_z == out.log_z_lower == out.log_z_upper == base_log_partition(bias, 3)


def test_one_step_is_plain_importance_sampling_and_unbiased() -> None:
    """betas = [0, 1]: w = p*(v) / p*_0(v) with v from the base, so mean w -> Z / Z_0."""
    rbm = tiny_rbm(8, 5)
    out = ais_log_partition(
        rbm, betas=torch.tensor([0.0, 1.0]), num_runs=20000, num_sd=Z, generator=torch.Generator()
    )
    assert out.log_weights.shape == (20000,)
    exact = rbm.log_partition()
    assert out.log_z_lower < exact < out.log_z_upper, (out[:3], exact)


@pytest.mark.parametrize("num_betas", [5, 20])
def test_forward_and_reverse_are_unbiased_in_z_for_any_schedule(num_betas: int) -> None:
    """E[w] = Z/Z_0 (forward) and Z_0/Z (reverse, from exact samples) whatever the
    schedule: with 20,000 runs, log(mean w +- 4 s.e.) must bracket the truth."""
    rbm = wide_rbm()
    exact = rbm.log_partition()
    betas = torch.linspace(0, 1, num_betas, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    base = base_for(rbm)
    fwd = ais_log_partition(rbm, base, betas, num_runs=20000, num_sd=Z, generator=gen)
    rev = reverse_ais_log_partition(
        rbm, exact_samples(rbm, 20000, gen), base, betas, num_sd=Z, generator=gen
    )
    for out in (fwd, rev):
        assert out.log_z_lower < exact < out.log_z_upper, (out.direction, out[:3], exact)
    # power: an RBM with shifted hidden biases has a log Z outside both intervals
    shifted = wide_rbm()
    with torch.no_grad():
        shifted.hidden_bias.add_(0.05)
    wrong = shifted.log_partition()
    assert not any(out.log_z_lower < wrong < out.log_z_upper for out in (fwd, rev))


def test_ais_matches_exact_log_z_within_its_reported_spread() -> None:
    """The paper's report: 100 runs, log(Z +- 3 sd); 1000 linear betas suffice here."""
    rbm = wide_rbm()
    exact = float(rbm.log_partition())
    base = base_for(rbm)
    betas = torch.linspace(0, 1, 1000, dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    fwd = ais_log_partition(rbm, base, betas, generator=gen)
    rev = reverse_ais_log_partition(rbm, exact_samples(rbm, 100, gen), base, betas, generator=gen)
    for out in (fwd, rev):
        assert out.log_weights.shape == (100,)
        assert float(out.log_z_lower) < exact < float(out.log_z_upper), (out[:3], exact)
        # the spread is informative: a few hundredths of a nat
        assert float(out.log_z_upper - out.log_z_lower) < 0.1


def test_forward_errs_low_and_reverse_errs_high() -> None:
    """Jensen: E[log w] < log E[w], so the mean forward log-weight is below log(Z/Z_0) and the
    mean reverse one below log(Z_0/Z): forward AIS is a stochastic lower bound of log Z,
    reverse AIS an upper one. A short schedule makes the gap many standard errors wide."""
    rbm = wide_rbm()
    exact = rbm.log_partition()
    base = base_for(rbm)
    betas = torch.linspace(0, 1, 5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    fwd = ais_log_partition(rbm, base, betas, num_runs=2000, generator=gen)
    rev = reverse_ais_log_partition(rbm, exact_samples(rbm, 2000, gen), base, betas, generator=gen)
    log_ratio = exact - fwd.log_z_base
    for lw, target in ((fwd.log_weights, log_ratio), (rev.log_weights, -log_ratio)):
        se = lw.std() / math.sqrt(len(lw))
        assert lw.mean() + Z * se < target


def test_same_generator_same_result_and_float32_agrees() -> None:
    rbm = wide_rbm()
    exact = float(rbm.log_partition())
    base, betas = base_for(rbm), torch.linspace(0, 1, 1000)
    a, b = (
        ais_log_partition(rbm, base, betas, generator=torch.Generator().manual_seed(4))
        for _ in range(2)
    )
    assert torch.equal(a.log_weights, b.log_weights)
    # in float32 (matrix products and draws) the log-weights still add up in float64
    single = ais_log_partition(
        rbm.float(), base.float(), betas, generator=torch.Generator().manual_seed(4)
    )
    assert single.log_weights.dtype == torch.float64
    assert float(single.log_z_lower) < exact < float(single.log_z_upper), (single[:3], exact)


def test_default_schedule() -> None:
    betas = default_betas()
    steps = betas.diff()
    assert len(betas) == 14501 and betas[0] == 0 and betas[-1] == 1
    assert (steps > 0).all()
    assert torch.allclose(steps[:500], torch.tensor(1e-3, dtype=torch.float64))
    assert torch.allclose(steps[500:4500], torch.tensor(1e-4, dtype=torch.float64))
    assert torch.allclose(steps[4500:], torch.tensor(1e-5, dtype=torch.float64))


def test_base_rate_is_the_smoothed_marginal() -> None:
    data = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    bias = base_rate_bias(data, smoothing=0.25)
    p = torch.sigmoid(bias)
    assert torch.allclose(p, torch.tensor([5 / 6, 1 / 6, 0.5]))  # (count + 1) / (4 + 2)
    assert torch.isfinite(bias).all()


def test_log_likelihood_with_exact_log_z() -> None:
    rbm = tiny_rbm(6, 4)
    data = exact_samples(rbm, 50, torch.Generator().manual_seed(0))
    states = all_states(6)
    with torch.no_grad():
        log_p = -rbm.free_energy(states) - torch.logsumexp(-rbm.free_energy(states), 0)
    index = (data * 2 ** torch.arange(5, -1, -1)).sum(1).long()  # all_states is big-endian
    ll = rbm_log_likelihood(rbm, data, rbm.log_partition())
    assert math.isclose(ll.mean, float(log_p[index].mean()), rel_tol=1e-9)
    assert ll.lower == ll.mean == ll.upper and ll.stderr > 0
    # with an AIS result the spread carries over, reversed
    out = ais_log_partition(rbm, betas=torch.linspace(0, 1, 100), num_runs=20)
    ll = rbm_log_likelihood(rbm, data, out)
    assert ll.lower <= ll.mean <= ll.upper


def test_exact_samples_follow_the_rbm() -> None:
    """Both enumeration routes (visible layer smaller, hidden layer smaller)."""
    for shape in [(4, 7), (7, 4)]:
        rbm = tiny_rbm(*shape)
        n = 20000
        draws = exact_samples(rbm, n, torch.Generator().manual_seed(0))
        states = all_states(shape[0])
        probs = torch.softmax(-rbm.free_energy(states), 0)
        index = (draws * 2 ** torch.arange(shape[0] - 1, -1, -1)).sum(1).long()
        freq = torch.bincount(index, minlength=len(states)) / n
        se = (probs * (1 - probs) / n).sqrt()
        assert ((freq - probs).abs() < 4.5 * se + 1e-12).all(), shape


def test_bad_input_is_refused() -> None:
    rbm = tiny_rbm(6, 4)
    with pytest.raises(ValueError, match="start at 0"):
        ais_log_partition(rbm, betas=torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="non-decreasing"):
        ais_log_partition(rbm, betas=torch.tensor([0.0, 0.6, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ais_log_partition(rbm, betas=torch.tensor([0.0, 1.5]))
    with pytest.raises(ValueError, match="1-D"):
        ais_log_partition(rbm, betas=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="num_runs"):
        ais_log_partition(rbm, num_runs=0)
    with pytest.raises(ValueError, match=r"base_bias must have shape \(6,\)"):
        ais_log_partition(rbm, base_bias=torch.zeros(5))
    with pytest.raises(ValueError, match="binary"):
        reverse_ais_log_partition(rbm, torch.full((3, 6), 0.5))
    with pytest.raises(ValueError, match=r"rows \(M, 6\)"):
        reverse_ais_log_partition(rbm, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="at most 20"):
        exact_samples(BernoulliRBM(30, 30), 5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        base_rate_bias(torch.full((3, 6), 2.0))
    with pytest.raises(ValueError, match="binary"):
        rbm_log_likelihood(rbm, torch.full((3, 6), 0.5), 0.0)
