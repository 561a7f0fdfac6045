"""A dense mass matrix (``sample(full_mass=True)``): the pooled covariance estimate, the
momentum law, invariance of every kernel under it, closed-form moments of a strongly
correlated Gaussian, and the gain in effective draws per gradient over a diagonal matrix."""

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC
from test_hmc import projections_pass
from test_sample import mcse, rhat

from pyrogen.inference.mcmc import (
    DenseInverseMass,
    MCMCResult,
    PyroKernel,
    hmc,
    kinetic,
    langevin,
    mass,
    register_kernel,
    sample,
)
from pyrogen.inference.mcmc.adaptation import (
    warmup_windows,
    welford_covariance,
    welford_init,
    welford_update,
    welford_variance,
)
from pyrogen.inference.mcmc.chees import chees_init, chees_rescale, chees_update
from pyrogen.inference.mcmc.kernels import KERNELS

K = 5  # tolerance in standard errors; a few dozen checks per test at most


def correlated_covariance(dim: int = 5, condition: float = 100.0) -> torch.Tensor:
    """Eigenvalues spread log-evenly over ``condition`` along a random rotation: marginal
    correlations up to 0.78, and a condition number of 75 left after diagonal scaling."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    eigenvalues = torch.logspace(0, math.log10(condition), dim, dtype=torch.float64)
    return q @ torch.diag(eigenvalues / math.sqrt(condition)) @ q.T


COV = correlated_covariance()
MEAN = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
PRECISION = torch.linalg.inv(COV)
CHOL = torch.linalg.cholesky(COV)


def potential(z: torch.Tensor) -> torch.Tensor:
    d = z - MEAN
    return 0.5 * ((d @ PRECISION) * d).sum(-1)


def exact_draws(n: int, g: torch.Generator) -> torch.Tensor:
    return MEAN + torch.randn(n, 5, dtype=torch.float64, generator=g) @ CHOL.T


def check_iid_covariance(x: torch.Tensor, cov: torch.Tensor, mean: torch.Tensor) -> None:
    """Independent Gaussian draws: each mean within K sqrt(C_ii / n), each covariance entry
    within K sqrt((C_ii C_jj + C_ij^2) / n), the standard error of a sample covariance."""
    n = x.shape[0]
    mean_err = (x.mean(0) - mean).abs() / (cov.diagonal() / n).sqrt()
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    cov_err = (torch.cov(x.T) - cov).abs() / se
    assert bool((mean_err < K).all()), mean_err
    assert bool((cov_err < K).all()), cov_err


# --------------------------------------------------------------------------- the estimate
def test_dense_welford_equals_the_covariance_of_the_pooled_draws():
    """Chan's parallel update, one batch of chains per draw, over an event shaped (2, 3):
    the mean and covariance of all chains and draws flattened, to rounding."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, dtype=torch.float64, generator=g)
    draws = torch.randn(30, 8, 6, dtype=torch.float64, generator=g) @ mix.T + 3.0
    draws = draws.reshape(30, 8, 2, 3)
    state = welford_init(draws[0], dense=True)
    for t in range(draws.shape[0]):
        state = welford_update(state, draws[t])
    flat = draws.reshape(-1, 6)
    assert state.num_draws == 240 and state.dense
    torch.testing.assert_close(state.mean, flat.mean(0), rtol=1e-12, atol=1e-12)
    cov = torch.cov(flat.T)
    torch.testing.assert_close(
        welford_covariance(state, regularize=False), cov, rtol=1e-12, atol=1e-12
    )
    n = 240
    expected = n / (n + 5) * cov + 1e-3 * 5 / (n + 5) * torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(welford_covariance(state), expected, rtol=1e-12, atol=1e-12)
    # the diagonal of the dense estimate is the diagonal estimate
    diagonal = welford_init(draws[0])
    for t in range(draws.shape[0]):
        diagonal = welford_update(diagonal, draws[t])
    torch.testing.assert_close(
        welford_variance(diagonal).reshape(-1), welford_covariance(state).diagonal()
    )
    with pytest.raises(ValueError, match="welford_covariance"):
        welford_variance(state)
    with pytest.raises(ValueError, match="welford_variance"):
        welford_covariance(diagonal)
    with pytest.raises(ValueError, match="two draws"):
        welford_covariance(welford_init(draws[0], dense=True))


