"""The Rényi family against closed forms, hand-derived gradients, and Pyro's RenyiELBO.

Statistical checks replicate one data point N times in the data plate: the per-point bounds
are then N independent draws of the estimator, and tolerances are Z standard errors.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrogen.inference import CUBO, IWAE, RenyiBound, VRMax, renyi_reduce
from pyrogen.inference.importance import _all_finite, _any_nan, _check_no_nan
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian

Z = 5.0  # standard errors; a correct estimator fails a two-sided check with p < 1e-6
ALPHAS = [1.0, 0.5, 0.0, -1.0, -math.inf]


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std() / math.sqrt(x.numel()))


def gaussian_kl(m1: torch.Tensor, s1: float, m2: torch.Tensor, s2: float) -> torch.Tensor:
    return math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


# -- exact posterior: every bound is log p(x), for every draw -------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("num_particles", [1, 5])
@pytest.mark.parametrize("vectorize", [True, False])
def test_exact_posterior_gives_log_evidence(
    alpha: float, num_particles: int, vectorize: bool
) -> None:
    torch.set_default_dtype(torch.float64)
    try:
        model = ConjugateGaussian(dim=2, prior_loc=0.3)
        guide = AmortizedGaussianGuide(dim=2).exact(model)
        x = torch.randn(7, 2)
        obj = RenyiBound(alpha, num_particles, vectorize_particles=vectorize)
        exact = model.log_marginal(x).detach()
        for _ in range(3):  # zero variance: every draw gives the same number
            per_point = obj.pointwise(model, guide, x)
            torch.testing.assert_close(per_point, exact, rtol=1e-12, atol=1e-12)
            assert obj.loss(model, guide, x) == pytest.approx(-float(exact.sum()), rel=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_global_latent_gives_joint_evidence() -> None:
    """A latent outside the data plate couples the points: the bound is the joint log p(x)."""
    n = 6
    x = torch.randn(n, dtype=torch.float64)

    def model(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(x.new_tensor(0.0), 1.0))
        with pyro.plate("data", n):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:  # exact posterior N(sum x / (n + 1), 1 / (n + 1))
        pyro.sample("z", dist.Normal(x.sum() / (n + 1), (n + 1) ** -0.5))

    cov = torch.eye(n, dtype=torch.float64) + 1.0
    exact = dist.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov).log_prob(x)
    for alpha in [1.0, 0.0, -math.inf]:
        obj = RenyiBound(alpha, num_particles=4)
        per_point = obj.pointwise(model, guide, x)
        assert per_point.numel() == 1
        torch.testing.assert_close(per_point.sum(), exact, rtol=1e-12, atol=1e-12)


def test_subsampled_plate_scales_the_per_point_bounds() -> None:
    torch.set_default_dtype(torch.float64)
    try:
        full = ConjugateGaussian(dim=1)
        x = torch.randn(20, 1)
        seen: list[torch.Tensor] = []

        def model(x: torch.Tensor) -> None:
            with pyro.plate("data", len(x), subsample_size=5) as idx:
                seen.append(idx)
                z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
                pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x[idx])

        def guide(x: torch.Tensor) -> None:
            with pyro.plate("data", len(x), subsample_size=5) as idx:
                loc, scale = full.posterior(x[idx])
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

        loss = IWAE(num_particles=3).loss(model, guide, x)
        idx = seen[-1]
        expected = -(20 / 5) * float(full.log_marginal(x[idx]).sum().detach())
        assert loss == pytest.approx(expected, rel=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


# -- mismatched guide: ordering and convergence, in expectation ----------------------------


N_REP = 16000


def _replicated(x0: float = 1.2) -> tuple[ConjugateGaussian, AmortizedGaussianGuide, torch.Tensor]:
    model = ConjugateGaussian(dim=1)
    # posterior is N(0.8 x, 0.2): move the mean and widen the scale
    guide = AmortizedGaussianGuide(dim=1).set_to(weight=0.5, bias=0.3, scale=0.7)
    return model, guide, torch.full((N_REP, 1), x0)


def test_elbo_matches_closed_form() -> None:
    model, guide, x = _replicated()
    elbo = RenyiBound(1.0, num_particles=1).pointwise(model, guide, x)
    m, se = mean_se(elbo)
    post_loc, post_scale = model.posterior(x[:1].detach())
    kl = gaussian_kl(0.5 * x[0, 0] + 0.3, 0.7, post_loc[0, 0].detach(), float(post_scale))
    expected = float(model.log_marginal(x[:1]).detach()) - float(kl)
    assert abs(m - expected) < Z * se, (m, expected, se)


def test_iwae_increases_with_k_towards_log_evidence() -> None:
    model, guide, x = _replicated()
    log_px = float(model.log_marginal(x[:1]).detach())
    means, ses = [], []
    for k in [1, 4, 16, 64]:
        m, se = mean_se(IWAE(num_particles=k).pointwise(model, guide, x))
        means.append(m)
        ses.append(se)
        assert m < log_px + Z * se  # a lower bound in expectation
    for i in range(len(means) - 1):
        # strictly increasing: every step beyond Z standard errors of the difference
        assert means[i + 1] - means[i] > Z * math.hypot(ses[i], ses[i + 1]), (means, ses)
    gaps = [log_px - m for m in means]
    # the gap closes: at K=64 it is under a quarter of the ELBO's gap
    assert gaps[-1] < 0.25 * gaps[0], gaps


def test_elbo_below_iwae_below_log_evidence() -> None:
    model, guide, x = _replicated()
    log_px = float(model.log_marginal(x[:1]).detach())
    elbo, se_e = mean_se(RenyiBound(1.0, num_particles=5).pointwise(model, guide, x))
    iwae, se_i = mean_se(IWAE(num_particles=5).pointwise(model, guide, x))
    assert elbo < iwae - Z * math.hypot(se_e, se_i)  # the ordering is clear, not noise
    assert iwae < log_px + Z * se_i


def test_renyi_non_increasing_in_alpha_draw_by_draw() -> None:
    """A power-mean inequality: on the same particles the estimate orders exactly."""
    model, guide, x = _replicated()
    lw = IWAE(num_particles=8).log_weights(model, guide, (x,), {}).log_weight.detach().double()
    alphas = [2.0, 1.0, 1 - 1e-9, 0.5, 0.0, -1.0, -10.0, -math.inf]
    values = torch.stack([renyi_reduce(lw, a) for a in alphas])
    diffs = values[:-1] - values[1:]
    assert (diffs <= 1e-12).all(), diffs.max()


def test_alpha_near_one_is_the_elbo_limit_in_float32() -> None:
    lw64 = torch.randn(16, 1000, dtype=torch.float64) * 3 - 50
    elbo = lw64.mean(0)
    centred = lw64 - elbo
    for eps in [1e-3, 1e-6, 1e-9]:
        v32 = renyi_reduce(lw64.float(), 1 - eps).double()
        v64 = renyi_reduce(lw64, 1 - eps)
        # the limit: L_alpha - ELBO = eps Var/2 + R with |R| <= eps^2 E|d|^3 (cumulant series)
        first_order = elbo + eps * centred.pow(2).mean(0) / 2
        remainder = eps**2 * centred.abs().pow(3).mean(0)
        assert ((v64 - first_order).abs() <= remainder + 1e-13 * elbo.abs()).all()
        # float32 keeps the relative precision of its inputs (no cancellation blow-up)
        torch.testing.assert_close(v32, v64, rtol=4 * torch.finfo(torch.float32).eps, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_stable_at_log_weights_of_1e4(dtype: torch.dtype, alpha: float, sign: float) -> None:
    spread = torch.linspace(-30, 30, 8, dtype=torch.float64).unsqueeze(-1)
    lw = sign * 1e4 + spread
    ref = renyi_reduce(spread, alpha) + sign * 1e4
    lw_d = lw.to(dtype).requires_grad_()
    value = renyi_reduce(lw_d, alpha)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(lw_d.grad).all()
    rtol = torch.finfo(dtype).eps * 4
    torch.testing.assert_close(value.double(), ref, rtol=rtol, atol=0)


def test_huge_log_weights_through_a_model() -> None:
    """log p(x | z) near -1e4 per point: the loss and its gradients stay finite."""
    model = ConjugateGaussian(dim=1, obs_scale=0.005)
    guide = AmortizedGaussianGuide(dim=1)
    x = torch.full((8, 1), 1.5)
    lw = IWAE(5).log_weights(model, guide, (x,), {}).log_weight
    assert float(lw.detach().abs().max()) > 1e4
    for alpha in ALPHAS:
        pyro.clear_param_store()
        loss = RenyiBound(alpha, 5)(model, guide)(x)
        loss.backward()
        assert torch.isfinite(loss)
        for p in list(model.parameters()) + list(guide.parameters()):
            assert p.grad is not None and torch.isfinite(p.grad).all()
            p.grad = None


# -- gradients ------------------------------------------------------------------------------


def _scalar_pair(
    zs: list[torch.Tensor],
) -> tuple[object, object, torch.Tensor, torch.Tensor, torch.Tensor]:
    mu0 = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    m = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", 1):
            z = pyro.sample("z", dist.Normal(mu0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", 1):
            zs.append(pyro.sample("z", dist.Normal(m, s)))

    return model, guide, mu0, m, s


@pytest.mark.parametrize("gradient", ["reparam", "dreg"])
@pytest.mark.parametrize("num_particles", [1, 3])
def test_gradient_against_hand_derived_formula(gradient: str, num_particles: int) -> None:
    zs: list[torch.Tensor] = []
    model, guide, mu0, m, s = _scalar_pair(zs)
    x = torch.tensor([0.9], dtype=torch.float64)
    obj = IWAE(num_particles=num_particles, gradient=gradient)
    obj.max_plate_nesting = 2 if num_particles > 1 else 1  # no guessing run: zs[0] is ours
    loss = obj.differentiable_loss(model, guide, x)
    g_mu0, g_m, g_s = torch.autograd.grad(loss, [mu0, m, s])

    z = zs[0].detach().reshape(-1)
    md, sd, mud = m.detach(), s.detach(), mu0.detach()
    eps = (z - md) / sd
    lw = (
        dist.Normal(mud, 1.0).log_prob(z)
        + dist.Normal(z, 0.5).log_prob(x)
        - dist.Normal(md, sd).log_prob(z)
    )
    w = torch.softmax(lw, 0)
    dlw_dz = -(z - mud) + (x - z) / 0.25 + (z - md) / sd**2  # d/dz of log p - log q
    # reparameterized: d lw / dm = dlw_dz - d log q / dm (direct) = dlw_dz - (z - m) / s^2
    path_m, path_s = dlw_dz, dlw_dz * eps
    if gradient == "reparam":
        d_m = path_m - (z - md) / sd**2
        d_s = path_s - ((z - md) ** 2 / sd**3 - 1 / sd)
        expected_m, expected_s = (w * d_m).sum(), (w * d_s).sum()
    else:  # DReG: squared weights on the path, no score term
        expected_m, expected_s = (w**2 * path_m).sum(), (w**2 * path_s).sum()
    expected_mu0 = (w * (z - mud)).sum()
    torch.testing.assert_close(-g_mu0, expected_mu0)
    torch.testing.assert_close(-g_m, expected_m)
    torch.testing.assert_close(-g_s, expected_s)


def _grad_samples(gradient: str, k: int, n: int = 3000) -> tuple[torch.Tensor, torch.Tensor]:
    """N independent gradients of the guide's per-point mean and log-scale."""
    model = ConjugateGaussian(dim=1)
    loc = torch.full((n, 1), 0.5, requires_grad=True)
    log_scale = torch.full((n, 1), math.log(0.6), requires_grad=True)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", n):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    x = torch.full((n, 1), 1.2)
    loss = IWAE(num_particles=k, gradient=gradient).differentiable_loss(model, guide, x)
    g_loc, g_ls = torch.autograd.grad(loss, [loc, log_scale])
    return g_loc.reshape(-1), g_ls.reshape(-1)


