"""Contrastive divergence: gradients against the exact likelihood gradient, training toward
exact optima, persistent chains and the replay buffer, bad input."""

import math

import pyro
import pytest
import torch
from test_rbm import all_states, tiny_rbm
from torch import nn

from pyrogen.inference import ContrastiveDivergence, empty_guide
from pyrogen.metrics import exact_samples
from pyrogen.models import BernoulliRBM

Z = 4.5  # about 1e-5 two-sided per coordinate; with 34 coordinates, 2e-4 per test


def exact_nll_grad(rbm: BernoulliRBM, data: torch.Tensor) -> list[torch.Tensor]:
    """Gradient of mean F(data) + log Z, with log Z by enumerating the visible layer."""
    log_z = torch.logsumexp(-rbm.free_energy(all_states(rbm.num_visible)), 0)
    nll = rbm.free_energy(data).mean() + log_z
    return list(torch.autograd.grad(nll, list(rbm.parameters())))


def free_energy_grads(rbm: BernoulliRBM, v: torch.Tensor) -> list[torch.Tensor]:
    """Per-row gradients of F(v) wrt (weight, visible_bias, hidden_bias)."""
    s = torch.sigmoid(rbm.hidden_logits(v))
    return [-(v[:, :, None] * s[:, None, :]), -v, -s]


def cd_z_scores(k: int) -> torch.Tensor:
    """(CD-k gradient - exact gradient) / standard error, per coordinate, for 40,000 chains."""
    truth, rbm = tiny_rbm(6, 4), tiny_rbm(6, 4)
    gen = torch.Generator().manual_seed(1)
    data = exact_samples(truth, 100, gen)
    exact = exact_nll_grad(rbm, data)
    repeated = data.repeat(400, 1)  # 400 chains start at each data row
    cd = ContrastiveDivergence(rbm, k=k, generator=gen)
    negatives = cd.sample_negatives(repeated)
    loss = rbm.free_energy(data).mean() - rbm.free_energy(negatives).mean()
    grads = torch.autograd.grad(loss, list(rbm.parameters()))
    # The data term is exact; the chains are independent, so the pooled spread of the
    # per-chain gradients bounds the standard error of their mean from above.
    z = []
    for g, e, per_chain in zip(grads, exact, free_energy_grads(rbm, negatives), strict=True):
        se = per_chain.std(0) / math.sqrt(len(negatives))
        z.append(((g - e) / se).flatten())
    return torch.cat(z).detach()


def test_cd_with_long_chains_gives_the_exact_gradient() -> None:
    z = cd_z_scores(k=30)
    assert z.numel() == 6 * 4 + 6 + 4
    assert float(z.abs().max()) < Z, z


def test_cd1_bias_is_detected() -> None:
    """Power: one Gibbs sweep from the data is visibly biased with the same chains."""
    assert float(cd_z_scores(k=1).abs().max()) > Z


def test_loss_is_the_free_energy_gap_of_the_negatives() -> None:
    rbm = tiny_rbm(6, 4)
    data = all_states(6)[::3]
    cd = ContrastiveDivergence(rbm, k=2, generator=torch.Generator().manual_seed(3))
    negatives = cd.sample_negatives(data)
    cd.generator = torch.Generator().manual_seed(3)
    loss = cd.differentiable_loss(rbm.model, empty_guide, data)
    # summed over the data points, the one reduction of every objective (as Pyro's)
    expected = len(data) * (rbm.free_energy(data).mean() - rbm.free_energy(negatives).mean())
    assert torch.equal(loss, expected)
    assert negatives.shape == data.shape and cd.chains is None  # CD-k keeps nothing