# --------------------------------------------------------------------------- the kernels
def test_momentum_has_the_mass_matrix_as_covariance():
    """p = L^{-T} xi has covariance Sigma^{-1} = M; the kinetic energy is p^T Sigma p / 2,
    chi-square with D degrees of freedom over 2 (mean D/2, sd sqrt(D/2)); L xi ~ N(0, Sigma)."""
    n, d = 40000, 5
    g = torch.Generator().manual_seed(0)
    inverse_mass = DenseInverseMass.from_matrix(COV)
    p = mass.momentum(torch.randn(n, d, dtype=torch.float64, generator=g), inverse_mass)
    check_iid_covariance(p, PRECISION, torch.zeros(d, dtype=torch.float64))
    energy = hmc.kinetic_energy(p, inverse_mass)
    torch.testing.assert_close(energy, 0.5 * ((p @ COV) * p).sum(-1), rtol=1e-10, atol=0)
    assert abs(float(energy.mean()) - d / 2) < K * math.sqrt(d / 2 / n)
    noise = mass.noise(torch.randn(n, d, dtype=torch.float64, generator=g), inverse_mass)
    check_iid_covariance(noise, COV, torch.zeros(d, dtype=torch.float64))
    # the diagonal path is the old expression, and a diagonal dense matrix agrees with it
    diag = COV.diagonal()
    as_dense = DenseInverseMass.from_matrix(torch.diag(diag))
    torch.testing.assert_close(mass.momentum(p, as_dense), p * diag.rsqrt())
    torch.testing.assert_close(hmc.kinetic_energy(p, as_dense), hmc.kinetic_energy(p, diag))


def test_dense_leapfrog_is_reversible_and_second_order():
    state = hmc.init(exact_draws(64, torch.Generator().manual_seed(0)), potential)
    inverse_mass = DenseInverseMass.from_matrix(COV)
    p0 = mass.momentum(torch.randn(64, 5, dtype=torch.float64), inverse_mass)
    end, p1 = hmc.leapfrog(state, p0, potential, 0.01, 50, inverse_mass)
    back, p2 = hmc.leapfrog(end, -p1, potential, 0.01, 50, inverse_mass)
    torch.testing.assert_close(back.position, state.position, rtol=0, atol=1e-10)
    torch.testing.assert_close(-p2, p0, rtol=0, atol=1e-10)
    h0 = state.potential_energy + hmc.kinetic_energy(p0, inverse_mass)

    def energy_error(step: float, num_steps: int) -> torch.Tensor:
        end, p1 = hmc.leapfrog(state, p0, potential, step, num_steps, inverse_mass)
        return (end.potential_energy + hmc.kinetic_energy(p1, inverse_mass) - h0).abs().max()

    ratio = energy_error(0.05, 20) / energy_error(0.025, 40)
    assert 3.5 < ratio < 4.5
    # Whitened by its own covariance the target is a standard normal: one step of length 1
    # is stable, where a diagonal metric's stable step is bounded by the narrowest direction.
    _, info = hmc.step(state, potential, 1.0, 3, inverse_mass)
    _, diagonal = hmc.step(state, potential, 1.0, 3, COV.diagonal())
    assert info.acceptance_prob.mean() > 0.5 > diagonal.acceptance_prob.mean()


@pytest.mark.parametrize("kernel", ["hmc", "mala"])
def test_dense_kernels_leave_the_target_invariant(kernel):
    """Chains started at exact draws and moved by a dense-metric kernel are still exact
    draws (KS tests on coordinates and random directions, test_hmc's budget)."""
    g = torch.Generator().manual_seed(1)
    inverse_mass = DenseInverseMass.from_matrix(COV)
    start = exact_draws(4000, g)
    state = hmc.init(start, potential)
    for _ in range(10):
        if kernel == "hmc":
            state, info = hmc.step(state, potential, 0.8, 3, inverse_mass, generator=g)
        else:
            state, info = langevin.mala_step(state, potential, 0.8, inverse_mass, g)
    assert 0.3 < info.acceptance_prob.mean() < 0.99  # the chains moved
    assert (state.position != start).any(1).float().mean() > 0.9
    assert projections_pass(state.position, exact_draws(4000, g))