@pytest.mark.parametrize("k", [5, 20])
def test_dreg_same_expectation_lower_variance(k: int) -> None:
    std = _grad_samples("reparam", k)
    dreg = _grad_samples("dreg", k)
    for a, b in zip(std, dreg, strict=True):
        (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
        assert abs(ma - mb) < Z * math.hypot(sa, sb), (ma, mb, sa, sb)
        ratio = float(a.var() / b.var())
        print(f"K={k}: variance ratio standard/DReG = {ratio:.1f}")
        # F-test: with 3000 draws each, a ratio above 1.3 is beyond any chance of noise
        # (measured: 32x and 67x at K=5, 575x and 1399x at K=20 for mean and log-scale)
        assert ratio > 1.3


def test_dreg_leaves_model_gradient_and_value_unchanged() -> None:
    model = ConjugateGaussian(dim=2, prior_loc=0.2)
    guide = AmortizedGaussianGuide(dim=2).set_to(0.5, 0.1, 0.8)
    x = torch.randn(10, 2)
    out = {}
    for gradient in ["reparam", "dreg"]:
        pyro.set_rng_seed(3)
        loss = IWAE(num_particles=6, gradient=gradient)(model, guide)(x)
        (g,) = torch.autograd.grad(loss, [model.prior_loc])
        out[gradient] = (loss.detach(), g)
    torch.testing.assert_close(out["reparam"], out["dreg"])


# -- score function for non-reparameterizable guides, and Pyro's RenyiELBO ------------------


def _discrete_pair(n: int) -> tuple[object, object, torch.Tensor, torch.Tensor]:
    logit = torch.full((n,), 0.3, requires_grad=True)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", n):
            pyro.sample("z", dist.Bernoulli(logits=logit))

    return model, guide, logit, torch.full((n,), 0.4)


def _exact_iwae_gradient(k: int, alpha: float) -> float:
    """d/dlogit of E[L_alpha,K] by enumerating all 2^K particle sets (one data point)."""
    logit = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    q1 = torch.sigmoid(logit)
    zs = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * k)
    zs = zs.reshape(-1, k)
    log_q = torch.where(zs == 1, q1.log(), (1 - q1).log())
    log_p = dist.Bernoulli(0.3).log_prob(zs) + dist.Normal(2 * zs - 1, 1.0).log_prob(
        torch.tensor(0.4, dtype=torch.float64)
    )
    estimate = renyi_reduce((log_p - log_q).T, alpha)  # one estimate per particle set
    expectation = (log_q.sum(1).exp() * estimate).sum()
    (g,) = torch.autograd.grad(expectation, [logit])
    return float(g)