def test_pcd_through_svi_reaches_the_likelihood_of_the_true_rbm() -> None:
    """PCD-1 on 1000 exact draws of a 6x4 RBM: the exact log-likelihood of the trained
    model comes within noise of the true model's (the MLE's is at least the truth's)."""
    truth = tiny_rbm(6, 4)
    gen = torch.Generator().manual_seed(0)
    data = exact_samples(truth, 1000, gen)
    rbm = BernoulliRBM(6, 4, init_scale=0.1).double()

    def log_lik(m: BernoulliRBM) -> torch.Tensor:
        with torch.no_grad():
            return -m.free_energy(data) - m.log_partition()

    before = log_lik(rbm) - log_lik(truth)
    epochs = 40
    cd = ContrastiveDivergence(rbm, k=1, persistent=True, num_chains=100, generator=gen)
    optim = pyro.optim.LambdaLR(
        {
            "optimizer": torch.optim.SGD,
            "optim_args": {"lr": 0.2, "momentum": 0.5},
            "lr_lambda": lambda e: 1 - e / epochs,
        }
    )
    svi = pyro.infer.SVI(rbm.model, empty_guide, optim, loss=cd)
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), 50):
            svi.step(data[order[i : i + 50]])
        optim.step()
    after = log_lik(rbm) - log_lik(truth)
    assert cd.chains is not None and cd.chains.shape == (100, 6)
    assert set(pyro.get_param_store().keys()) == {
        "energy$$$weight",
        "energy$$$visible_bias",
        "energy$$$hidden_bias",
    }
    se = float(after.std()) / math.sqrt(len(data))
    assert float(after.mean()) > -Z * se, (float(after.mean()), se)
    # power: the untrained model is far outside that band
    assert float(before.mean()) < -Z * float(before.std()) / math.sqrt(len(data))


class GaussianEnergy(nn.Module):
    """E(x) = sum_d exp(log_precision_d) (x_d - loc_d)^2 / 2: a diagonal Gaussian."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim, dtype=torch.float64))
        self.log_precision = nn.Parameter(torch.zeros(dim, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.log_precision.exp() * (x - self.loc) ** 2).sum(-1)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.factor("energy", -self(x))


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return torch.tensor([1.0, -2.0], dtype=torch.float64) + torch.tensor([0.5, 1.0]) * noise


def test_ula_cd1_gradient_has_its_closed_form_expectation() -> None:
    """From data x, one ULA step gives x' - mu = (1 - hp)(x - mu) + sqrt(2h) xi, so
    E[grad_mu] = -h p^2 (mean(x) - mu) and E[grad_logp] = p/2 (m2 (1 - (1 - hp)^2) - 2h)."""
    x = gaussian_data(20000)
    energy = GaussianEnergy(2)
    with torch.no_grad():
        energy.loc.copy_(torch.tensor([0.5, -1.0]))
        energy.log_precision.copy_(torch.tensor([0.5, -1.0]))
    h = 0.2
    cd = ContrastiveDivergence(
        energy, k=1, step_size=h, generator=torch.Generator().manual_seed(99)
    )
    negatives = cd.sample_negatives(x)
    loss = energy(x).mean() - energy(negatives).mean()
    g_loc, g_logp = torch.autograd.grad(loss, [energy.loc, energy.log_precision])
    p, mu = energy.log_precision.exp().detach(), energy.loc.detach()
    m2 = ((x - mu) ** 2).mean(0)
    expected_loc = -h * p**2 * (x.mean(0) - mu)
    expected_logp = 0.5 * p * (m2 * (1 - (1 - h * p) ** 2) - 2 * h)
    d = negatives - mu
    se_loc = (p * d).std(0) / math.sqrt(len(x))
    se_logp = (0.5 * p * d**2).std(0) / math.sqrt(len(x))
    assert ((g_loc - expected_loc).abs() < Z * se_loc).all()
    assert ((g_logp - expected_logp).abs() < Z * se_logp).all()
    # power: without the injected noise (a gradient step, not Langevin) it would be rejected
    assert ((g_logp - 0.5 * p * m2 * (1 - (1 - h * p) ** 2)).abs() > Z * se_logp).all()


def mle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mean, log precision, and their standard errors (sd/sqrt(n), sqrt(2/n))."""
    n = len(x)
    return x.mean(0), -x.var(0, unbiased=False).log(), x.std(0) / math.sqrt(n), math.sqrt(2 / n)