def test_dense_ula_is_stationary_at_its_closed_form():
    """Preconditioned by the target's covariance C, ULA with step h is, whitened, the AR(1)
    x' = (1 - h) x + sqrt(2h) xi, stationary at C / (1 - h/2) (test_langevin's closed form
    in every direction at once)."""
    h, n = 0.5, 20000
    g = torch.Generator().manual_seed(2)
    stationary = COV / (1 - h / 2)
    start = MEAN + torch.randn(n, 5, dtype=torch.float64, generator=g) @ CHOL.T / math.sqrt(
        1 - h / 2
    )
    state = langevin.init(start, potential)
    inverse_mass = DenseInverseMass.from_matrix(COV)
    for _ in range(20):
        state, info = langevin.ula_step(state, potential, h, inverse_mass, g)
    assert info.is_accepted.all()
    check_iid_covariance(state.position, stationary, MEAN)
    # distinguishable from the target itself: the variance along the widest direction
    widest = float(torch.linalg.eigvalsh(COV).max())
    assert widest * (1 / (1 - h / 2) - 1) > 10 * widest * math.sqrt(2 / n)


def test_dense_kinetic_langevin_samples_a_gaussian_exactly():
    """BAOAB whitened by the target's covariance is BAOAB on a standard normal, whose
    position marginal it samples exactly, even at a large step."""
    g = torch.Generator().manual_seed(3)
    state = kinetic.init(exact_draws(4000, g), potential, g)
    step = kinetic.build(step_size=1.2, inverse_mass=DenseInverseMass.from_matrix(COV))
    for _ in range(100):
        state, info = step(state, potential, g)
    assert bool(info.is_accepted.all())
    check_iid_covariance(state.position, COV, MEAN)


# --------------------------------------------------------------------------- ChEES
def test_chees_with_a_diagonal_dense_matrix_equals_the_diagonal_path():
    g = torch.Generator().manual_seed(4)
    start = torch.randn(32, 2, 3, dtype=torch.float64, generator=g)
    proposal = start + 0.3 * torch.randn(32, 2, 3, dtype=torch.float64, generator=g)
    momentum = torch.randn(32, 2, 3, dtype=torch.float64, generator=g)
    accept = torch.rand(32, dtype=torch.float64, generator=g)
    divergent = torch.zeros(32, dtype=torch.bool)
    diag = torch.rand(2, 3, dtype=torch.float64, generator=g) + 0.5
    dense = DenseInverseMass.from_matrix(torch.diag(diag.reshape(-1)))
    for criterion in ("ess_per_gradient", "chees_per_gradient"):
        args = (start, proposal, momentum, accept, divergent, 0.7)
        a = chees_update(chees_init(2.0), *args, diag, 0.1, criterion=criterion)
        b = chees_update(chees_init(2.0), *args, dense, 0.1, criterion=criterion)
        assert a.log_length != chees_init(2.0).log_length
        for x, y in zip(a, b, strict=True):
            assert x == pytest.approx(y, rel=1e-9, abs=1e-12), criterion


def test_chees_rescale_uses_the_largest_generalised_eigenvalue():
    """Diagonal pairs: the same factor as the diagonal rescale. From the identity to C: the
    length shrinks by the square root of C's largest eigenvalue, the widest direction."""
    state = chees_init(3.0)
    old = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    new = torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64)
    as_dense = [DenseInverseMass.from_matrix(torch.diag(v)) for v in (old, new)]
    expected = chees_rescale(state, old, new).log_length
    assert chees_rescale(state, *as_dense).log_length == pytest.approx(expected, rel=1e-12)
    eye = DenseInverseMass.from_matrix(torch.eye(5, dtype=torch.float64))
    rescaled = chees_rescale(state, eye, DenseInverseMass.from_matrix(COV))
    widest = float(torch.linalg.eigvalsh(COV).max())
    assert rescaled.log_length == pytest.approx(math.log(3.0 / math.sqrt(widest)), rel=1e-10)
    # a diagonal old matrix against a dense new one
    assert chees_rescale(state, torch.ones(5, dtype=torch.float64), eye).log_length == (
        pytest.approx(math.log(3.0))
    )