@pytest.mark.parametrize("alpha,k", [(0.0, 3), (0.5, 2), (1.0, 2), (-math.inf, 3)])
def test_score_function_gradient_is_unbiased(alpha: float, k: int) -> None:
    n = 20000
    model, guide, logit, x = _discrete_pair(n)
    loss = RenyiBound(alpha, k).differentiable_loss(model, guide, x)
    (g,) = torch.autograd.grad(loss, [logit])
    m, se = mean_se(-g)
    exact = _exact_iwae_gradient(k, alpha)
    assert abs(m - exact) < Z * se, (m, exact, se)


def test_pyro_renyi_gives_no_guide_gradient_for_discrete_iwae() -> None:
    """Where pyrogen and Pyro differ: Pyro's alpha=0 score term is alpha/(1-alpha) = 0."""
    n = 20000
    model, guide, logit, x = _discrete_pair(n)
    pyro_loss = pyro.infer.RenyiELBO(alpha=0.0, num_particles=3, vectorize_particles=True)
    pyro_loss.loss_and_grads(model, guide, x)
    assert logit.grad is None or float(logit.grad.abs().max()) == 0.0
    # the true gradient is many of our standard errors away from Pyro's zero
    (ours,) = torch.autograd.grad(IWAE(3).differentiable_loss(model, guide, x), [logit])
    m, se = mean_se(-ours)
    exact = _exact_iwae_gradient(3, 0.0)
    assert abs(m - exact) < Z * se and abs(exact) > 2 * Z * se, (m, exact, se)


