"""NCE and self-contrastive estimation: recovery of a Gaussian, nu, SVI, refreshes, errors.

Tolerances come from the estimator's asymptotic covariance, Theorem 3 of Gutmann &
Hyvärinen (2012): sqrt(n) (theta_hat - theta*) -> N(0, Sigma) with
Sigma = I^-1 - (1 + 1/nu) I^-1 m m^T I^-1, I = E_d[g g^T P], m = E_d[g P],
P = nu q / (p_d + nu q), g the score of the unnormalized model at the truth; computed here by
quadrature. The formula was checked against 300 replicated fits at n = 1000 (nu = 1 and 4:
replicated standard deviations within 6 % of the theorem's, mean offsets below 0.05 sd).
Every check allows Z = 5 standard deviations (two-sided failure rate 6e-7 per quantity).
Fits minimise the empirical loss with fixed noise draws (the RNG is re-seeded in every
L-BFGS closure), which is the estimator the theorem describes.
"""

import math
import warnings
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrogen.inference import NCE, SelfContrastive, Trainer, critic, empty_guide
from pyrogen.inference.densities import Bound, log_density
from pyrogen.inference.nce import NCELogits
from pyrogen.inference.renyi import renyi_reduce
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian, build_vae
from pyrogen.warnings import PyrogenWarning

Z = 5.0
M, S = 1.5, 0.7  # the data: N(M, S^2)
NOISE_LOC, NOISE_SCALE = 1.0, 2.0  # NCE's noise: a wider Gaussian
TRUE_LOG_PRECISION = -2 * math.log(S)
TRUE_LOG_Z = 0.5 * math.log(2 * math.pi) + math.log(S)  # of exp(-precision (x - loc)^2 / 2)


class GaussianEnergy(nn.Module):
    """log p~(x) = -exp(log_precision) (x - loc)^2 / 2 [- log_Z when the model holds it]."""

    def __init__(self, log_z: bool = True) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
        self.log_precision = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
        self.log_Z = nn.Parameter(torch.tensor(0.0, dtype=torch.float64)) if log_z else None

    def forward(self, x: torch.Tensor) -> None:
        pyro.module("energy", self)
        with pyro.plate("data", x.shape[0]):
            log_p = -0.5 * self.log_precision.exp() * (x - self.loc) ** 2
            if self.log_Z is not None:
                log_p = log_p - self.log_Z
            pyro.factor("energy", log_p)


class GaussianModel(nn.Module):
    """A normalized Gaussian that can be sampled (data site "x"), and an optional free
    offset log_Z (a constant factor, so sampling is unaffected; its true value is 0)."""

    def __init__(self, log_z: float | None = None) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
        self.log_precision = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
        self.log_Z = None if log_z is None else nn.Parameter(torch.tensor(log_z).double())

    def forward(self, x: torch.Tensor) -> None:
        pyro.module("gaussian", self)
        with pyro.plate("data", x.shape[0]):
            scale = (-0.5 * self.log_precision).exp()
            pyro.sample("x", dist.Normal(self.loc, scale), obs=x)
            if self.log_Z is not None:
                pyro.factor("offset", -self.log_Z.expand(x.shape[0]))


def noise_distribution() -> dist.Normal:
    return dist.Normal(torch.tensor(NOISE_LOC).double(), torch.tensor(NOISE_SCALE).double())