def train_gaussian(sampler: str, steps: int = 300, seed: int = 0) -> torch.Tensor:
    """CD-5 on 1000 points (4000 chains), Adam; the average of the last 100 iterates."""
    x = gaussian_data(1000, seed)
    energy = GaussianEnergy(2)
    cd = ContrastiveDivergence(
        energy, k=5, sampler=sampler, step_size=0.05, generator=torch.Generator().manual_seed(99)
    )
    module = cd(energy.model, empty_guide)
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    data = x.repeat(4, 1)
    tail = []
    for i in range(steps):
        opt.zero_grad()
        module(data).backward()
        opt.step()
        if i >= steps - 100:
            tail.append(torch.cat([energy.loc, energy.log_precision]).detach())
    return torch.stack(tail).mean(0)


def test_mala_cd_converges_to_the_gaussian_mle() -> None:
    """MALA leaves the model exactly invariant, so CD's fixed point is the MLE: the iterates
    must agree with it to well within the MLE's own standard error (they start 15+ away)."""
    mean, log_prec, se_mean, se_log_prec = mle(gaussian_data(1000))
    final = train_gaussian("mala")
    assert ((final[:2] - mean).abs() < 0.5 * se_mean).all(), (final, mean, se_mean)
    assert ((final[2:] - log_prec).abs() < 0.5 * se_log_prec).all(), (final, log_prec)
    assert (mean.abs() > 15 * se_mean).all() or (log_prec.abs() > 15 * se_log_prec).all()


def test_ula_cd_converges_to_ula_fixed_point() -> None:
    """ULA's stationary variance is 1/(p (1 - hp/2)), so CD with ULA fits p with
    1/(p (1 - hp/2)) = m2, p = (1 - sqrt(1 - 2h/m2))/h, not 1/m2: the test sees the bias."""
    x = gaussian_data(1000)
    mean, log_prec, se_mean, se_log_prec = mle(x)
    h, m2 = 0.05, x.var(0, unbiased=False)
    ula_log_prec = ((1 - (1 - 2 * h / m2).sqrt()) / h).log()
    final = train_gaussian("ula")
    assert ((final[:2] - mean).abs() < 0.5 * se_mean).all()
    assert ((final[2:] - ula_log_prec).abs() < 0.5 * se_log_prec).all(), (final, ula_log_prec)
    # power: for the high-precision coordinate ULA's fixed point is 2+ standard errors off
    assert float((ula_log_prec - log_prec).abs().max()) > 2 * se_log_prec


def test_persistent_chains_are_kept_and_move() -> None:
    rbm = tiny_rbm(6, 4)
    data = all_states(6)[:20]
    cd = ContrastiveDivergence(rbm, k=1, persistent=True, generator=torch.Generator())
    cd.loss(rbm.model, empty_guide, data)
    first = cd.chains.clone()
    assert first.shape == (20, 6)  # the first batch's size by default
    cd.loss(rbm.model, empty_guide, data[:5])  # later batches may be smaller
    assert cd.chains.shape == (20, 6) and not torch.equal(first, cd.chains)
    cd.reset()
    assert cd.chains is None


def test_replay_buffer_moves_only_the_drawn_states_and_restarts_from_noise() -> None:
    energy = GaussianEnergy(2)
    x = gaussian_data(50)
    cd = ContrastiveDivergence(
        energy,
        k=1,
        persistent=True,
        num_chains=10,
        step_size=1e-4,
        buffer_size=200,
        reinit_prob=0.05,
        generator=torch.Generator().manual_seed(0),
    )
    cd.sample_negatives(x)
    before = cd.chains.clone()
    assert before.shape == (200, 2)
    low, high = x.min(0).values, x.max(0).values
    assert ((before >= low) & (before <= high)).all()  # uniform over the data's range
    cd.sample_negatives(x)
    assert int((cd.chains != before).any(1).sum()) == 10
    # restart with probability 1 from a point: the negatives are one small step from it
    cd.reinit_prob = 1.0
    cd.init_fn = lambda num, data: torch.full((num, 2), 7.0, dtype=data.dtype)
    negatives = cd.sample_negatives(x)
    assert ((negatives - 7.0).abs() < 0.1).all()