def _amortized(seed: int) -> tuple[ConjugateGaussian, AmortizedGaussianGuide, torch.Tensor]:
    model = ConjugateGaussian(dim=3, prior_loc=0.2)
    guide = AmortizedGaussianGuide(dim=3).set_to(0.6, 0.1, 0.7)
    torch.manual_seed(seed)
    return model, guide, torch.randn(9, 3)


@pytest.mark.parametrize("alpha,k", [(0.5, 5), (0.0, 3), (-1.0, 4), (2.0, 2)])
@pytest.mark.parametrize("vectorize", [True, False])
def test_agrees_with_pyro_renyi_elbo(alpha: float, k: int, vectorize: bool) -> None:
    model, guide, x = _amortized(0)
    results = []
    for obj in [
        pyro.infer.RenyiELBO(alpha=alpha, num_particles=k, vectorize_particles=vectorize),
        RenyiBound(alpha, k, vectorize_particles=vectorize),
    ]:
        pyro.clear_param_store()
        pyro.set_rng_seed(11)
        loss = obj.loss_and_grads(model, guide, x)
        grads = [p.grad.clone() for p in [model.prior_loc, guide.weight, guide.log_scale]]
        for p in list(model.parameters()) + list(guide.parameters()):
            p.grad = None
        results.append((torch.tensor(loss), grads))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_alpha_one_is_pyro_trace_elbo() -> None:
    """Pyro's RenyiELBO refuses alpha = 1; ours is the ELBO there, equal to Trace_ELBO."""
    model, guide, x = _amortized(1)
    with pytest.raises(ValueError):
        pyro.infer.RenyiELBO(alpha=1.0)
    values = []
    for obj in [
        pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True),
        RenyiBound(1.0, 4),
    ]:
        pyro.set_rng_seed(5)
        values.append(obj.loss(model, guide, x))
    assert values[0] == pytest.approx(values[1], rel=1e-6)