def draw_data(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return M + S * torch.randn(n, generator=gen, dtype=torch.float64)


def asymptotic_covariance(
    score: Callable[[torch.Tensor], torch.Tensor], noise_log_prob: Callable, nu: float
) -> torch.Tensor:
    """Gutmann & Hyvärinen (2012), Theorem 3, by quadrature over x (data N(M, S^2))."""
    x = torch.linspace(M - 14 * S, M + 14 * S, 200_001, dtype=torch.float64)
    dx = float(x[1] - x[0])
    p_d = dist.Normal(M, S).log_prob(x).exp()
    p_n = noise_log_prob(x).exp()
    weight = nu * p_n / (p_d + nu * p_n) * p_d * dx
    g = score(x)  # (params, points)
    info = (g * weight) @ g.T
    mean = (g * weight).sum(1)
    inv = torch.linalg.inv(info)
    return inv - (1 + 1 / nu) * inv @ torch.outer(mean, mean) @ inv


def energy_score(x: torch.Tensor) -> torch.Tensor:
    """Gradient of log p~ = -e^lp (x - loc)^2 / 2 - log_Z in (loc, lp, log_Z) at the truth."""
    precision = math.exp(TRUE_LOG_PRECISION)
    return torch.stack([precision * (x - M), -0.5 * precision * (x - M) ** 2, -torch.ones_like(x)])


def normalized_score(x: torch.Tensor) -> torch.Tensor:
    """Gradient of log N(x; loc, e^-lp) in (loc, lp) at the truth."""
    precision = math.exp(TRUE_LOG_PRECISION)
    return torch.stack([precision * (x - M), 0.5 - 0.5 * precision * (x - M) ** 2])


def fit(objective: NCE, model: nn.Module, x: torch.Tensor, seed: int, rounds: int = 3) -> None:
    """Minimise the empirical loss with fixed noise draws (L-BFGS, re-seeded closure)."""
    opt = torch.optim.LBFGS(
        objective(model, empty_guide).parameters(),  # the model's, and a learned log Z
        lr=1.0,
        max_iter=100,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        pyro.set_rng_seed(seed)
        loss = objective.differentiable_loss(model, empty_guide, x)
        loss.backward()
        return loss

    for _ in range(rounds):
        opt.step(closure)


def estimate(model: GaussianEnergy) -> torch.Tensor:
    assert model.log_Z is not None
    return torch.stack([model.loc, model.log_precision, model.log_Z]).detach()


TRUTH = torch.tensor([M, TRUE_LOG_PRECISION, TRUE_LOG_Z], dtype=torch.float64)


# Recovery of the Gaussian, and the role of nu.
@pytest.mark.parametrize("nu", [0.25, 1.0, 4.0])
def test_nce_recovers_mean_precision_and_log_normalizer(nu: float) -> None:
    n = 10_000
    x = draw_data(n)
    model = GaussianEnergy()
    fit(NCE(noise_distribution(), nu=nu), model, x, seed=1)
    sigma = asymptotic_covariance(energy_score, noise_distribution().log_prob, nu)
    sd = (sigma.diagonal() / n).sqrt()
    z = (estimate(model) - TRUTH) / sd
    assert bool((z.abs() < Z).all()), (z, sd)
    # Power: a logit without its -log(nu) term would shift log Z by log(nu), far outside.
    if nu != 1.0:
        assert abs(math.log(nu)) > 2 * Z * float(sd[2])


def test_nu_moves_the_optimum_to_log_p_over_nu_q() -> None:
    """At the fitted classifier, G(x) = log p_d(x) - log(nu q(x)): checked on a grid of x
    against the delta-method standard error g(x)^T Sigma g(x) / n, for two nu."""
    n = 10_000
    x = draw_data(n, seed=2)
    grid = torch.tensor([M - 2 * S, M - S, M, M + S, M + 2 * S], dtype=torch.float64)
    logits = {}
    for nu in [0.25, 4.0]:
        model = GaussianEnergy()
        nce = NCE(noise_distribution(), nu=nu)
        fit(nce, model, x, seed=3)
        with torch.no_grad():
            # The data half of NCE's own logits, evaluated on the grid.
            out = nce.logits(model, empty_guide, grid)
        target = dist.Normal(M, S).log_prob(grid) - noise_distribution().log_prob(grid)
        target = target - math.log(nu)
        sigma = asymptotic_covariance(energy_score, noise_distribution().log_prob, nu)
        g = energy_score(grid)  # d G(x) / d theta = score of the model
        sd = ((g * (sigma @ g)).sum(0) / n).sqrt()
        assert bool(((out.data - target).abs() < Z * sd).all()), (out.data - target, sd)
        logits[nu] = out.data
    # The two optima differ by log(4 / 0.25) everywhere (up to the fits' errors).
    shift = torch.full((5,), math.log(16.0), dtype=torch.float64)
    assert torch.allclose(logits[0.25] - logits[4.0], shift, atol=0.3)


def test_a_wrong_noise_density_is_caught() -> None:
    """Power: a noise whose log-density is off by 0.2 nats biases log Z by 0.2, which the
    5-sd check rejects (its sd is 0.017 at this n)."""

    class Shifted(dist.Normal):
        def log_prob(self, value: torch.Tensor) -> torch.Tensor:
            return super().log_prob(value) + 0.2

    n = 10_000
    x = draw_data(n)
    model = GaussianEnergy()
    fit(NCE(Shifted(NOISE_LOC, NOISE_SCALE), nu=1.0), model, x, seed=1)
    sigma = asymptotic_covariance(energy_score, noise_distribution().log_prob, 1.0)
    sd = float((sigma[2, 2] / n).sqrt())
    assert abs(float(model.log_Z.detach()) - (TRUE_LOG_Z - 0.2)) < Z * sd
    assert abs(float(model.log_Z.detach()) - TRUE_LOG_Z) > Z * sd


def test_logits_are_log_p_minus_log_z_nu_q() -> None:
    model = GaussianEnergy()
    with torch.no_grad():
        model.loc.fill_(0.4)
        model.log_precision.fill_(0.3)
        model.log_Z.fill_(1.1)
    nce = NCE(noise_distribution(), nu=3)
    x = draw_data(7)
    out = nce.logits(model, empty_guide, x)
    assert isinstance(out, NCELogits)
    assert out.data.shape == (7,) and out.noise.shape == (21,) and out.samples.shape == (21,)

    def log_p(y: torch.Tensor) -> torch.Tensor:
        return -0.5 * math.exp(0.3) * (y - 0.4) ** 2 - 1.1

    def by_hand(y: torch.Tensor) -> torch.Tensor:
        return log_p(y) - math.log(3) - noise_distribution().log_prob(y)

    assert torch.allclose(out.data, by_hand(x))
    assert torch.allclose(out.noise, by_hand(out.samples))
    assert out.log_model.shape == (7,) and torch.allclose(out.log_model, log_p(x))
    # The loss is the logistic loss on these logits.
    pyro.set_rng_seed(5)
    loss = nce.differentiable_loss(model, empty_guide, x)
    pyro.set_rng_seed(5)
    out = nce.logits(model, empty_guide, x)
    expected = len(x) * (  # summed over the data points, the one reduction (as Pyro's)
        nn.functional.softplus(-out.data).mean() + 3 * nn.functional.softplus(out.noise).mean()
    )
    assert torch.allclose(loss, expected)
    assert 0 <= nce.stats["accuracy"] <= 1
    assert math.isclose(nce.stats["log_model_data"], float(log_p(x).mean()), rel_tol=1e-6)


def test_noise_as_a_pyro_model_and_nu_rounding() -> None:
    def noise(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(NOISE_LOC, NOISE_SCALE), obs=x)

    model = GaussianEnergy()
    x = draw_data(10)
    by_model = NCE(noise, nu=0.55)
    out = by_model.logits(model, empty_guide, x)
    assert out.noise.shape == (6,)  # round(0.55 * 10)
    by_dist = NCE(noise_distribution(), nu=0.55)
    with torch.no_grad():
        log_p = -0.5 * (out.samples - 0.0) ** 2
        expected = log_p - math.log(0.55) - noise_distribution().log_prob(out.samples)
    assert torch.allclose(out.noise, expected)
    assert by_dist.num_noise(10) == 6 and by_dist.num_noise(1) == 1


# Through SVI, with the log-normalizer held by NCE.
def test_svi_with_a_learned_log_normalizer() -> None:
    """Full-batch SVI with fresh noise every step, Adam with a decaying step and iterate
    averaging; NCE holds log Z. The tolerance is Theorem 3's (fixed noise), which bounds the
    spread of the fresh-noise estimator; the averaged iterates add little."""
    n = 4000
    x = draw_data(n, seed=4)
    model = GaussianEnergy(log_z=False)
    nce = NCE(noise_distribution(), nu=1.0, learn_log_normalizer=True)
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.997})
    svi = pyro.infer.SVI(model, empty_guide, optim, loss=nce)
    kept = []
    for step in range(1500):
        svi.step(x)
        if step >= 1000:
            kept.append(torch.stack([model.loc, model.log_precision, nce.log_normalizer]))
    assert "nce$$$log_Z" in pyro.get_param_store()
    assert pyro.get_param_store()["nce$$$log_Z"] is nce.log_normalizer
    est = torch.stack(kept).mean(0).detach()
    sigma = asymptotic_covariance(energy_score, noise_distribution().log_prob, 1.0)
    sd = (sigma.diagonal() / n).sqrt()
    z = (est - TRUTH) / sd
    assert bool((z.abs() < Z).all()), (z, sd)