# --------------------------------------------------------------------------- sample()
def ess_per_gradient(result: MCMCResult) -> float:
    """Minimum bulk ESS over coordinates per gradient of the draws (all chains)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ess = az.ess(az.convert_to_dataset(result.samples["z"].numpy()), method="bulk")
    return float(ess["x"].values.min()) / float(result.stats["num_steps"].sum())


@pytest.fixture(scope="module")
def runs() -> dict[bool, MCMCResult]:
    """The correlated Gaussian with HMC and ChEES, a diagonal and a dense mass matrix, from
    the same start and seed (32 chains, 400 warm-up iterations, 400 draws)."""
    out = {}
    for full_mass in (False, True):
        g = torch.Generator().manual_seed(0)
        start = torch.rand(32, 5, dtype=torch.float64, generator=g) * 4 - 2
        out[full_mass] = sample(
            potential,
            start,
            num_warmup=400,
            num_samples=400,
            full_mass=full_mass,
            generator=g,
            progress=False,
        )
    return out


def check_all_moments(draws: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> None:
    """Every mean and every covariance entry within K MCSE (ArviZ's, of the products);
    R-hat at most 1.01."""
    assert rhat(draws).max() <= 1.01
    assert (np.abs(draws.mean((0, 1)) - mean) <= K * mcse(draws)).all()
    centered = draws - mean
    i, j = np.triu_indices(draws.shape[-1])
    products = centered[..., i] * centered[..., j]
    assert (np.abs(products.mean((0, 1)) - cov[i, j]) <= K * mcse(products)).all()


def test_full_mass_samples_a_correlated_gaussian(runs):
    result = runs[True]
    assert result.inverse_mass is not None and result.inverse_mass.shape == (5, 5)
    assert result.stats["diverging"].sum() == 0
    draws = result.samples["z"].numpy()
    check_all_moments(draws, MEAN.numpy(), COV.numpy())
    # The adapted matrix, whitened by the true covariance, is the identity within the
    # standard error of a covariance estimated from the last window's pooled draws
    # (sqrt((1 + delta_ij) / n_eff) for a whitened Gaussian), n_eff discounted by the
    # draws' efficiency for second moments (ESS per draw of the whitened products, at most
    # 1); its expectation carries Stan's shrinkage n/(n+5) and ridge.
    first, last = warmup_windows(400)[-1]
    n = (last - first + 1) * result.num_chains
    white = np.linalg.solve(CHOL.numpy(), (draws - MEAN.numpy())[..., None])[..., 0]
    i, j = np.triu_indices(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ess = az.ess(az.convert_to_dataset(white[..., i] * white[..., j]))["x"].values
    n_eff = n * min(1.0, ess.min() / (draws.shape[0] * draws.shape[1]))
    whitened = torch.linalg.solve_triangular(
        CHOL, torch.linalg.solve_triangular(CHOL, result.inverse_mass, upper=False).T, upper=False
    )
    expected = n / (n + 5) * torch.eye(5, dtype=torch.float64) + 1e-3 * 5 / (n + 5) * PRECISION
    se = torch.sqrt((1 + torch.eye(5, dtype=torch.float64)) / n_eff)
    assert bool(((whitened - expected).abs() < K * se).all()), (whitened, n_eff)


def test_full_mass_raises_the_effective_draws_per_gradient(runs):
    """Measured: 488 against 69 effective draws per 1000 gradients (7.1x; seed 1: 518
    against 70, 7.4x). A factor of 3 leaves room for seeds, and a dense path that whitened
    by anything but the covariance (the identity, or the diagonal) would fall below 1."""
    dense, diagonal = ess_per_gradient(runs[True]), ess_per_gradient(runs[False])
    assert dense > 3 * diagonal, (dense, diagonal)
    assert runs[False].inverse_mass is not None and runs[False].inverse_mass.shape == (5,)


@pytest.mark.parametrize(
    "kwargs",
    [
        # HMC with a fixed number of steps. Whitened, the target is a standard normal whose
        # directions all share one period: 4 steps adapted to a length near pi, half of it,
        # where every chain flips to minus itself (R-hat 1.02); 3 steps give 1.5.
        {"num_steps": 3, "num_samples": 500},
        {"kernel": "mala", "num_samples": 1000},
    ],
    ids=["hmc-fixed-steps", "mala"],
)
def test_full_mass_with_other_kernels_samples_a_correlated_gaussian(kwargs):
    g = torch.Generator().manual_seed(5)
    start = torch.rand(32, 5, dtype=torch.float64, generator=g) * 4 - 2
    result = sample(
        potential, start, num_warmup=400, full_mass=True, generator=g, progress=False, **kwargs
    )
    assert result.inverse_mass is not None and result.inverse_mass.shape == (5, 5)
    check_all_moments(result.samples["z"].numpy(), MEAN.numpy(), COV.numpy())


@pytest.mark.parametrize("kernel", ["hmc", "mala", "ula", "kinetic_langevin"])
def test_full_mass_flattens_an_event_of_several_dimensions(kernel):
    """An event shaped (2, 3): the matrix is 6 x 6 over the flattened position, and the
    draws keep their shape."""
    scales = torch.linspace(0.5, 2.0, 6, dtype=torch.float64).reshape(2, 3)
    target = lambda z: 0.5 * ((z / scales) ** 2).flatten(1).sum(-1)  # noqa: E731
    fixed = {"step_size": 0.05, "adapt_step_size": False} if kernel != "hmc" else {}
    if kernel == "mala":
        fixed = {}
    result = sample(
        target,
        torch.randn(8, 2, 3, dtype=torch.float64),
        kernel=kernel,
        num_warmup=60,
        num_samples=5,
        full_mass=True,
        progress=False,
        **fixed,
    )
    assert result.samples["z"].shape == (8, 5, 2, 3)
    assert result.inverse_mass is not None and result.inverse_mass.shape == (6, 6)
    assert torch.isfinite(result.samples["z"]).all()


def test_pyro_kernel_takes_full_mass():
    def model(y: torch.Tensor) -> None:
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2, dtype=torch.float64), 10.0).to_event(1))
        pyro.sample("y", dist.Normal(loc.sum(), 1.0).expand([len(y)]).to_event(1), obs=y)

    kernel = PyroKernel(model, num_steps=5, full_mass=True)
    mcmc = MCMC(kernel, num_samples=20, warmup_steps=60, disable_progbar=True)
    mcmc.run(torch.randn(10, dtype=torch.float64))
    assert kernel.inverse_mass.shape == (2, 2)
    assert torch.isfinite(mcmc.get_samples()["loc"]).all()


# --------------------------------------------------------------------------- bad input
def test_bad_full_mass_arguments_are_refused():
    start = torch.zeros(4, 2)
    quadratic = lambda z: 0.5 * (z**2).sum(-1)  # noqa: E731
    with pytest.raises(ValueError, match="'gibbs' has none"):
        sample(quadratic, start, kernel="gibbs", full_mass=True, progress=False)
    with pytest.raises(ValueError, match="needs adapt_mass_matrix=True"):
        sample(quadratic, start, full_mass=True, adapt_mass_matrix=False, progress=False)
    with pytest.raises(ValueError, match="full_mass must be True or False"):
        sample(quadratic, start, full_mass="yes", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs adapt_mass_matrix=True"):
        PyroKernel(lambda: None, full_mass=True, adapt_mass_matrix=False)
    with pytest.raises(ValueError, match="takes inverse_mass"):
        register_kernel("no_mass", hmc.build, settings=("step_size",), full_mass=True)
    register_kernel("diagonal_only", hmc.build, settings=("step_size", "inverse_mass"))
    try:
        with pytest.raises(ValueError, match="'diagonal_only' takes a diagonal inverse_mass"):
            sample(quadratic, start, kernel="diagonal_only", full_mass=True, progress=False)
    finally:
        del KERNELS["diagonal_only"]


@pytest.mark.parametrize(
    "matrix, match",
    [
        (torch.ones(2, 3), "square"),
        (torch.tensor([[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "non-finite"),
        (torch.eye(2, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_dense_matrices_are_refused(matrix, match):
    with pytest.raises(ValueError, match=match):
        DenseInverseMass.from_matrix(matrix)


def test_a_dense_matrix_of_the_wrong_size_is_refused():
    state = hmc.init(torch.zeros(4, 3), lambda z: 0.5 * (z**2).sum(-1))
    eye = DenseInverseMass.from_matrix(torch.eye(2))
    with pytest.raises(ValueError, match="2 x 2 but a position has 3 elements"):
        hmc.step(state, lambda z: 0.5 * (z**2).sum(-1), 0.1, 1, eye)