# -- named forms and CUBO -------------------------------------------------------------------


def test_named_forms() -> None:
    assert IWAE(7).alpha == 0.0 and IWAE(7).num_particles == 7
    assert VRMax(3).alpha == -math.inf
    assert CUBO(n=2).alpha == -1.0
    assert "alpha=0.0" in repr(IWAE(2))


def test_cubo_sandwiches_log_evidence() -> None:
    model, guide, x = _replicated()
    log_px = float(model.log_marginal(x[:1]).detach())
    cubo = CUBO(n=2, num_particles=2000).pointwise(model, guide, x[:200])
    elbo = RenyiBound(1.0, num_particles=1).pointwise(model, guide, x)
    m_c, se_c = mean_se(cubo)
    m_e, se_e = mean_se(elbo)
    assert m_e + Z * se_e < log_px < m_c + Z * se_c
    # the loss is +CUBO (to be minimised): per point above the ELBO
    loss = CUBO(n=2, num_particles=64).loss(model, guide, x)
    assert loss / N_REP > m_e + Z * se_e


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("k,err", [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_bad_num_particles(k: object, err: type) -> None:
    with pytest.raises(err, match="num_particles"):
        RenyiBound(0.5, k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "alpha,err",
    [
        ("a", TypeError),
        (None, TypeError),
        (True, TypeError),
        (float("nan"), ValueError),
        (math.inf, ValueError),
    ],
)
def test_bad_alpha(alpha: object, err: type) -> None:
    with pytest.raises(err, match="alpha"):
        RenyiBound(alpha)  # type: ignore[arg-type]


def test_bad_gradient_option() -> None:
    with pytest.raises(ValueError, match="gradient"):
        RenyiBound(0.0, 2, gradient="magic")
    with pytest.raises(ValueError, match="VR-max"):
        RenyiBound(-math.inf, 2, gradient="dreg")


def test_guide_missing_a_latent_site() -> None:
    def model(x: torch.Tensor) -> None:
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"latent site\(s\) \['b'\]"):
        IWAE(3).loss(model, guide, torch.tensor(0.5))


def test_nan_in_data() -> None:
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(5, 2)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"positional argument 0 contain NaN \(1 of 10"):
        IWAE(3).loss(model, guide, x)

    def guide_ignoring_data(x: torch.Tensor) -> None:
        with pyro.plate("data", 5):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    def model_with_closure_data() -> None:  # data the objective never sees as an argument
        model(x)

    with pytest.raises(ValueError, match="observed site 'x' contains NaN"):
        IWAE(3).loss(model_with_closure_data, lambda: guide_ignoring_data(x))


def test_data_checks_by_one_reduction_agree_with_the_entrywise_masks() -> None:
    """The NaN/infinity checks read a sum first; where the sum misleads (a finite sum that
    overflows, inf - inf) they fall back to the masks, so they answer as the masks do."""
    cases = [
        torch.randn(7, 3),
        torch.full((4,), 3e38),  # finite entries whose sum overflows
        torch.tensor([math.inf, -math.inf, 1.0]),  # NaN sum without a NaN entry
        torch.tensor([1.0, math.nan]),
        torch.tensor([-math.inf, 0.0]),
        torch.empty(0),
    ]
    for value in cases:
        assert _all_finite(value) == bool(torch.isfinite(value).all())
        assert _any_nan(value) == bool(torch.isnan(value).any())
    _check_no_nan((torch.full((5, 2), 3e38),), {})  # passes, although the sum overflows
    with pytest.raises(ValueError, match="infinite values"):
        IWAE(2).loss(
            ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2), torch.tensor([[math.inf, 0.0]])
        )


def test_dreg_refuses_a_discrete_guide_site_by_name() -> None:
    model, guide, _, x = _discrete_pair(4)
    with pytest.raises(ValueError, match="site 'z'"):
        IWAE(3, gradient="dreg").loss(model, guide, x)