# Self-contrastive estimation.
def test_self_contrastive_converges_to_the_truth_on_schedule() -> None:
    """Noise = frozen copy of the model, refreshed every 2 epochs (an epoch here: one L-BFGS
    fit on fresh noise draws). The fixed point is the MLE; the last fit's error has
    covariance (1 + 1/nu) I^-1 / n (Theorem 3 with the noise equal to the data's law). A free
    constant offset log_Z (truth 0) keeps its initial error 0.3: the copy carries the same
    offset, so SCE cannot correct a normalizer. Only the first fit, against the initial
    N(0, 1), moves it noticeably (Theorem 3's sd with that noise; with the noise near the
    data's law, later fits move it by about 1 % of that)."""
    n, nu = 4000, 1.0
    x = draw_data(n, seed=6)
    model = GaussianModel(log_z=0.3)
    sc = SelfContrastive(nu=nu, refresh_every=2)
    refreshed = []
    for epoch in range(1, 11):
        fit(sc, model, x, seed=100 + epoch, rounds=1)
        if sc.refresh_due(epoch):
            sc.refresh(model)
            refreshed.append(epoch)
    assert refreshed == [2, 4, 6, 8, 10] and sc.num_refreshes == 6  # + the first call's copy
    sigma = asymptotic_covariance(normalized_score, dist.Normal(M, S).log_prob, nu)
    sd = (sigma.diagonal() / n).sqrt()
    assert torch.allclose(sd, torch.tensor([S, math.sqrt(2.0)]).double() * math.sqrt(2 / n))
    est = torch.stack([model.loc, model.log_precision]).detach()
    z = (est - TRUTH[:2]) / sd
    assert bool((z.abs() < Z).all()), (z, sd)
    assert model.log_Z is not None

    def with_offset(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([normalized_score(x), -torch.ones_like(x)[None]])

    sigma = asymptotic_covariance(with_offset, dist.Normal(0.0, 1.0).log_prob, nu)
    sd_offset = float((sigma[2, 2] / n).sqrt())
    assert abs(float(model.log_Z.detach()) - 0.3) < Z * sd_offset < 0.3


@pytest.mark.parametrize("nu", [1.0, 3.0])
def test_gradient_at_a_fresh_copy_is_the_scaled_likelihood_gradient(nu: float) -> None:
    """Exact identity: right after a copy every logit is -log(nu), so the loss's gradient is
    nu / (1 + nu) * (mean score over the noise draws - mean score over the data)."""
    model = GaussianModel()
    with torch.no_grad():
        model.loc.fill_(0.8)
        model.log_precision.fill_(0.4)
    x = draw_data(30)
    sc = SelfContrastive(nu=nu)
    sc.refresh(model)
    pyro.set_rng_seed(3)
    loss = sc.differentiable_loss(model, empty_guide, x)
    grads = torch.autograd.grad(loss, [model.loc, model.log_precision])
    pyro.set_rng_seed(3)
    out = sc.logits(model, empty_guide, x)
    assert torch.allclose(out.data, torch.full_like(out.data, -math.log(nu)))
    precision = math.exp(0.4)

    def score(v: torch.Tensor) -> torch.Tensor:
        return torch.stack([precision * (v - 0.8), 0.5 - 0.5 * precision * (v - 0.8) ** 2])

    # per data point; the loss sums over the 30 data points (the one reduction, as Pyro's)
    expected = len(x) * nu / (1 + nu) * (score(out.samples).mean(1) - score(x).mean(1))
    assert torch.allclose(torch.stack(grads), expected)


def test_the_copy_is_frozen_and_follows_the_param_store_snapshot() -> None:
    def model(x: torch.Tensor) -> None:
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    x = torch.randn(5)
    sc = SelfContrastive(nu=2.0)
    model(x)  # creates "loc" = 0
    sc.refresh(model)
    pyro.get_param_store()["loc"] = torch.tensor(3.0)
    out = sc.logits(model, empty_guide, x)
    # live model loc = 3, noise = the copy at loc = 0
    expected = dist.Normal(3.0, 1.0).log_prob(x) - dist.Normal(0.0, 1.0).log_prob(x) - math.log(2)
    assert torch.allclose(out.data, expected)
    assert list(pyro.get_param_store().keys()) == ["loc"]
    # noise samples come from the copy, N(0, 1), not from the live N(3, 1)
    y = SelfContrastive(nu=400.0)
    pyro.get_param_store()["loc"] = torch.tensor(0.0)
    y.refresh(model)
    pyro.get_param_store()["loc"] = torch.tensor(3.0)
    samples = y.logits(model, empty_guide, x).samples
    assert samples.shape == (2000,) and abs(float(samples.mean())) < Z / math.sqrt(2000)


def test_self_contrastive_vae_copy_is_frozen_and_hidden_from_svi() -> None:
    torch.manual_seed(0)
    vae = build_vae("burda", data_shape=(16,), z_dim=3)
    x = torch.bernoulli(torch.full((20, 16), 0.3))
    sc = SelfContrastive(nu=1.0, num_particles=4, max_plate_nesting=1)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.01}), loss=sc)
    svi.step(x)  # the first call copies the VAE
    assert isinstance(sc.noise_model, type(vae.model)) and sc.noise_guide is not None
    frozen = sc.noise_model.__self__
    assert frozen is not vae and not any(p.requires_grad for p in frozen.parameters())
    frozen_before = [p.clone() for p in frozen.parameters()]
    live_before = [p.detach().clone() for p in vae.parameters()]
    keys = set(pyro.get_param_store().keys())
    for _ in range(3):
        svi.step(x)
    assert set(pyro.get_param_store().keys()) == keys  # the copy registers nothing
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, frozen.parameters(), strict=True))
    assert all(
        not torch.equal(a, b.detach()) for a, b in zip(live_before, vae.parameters(), strict=True)
    )
    # noise samples are binary images drawn from the copy's generative model
    out = sc.logits(vae.model, vae.guide, x)
    assert out.samples.shape == (20, 16) and bool(((out.samples == 0) | (out.samples == 1)).all())
    assert torch.isfinite(out.data).all() and torch.isfinite(out.noise).all()


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params, allow_unused=False))