def test_bad_input_is_refused() -> None:
    rbm = tiny_rbm(6, 4)
    energy = GaussianEnergy(2)
    with pytest.raises(ValueError, match="k must be"):
        ContrastiveDivergence(rbm, k=0)
    with pytest.raises(ValueError, match="k must be"):
        ContrastiveDivergence(rbm, k=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nn.Module"):
        ContrastiveDivergence(lambda x: x.sum(-1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_chains is for persistent"):
        ContrastiveDivergence(rbm, num_chains=10)
    with pytest.raises(ValueError, match="needs persistent"):
        ContrastiveDivergence(energy, step_size=0.1, buffer_size=100)
    with pytest.raises(ValueError, match="at least num_chains"):
        ContrastiveDivergence(rbm, persistent=True, num_chains=10, buffer_size=5)
    with pytest.raises(ValueError, match="reinit_prob must be"):
        ContrastiveDivergence(rbm, persistent=True, buffer_size=5, reinit_prob=1.5)
    with pytest.raises(ValueError, match="applies to a replay buffer"):
        ContrastiveDivergence(rbm, persistent=True, reinit_prob=0.1)
    with pytest.raises(ValueError, match="block Gibbs"):
        ContrastiveDivergence(rbm, sampler="mala")
    with pytest.raises(ValueError, match="step_size is for Langevin"):
        ContrastiveDivergence(rbm, step_size=0.1)
    with pytest.raises(ValueError, match="needs a Langevin step_size"):
        ContrastiveDivergence(energy)
    with pytest.raises(ValueError, match="'ula' or 'mala'"):
        ContrastiveDivergence(energy, sampler="gibbs", step_size=0.1)

    cd = ContrastiveDivergence(rbm)
    with pytest.raises(ValueError, match="6 visible units, the data rows have 5"):
        cd.loss(rbm.model, empty_guide, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="binary data"):
        cd.loss(rbm.model, empty_guide, torch.full((3, 6), 0.5))
    with pytest.raises(ValueError, match=r"rows \(N, D\)"):
        cd.loss(rbm.model, empty_guide, torch.zeros(6))
    with pytest.raises(TypeError, match="one argument"):
        cd.loss(rbm.model, empty_guide, torch.zeros(3, 6), torch.zeros(3, 6))
    other = tiny_rbm(6, 4)
    with pytest.raises(ValueError, match="score its data as -energy"):
        cd.loss(other.model, empty_guide, torch.zeros(3, 6))

    gcd = ContrastiveDivergence(energy, step_size=0.1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        gcd.loss(energy.model, empty_guide, torch.tensor([[0.0, float("nan")]]))
    bad = ContrastiveDivergence(nn.Linear(2, 1), step_size=0.1)  # (N, 1), not (N,)
    with pytest.raises(ValueError, match=r"to \(N,\) energies"):
        bad.sample_negatives(torch.zeros(3, 2))


def test_a_second_energy_under_the_same_name_is_the_one_svi_trains() -> None:
    """Plain pyro.module would hand SVI the first RBM's tensors, left in the param store."""
    data = all_states(6)[:10]
    first, second = tiny_rbm(6, 4), tiny_rbm(6, 4)
    ContrastiveDivergence(first).loss(first.model, empty_guide, data)
    before_first = first.weight.detach().clone()
    before_second = second.weight.detach().clone()
    optim = pyro.optim.SGD({"lr": 0.5})
    svi = pyro.infer.SVI(second.model, empty_guide, optim, loss=ContrastiveDivergence(second))
    svi.step(data)
    assert torch.equal(first.weight, before_first)
    assert not torch.equal(second.weight, before_second)
    assert pyro.get_param_store()["energy$$$weight"] is second.weight


def test_the_trainer_finds_and_moves_the_energy() -> None:
    """rbm.model registers nothing itself: the trainer gets the RBM's parameters from CD."""
    from pyrogen.inference import Trainer

    rbm = tiny_rbm(6, 4)
    data = all_states(6)
    cd = ContrastiveDivergence(rbm, k=1, generator=torch.Generator().manual_seed(0))
    assert set(cd.role_parameters("model", rbm.model, empty_guide)) == {
        "energy$$$weight",
        "energy$$$visible_bias",
        "energy$$$hidden_bias",
    }
    before = [p.detach().clone() for p in rbm.parameters()]
    Trainer(cd, rbm.model, progress=False).fit(data, num_iterations=3, batch_size=16)
    assert all(not torch.equal(b, p) for b, p in zip(before, rbm.parameters(), strict=True))