def test_enumerated_guide_site_is_refused() -> None:
    model, _, _, x = _discrete_pair(4)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})

    with pytest.raises(NotImplementedError, match="enumerated"):
        IWAE(3).loss(model, guide, x)


def _leave_one_out_by_replacement(lw: torch.Tensor, alpha: float) -> torch.Tensor:
    """The VIMCO baselines written out: K copies of the particles, copy k with particle k
    replaced by the mean of the others, each reduced (K^2 memory; the reference)."""
    k = lw.shape[0]
    others = (lw.sum(0, keepdim=True) - lw) / (k - 1)
    eye = torch.eye(k, dtype=torch.bool).reshape((k, k) + (1,) * (lw.dim() - 1))
    replaced = torch.where(eye, others.unsqueeze(1), lw.unsqueeze(0))
    return torch.stack([renyi_reduce(replaced[i], alpha) for i in range(k)])


@pytest.mark.parametrize("alpha", [1.0, 0.95, 0.5, 0.0, -1.0, 2.0, -math.inf])
@pytest.mark.parametrize("spread", [0.01, 1.0, 50.0])
def test_leave_one_out_baselines_in_linear_memory(alpha: float, spread: float) -> None:
    """The same numbers as the K^2 replacement, to float64 rounding, from weights nearly
    equal to weights where one particle dominates by e^100."""
    from pyrogen.inference.renyi import _leave_one_out

    gen = torch.Generator().manual_seed(0)
    for k in (2, 5, 64):
        lw = torch.randn(k, 7, generator=gen, dtype=torch.float64) * spread - 100
        torch.testing.assert_close(
            _leave_one_out(lw, alpha), _leave_one_out_by_replacement(lw, alpha), rtol=1e-10, atol=0
        )
    many = _leave_one_out(torch.randn(200_000, 1, generator=gen), alpha)  # K^2: 160 GB
    assert many.shape == (200_000, 1) and bool(torch.isfinite(many).all())


def test_alpha_one_score_function_gradient_is_trace_elbos() -> None:
    """A discrete latent and no plates: at alpha = 1 with one particle, the gradient is
    Trace_ELBO's draw by draw (the zero-mean -grad log q term dropped, as Pyro drops it)."""
    x = torch.tensor(0.7)

    def model() -> None:
        z = pyro.sample("z", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)

    def guide() -> None:
        logit = pyro.param("logit", torch.tensor(0.2))
        pyro.sample("z", dist.Bernoulli(logits=logit))

    for seed in range(5):
        grads = []
        for loss in (RenyiBound(1.0, 1), pyro.infer.Trace_ELBO()):
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            loss.loss_and_grads(model, guide)
            grads.append(pyro.param("logit").grad.clone())
        torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("num_particles", [1, 4])
def test_alpha_one_rao_blackwellizes_by_plate_as_trace_elbo(num_particles: int) -> None:
    """A global latent and local discrete latents in a data plate: at alpha = 1 each local
    site's score is credited with its own data point's terms only (Pyro's plate-wise
    reward), so the gradients are Trace_ELBO's draw by draw, vectorized particles too."""
    x = torch.tensor([0.4, -1.2, 2.0, 0.3, 1.1])

    def model() -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 5):
            z = pyro.sample("z", dist.Bernoulli(0.4))
            pyro.sample("x", dist.Normal(mu + 2.0 * z - 1.0, 1.0), obs=x)

    def guide() -> None:
        loc = pyro.param("loc", torch.tensor(0.1))
        logits = pyro.param("logits", torch.linspace(-1.0, 1.0, 5))
        pyro.sample("mu", dist.Normal(loc, 0.8))
        with pyro.plate("data", 5):
            pyro.sample("z", dist.Bernoulli(logits=logits))

    vectorize = num_particles > 1
    for seed in range(3):
        grads = []
        for loss in (
            RenyiBound(1.0, num_particles),
            pyro.infer.Trace_ELBO(num_particles=num_particles, vectorize_particles=vectorize),
        ):
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            value = loss.loss_and_grads(model, guide)
            grads.append([value] + [pyro.param(n).grad.clone() for n in ("loc", "logits")])
        assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
        for ours, theirs in zip(grads[0][1:], grads[1][1:], strict=True):
            torch.testing.assert_close(ours, theirs)