def test_guide_objective_bound_routes_nce_to_the_model_and_the_bound_to_the_guide() -> None:
    """With guide_objective="bound" the decoder's gradient is exactly NCE's with the guide's
    draws held fixed, and the encoder's is exactly that of minus the summed bound on the data
    rows (same random numbers); with "nce" the encoder gets the classifier's gradient."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    vae = build_vae("burda", data_shape=(16,), z_dim=3)
    x = torch.bernoulli(torch.full((12, 16), 0.3))
    noise = dist.Bernoulli(torch.full((16,), 0.4)).to_event(1)
    opts = {"num_particles": 3, "max_plate_nesting": 1}
    routed = NCE(noise, guide_objective="bound", **opts)
    plain = NCE(noise, **opts)
    dec, enc = list(vae.decoder.parameters()), list(vae.encoder.parameters())

    pyro.set_rng_seed(1)
    loss = routed.differentiable_loss(vae.model, vae.guide, x)
    grads = _grads(loss, dec + enc)
    g_dec, g_enc = grads[: len(dec)], grads[len(dec) :]

    # the same random numbers, by hand: NCE with the guide under no_grad, then the bound
    pyro.set_rng_seed(1)

    def fixed_guide(v: torch.Tensor) -> None:
        with torch.no_grad():
            vae.guide(v)

    out = plain.logits(vae.model, fixed_guide, x)
    # both summed over the data points, the one reduction (as Pyro's)
    nce_loss = len(x) * critic.logistic(out.data, out.noise, plain.nu)
    log_weight = routed._model_bound.log_weights(vae.model, vae.guide, (x,), {}).log_weight
    bound_loss = -renyi_reduce(log_weight, 0.0).sum()  # IWAE, K = 3
    for a, b in zip(g_dec, _grads(nce_loss, dec), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(g_enc, _grads(bound_loss, enc), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert all(p.requires_grad for p in dec)  # the decoder is unfrozen afterwards

    # and the classifier's own guide gradient is another one
    pyro.set_rng_seed(1)
    g_plain = _grads(plain.differentiable_loss(vae.model, vae.guide, x), enc)
    assert max(float((a - b).abs().max()) for a, b in zip(g_plain, g_enc, strict=True)) > 1e-3


def test_pyro_module_copy_taken_before_the_first_run_stays_frozen() -> None:
    """The first call copies a PyroModule pair before the live one has ever run (its names
    are not in the param store yet): the copy must neither register nor become trainable."""
    model, guide = ConjugateGaussian(dim=2, prior_loc=0.3), AmortizedGaussianGuide(dim=2)
    x = torch.randn(12, 2)
    sc = SelfContrastive(nu=1.0, num_particles=3)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), loss=sc)
    for _ in range(4):
        svi.step(x)
    frozen = sc.noise_model
    assert isinstance(frozen, ConjugateGaussian) and frozen is not model
    assert not frozen.prior_loc.requires_grad
    assert torch.equal(frozen.prior_loc, torch.full((2,), 0.3))
    assert not torch.equal(model.prior_loc.detach(), torch.full((2,), 0.3))
    assert len(pyro.get_param_store()) == 4  # the live pair's parameters only


def test_trainer_callback_refreshes_every_k_epochs() -> None:
    torch.manual_seed(0)
    vae = build_vae("pyro", data_shape=(8,), z_dim=2)
    x = torch.bernoulli(torch.full((40, 8), 0.5))
    sc = SelfContrastive(nu=1.0, refresh_every=2, max_plate_nesting=1)
    copies = []
    callback = sc.trainer_callback(vae.model, vae.guide, iterations_per_epoch=40 // 10)

    def record(trainer: Trainer) -> None:
        callback(trainer)
        copies.append(sc.num_refreshes)

    trainer = Trainer(sc, vae.model, vae.guide, callback=record, progress=False)
    trainer.fit(x, num_iterations=20, batch_size=10)
    # the first call copies (1); then after iterations 8 and 16 (epochs 2 and 4)
    assert copies == [1] * 7 + [2] * 8 + [3] * 5
    assert "accuracy" in trainer.history


# Bad input.
@pytest.mark.parametrize("nu", [0, -1.0, math.nan, math.inf])
def test_bad_nu(nu: float) -> None:
    with pytest.raises(ValueError, match="nu"):
        NCE(noise_distribution(), nu=nu)
    with pytest.raises(ValueError, match="nu"):
        SelfContrastive(nu=nu)


def test_bad_options() -> None:
    with pytest.raises(TypeError, match="nu"):
        NCE(noise_distribution(), nu=True)
    with pytest.raises(ValueError, match="refresh_every"):
        SelfContrastive(refresh_every=0)
    with pytest.raises(ValueError, match="bound"):
        NCE(noise_distribution(), bound="cubo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="guide_objective"):
        NCE(noise_distribution(), guide_objective="elbo")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="noise"):
        NCE(3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch"):
        SelfContrastive().refresh_due(-1)


def test_noise_without_the_data_shape() -> None:
    rows = torch.randn(10, 2, dtype=torch.float64)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.factor("energy", -(x**2).sum(-1))

    with pytest.raises(ValueError, match=r"point.*shape \(2,\)"):
        NCE(noise_distribution()).differentiable_loss(model, empty_guide, rows)
    three = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    with pytest.raises(ValueError, match="shape"):
        NCE(three).differentiable_loss(model, empty_guide, rows)

    def noise(x: torch.Tensor) -> None:  # draws one value per row, not a row
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x[:, 0])

    with pytest.raises(ValueError, match="samples of shape"):
        NCE(noise).differentiable_loss(model, empty_guide, rows)


def test_nan_data() -> None:
    x = draw_data(5)
    x[2] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        NCE(noise_distribution()).differentiable_loss(GaussianEnergy(), empty_guide, x)
    with pytest.raises(TypeError, match="one argument"):
        NCE(noise_distribution()).differentiable_loss(GaussianEnergy(), empty_guide)


def test_models_nce_cannot_score() -> None:
    x = draw_data(5)

    def latent(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="latent site 'z'"):
        NCE(noise_distribution()).differentiable_loss(latent, empty_guide, x)

    def global_factor(x: torch.Tensor) -> None:
        pyro.factor("energy", -(x**2).sum())

    with pytest.raises(ValueError, match="not inside a pyro.plate"):
        NCE(noise_distribution()).differentiable_loss(global_factor, empty_guide, x)

    def energy_only(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.factor("energy", -(x**2))

    with pytest.raises(ValueError, match="cannot be sampled"):
        NCE(energy_only).differentiable_loss(GaussianEnergy(), empty_guide, x)
    with pytest.raises(ValueError, match="latent site 'z'"):
        NCE(latent).differentiable_loss(GaussianEnergy(), empty_guide, x)


def test_a_copy_that_would_follow_training_is_refused() -> None:
    net = nn.Linear(1, 1).double()

    def closes_over_a_module(x: torch.Tensor) -> None:
        pyro.module("net", net)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(net.bias, 1.0).to_event(1), obs=x)

    rows = torch.randn(6, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="trainable parameter"):
        SelfContrastive().differentiable_loss(closes_over_a_module, empty_guide, rows)


# The upper-bound variant: data rows by IWAE, noise rows by the Rényi bound of order -1.
D, S0, SIGMA, K_UPPER = 2, 1.0, 0.5, 4000


def _upper_setup(
    widen: float,
) -> tuple[ConjugateGaussian, AmortizedGaussianGuide, NCE, dist.Distribution]:
    torch.set_default_dtype(torch.float64)
    model = ConjugateGaussian(dim=D, prior_scale=S0, obs_scale=SIGMA)
    guide = AmortizedGaussianGuide(dim=D).exact(model)
    with torch.no_grad():
        guide.log_scale.add_(math.log(widen))  # centred on the posterior, wider by `widen`
    noise = dist.Normal(torch.zeros(D), 2.0).to_event(1)
    nce = NCE(noise, nu=1.0, num_particles=K_UPPER, noise_rows_alpha=-1.0)
    return model, guide, nce, noise


def test_noise_rows_get_the_chi_square_upper_bound_and_data_rows_iwae() -> None:
    """A guide centred on the exact posterior (sd s) but t = 1.5 s wide: per dimension
    E_q w^2 = p(x)^2 t^2 / (s sqrt(2 t^2 - s^2)), so the order -1 bound, 1/2 log E_q w^2, is
    log p(x) + D/2 log(t^2 / (s sqrt(2 t^2 - s^2))) (0.185 nats above log p(x) here), while
    IWAE sits at log p(x) from below. Both recovered from the logits (G + log q + log nu),
    means over rows within 5 standard errors (over rows) of the closed forms."""
    try:
        model, guide, nce, noise = _upper_setup(1.5)
        data = torch.randn(200, D, generator=torch.Generator().manual_seed(0)) * 1.2
        out = nce.logits(model, guide, data)
        s = model.posterior(data)[1]
        t = 1.5 * s
        gap = D / 2 * torch.log(t**2 / (s * torch.sqrt(2 * t**2 - s**2)))
        with torch.no_grad():
            upper = out.noise + noise.log_prob(out.samples) - model.log_marginal(out.samples)
            lower = out.data + noise.log_prob(data) - model.log_marginal(data)
        for err, target in ((upper, float(gap)), (lower, 0.0)):
            se = float(err.std()) / math.sqrt(err.numel())
            assert abs(float(err.mean()) - target) < 5 * se, (float(err.mean()), target, se)
        assert float(gap) > 10 * float(upper.std()) / math.sqrt(upper.numel())  # it can tell
    finally:
        torch.set_default_dtype(torch.float32)


def test_upper_bound_variant_gradient_matches_the_exact_density_gradient() -> None:
    """With the exact guide every particle's weight is p(x), so both bounds equal log p(x)
    and the logits are exact; the gradient in the prior mean mu0 is then sum_rows
    dL/dG_row * mean_k (z_k - mu0) / s0^2, against the exact sum_rows dL/dG_row
    * (x - mu0) / (s0^2 + sigma^2): they differ by particle noise of sd
    sqrt(sum c_row^2) s / (s0^2 sqrt K) per dimension; within 5 of those."""
    try:
        model, guide, nce, noise = _upper_setup(1.0)
        with torch.no_grad():
            model.prior_loc.fill_(0.3)
        guide.exact(model)
        data = torch.randn(100, D, generator=torch.Generator().manual_seed(1))
        out = nce.logits(model, guide, data)
        x = torch.cat([data, out.samples])
        exact_g = model.log_marginal(x) - noise.log_prob(x)
        g = torch.cat([out.data, out.noise])
        assert torch.allclose(g.detach(), exact_g.detach(), atol=1e-8)  # exact logits
        loss = data.shape[0] * critic.logistic(out.data, out.noise, 1.0)
        (grad,) = torch.autograd.grad(loss, model.prior_loc)
        gd = exact_g.detach().requires_grad_(True)
        exact_loss = data.shape[0] * critic.logistic(gd[:100], gd[100:], 1.0)
        (c,) = torch.autograd.grad(exact_loss, gd)  # dL/dG per row
        mu0 = model.prior_loc.detach()
        expected = (c[:, None] * (x - mu0) / (S0**2 + SIGMA**2)).sum(0)
        s = float(model.posterior(data)[1])
        sd = float(c.pow(2).sum().sqrt()) * s / (S0**2 * math.sqrt(K_UPPER))
        assert torch.all((grad - expected).abs() < 5 * sd), (grad, expected, sd)
    finally:
        torch.set_default_dtype(torch.float32)


def test_noise_rows_alpha_must_be_negative() -> None:
    for bad in (0.0, 0.5, "-1"):
        with pytest.raises(ValueError, match="noise_rows_alpha must be a negative Rényi order"):
            NCE(dist.Normal(0.0, 1.0), noise_rows_alpha=bad)  # type: ignore[arg-type]
    assert "noise_rows_alpha=-1" in repr(NCE(dist.Normal(0.0, 1.0), noise_rows_alpha=-1))


def test_noise_rows_alpha_with_one_particle_warns_once() -> None:
    """With K = 1 every Rényi order gives log w (the orders' bounds agree on the same draws),
    so the variant cannot differ from the lower bound: it says so once instead of silently
    training the lower bound."""
    model = ConjugateGaussian(dim=D, prior_scale=S0, obs_scale=SIGMA)
    guide = AmortizedGaussianGuide(dim=D)
    data = torch.randn(20, D, generator=torch.Generator().manual_seed(2))
    by_order = []
    for alpha in (-1.0, 0.0, 0.5):
        pyro.set_rng_seed(3)
        by_order.append(log_density(model, guide, data, Bound(alpha, 1, math.inf, True)))
    assert torch.allclose(by_order[0], by_order[1]) and torch.allclose(by_order[0], by_order[2])
    upper = NCE(dist.Normal(torch.zeros(D), 2.0).to_event(1), noise_rows_alpha=-1.0)
    with pytest.warns(PyrogenWarning, match="no effect with num_particles=1"):
        upper.logits(model, guide, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        upper.logits(model, guide, data)  # once only
        NCE(
            dist.Normal(torch.zeros(D), 2.0).to_event(1), num_particles=2, noise_rows_alpha=-1.0
        ).logits(model, guide, data)
