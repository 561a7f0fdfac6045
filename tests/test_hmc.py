import pytest
import torch
from scipy import stats

from pyrogen.inference.mcmc import hmc, langevin, potential_and_grad

# Invariance tests: chains started at exact draws and moved N transitions must still be exact
# draws. Each test runs several KS tests; the family-wise false-alarm budget is 1e-3.
ALPHA = 1e-3


def projections_pass(a: torch.Tensor, b: torch.Tensor, num_random: int = 4) -> bool:
    """KS two-sample tests on every coordinate and a few random directions (Bonferroni)."""
    g = torch.Generator().manual_seed(1)
    dirs = torch.cat([torch.eye(a.shape[1]), torch.randn(num_random, a.shape[1], generator=g)])
    dirs = dirs.to(a.dtype)
    pvalues = [stats.ks_2samp((a @ d).numpy(), (b @ d).numpy()).pvalue for d in dirs]
    return min(pvalues) > ALPHA / len(pvalues)


def test_leapfrog_is_reversible_and_nearly_conserves_energy(gaussian):
    state = hmc.init(gaussian.draw(64), gaussian.potential)
    p0 = torch.randn(64, gaussian.dim, dtype=torch.float64)
    end, p1 = hmc.leapfrog(state, p0, gaussian.potential, 0.01, 50)
    back, p2 = hmc.leapfrog(end, -p1, gaussian.potential, 0.01, 50)
    assert torch.allclose(back.position, state.position, atol=1e-10)
    assert torch.allclose(-p2, p0, atol=1e-10)
    h0 = state.potential_energy + hmc.kinetic_energy(p0)

    def energy_error(step, num_steps):
        end, p1 = hmc.leapfrog(state, p0, gaussian.potential, step, num_steps)
        return (end.potential_energy + hmc.kinetic_energy(p1) - h0).abs().max()

    # Leapfrog is second order: halving the step over the same time divides the error by ~4.
    ratio = energy_error(0.01, 50) / energy_error(0.005, 100)
    assert 3.5 < ratio < 4.5


def test_hmc_leaves_the_target_invariant(gaussian):
    start = gaussian.draw(4000)
    state = hmc.init(start, gaussian.potential)
    inverse_mass = gaussian.cov.diagonal()
    for _ in range(10):
        state, info = hmc.step(state, gaussian.potential, 0.4, 5, inverse_mass)
    assert 0.3 < info.acceptance_prob.mean() < 0.99  # the test moved the chains
    assert (state.position != start).any(1).float().mean() > 0.9
    assert projections_pass(state.position, gaussian.draw(4000))


def test_the_invariance_test_catches_a_biased_kernel(gaussian):
    """The same test fails for unadjusted Langevin with a large step: it can fail."""
    state = langevin.init(gaussian.draw(4000), gaussian.potential)
    for _ in range(10):
        state, _ = langevin.ula_step(state, gaussian.potential, 0.5, gaussian.cov.diagonal())
    assert not projections_pass(state.position, gaussian.draw(4000))


def test_per_chain_step_sizes_are_used_per_chain(gaussian):
    state = hmc.init(gaussian.draw(3), gaussian.potential)
    steps = torch.tensor([1e-6, 0.3, 5.0], dtype=torch.float64)
    new, info = hmc.step(state, gaussian.potential, steps, 3)
    assert torch.equal(info.step_size, steps)
    assert info.acceptance_prob[0] > 0.999999  # a tiny step conserves energy


class Poisoned:
    """0.5 |z|^2, but NaN (or inf) for the chains in ``rows`` once ``armed``."""

    def __init__(self, rows: list[int], value: float) -> None:
        self.rows, self.value, self.armed = rows, value, False

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        u = 0.5 * (z**2).sum(-1)
        if self.armed:
            bad = torch.zeros_like(u, dtype=torch.bool)
            bad[self.rows] = True
            u = torch.where(bad, torch.full_like(u, self.value), u)
        return u


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("kernel", ["hmc", "mala", "ula"])
def test_non_finite_potential_rejects_only_those_chains(kernel, value):
    start = torch.randn(6, 3)
    clean = Poisoned([1, 4], value)
    poisoned = Poisoned([1, 4], value)
    state_clean = hmc.init(start, clean)
    state_bad = hmc.init(start, poisoned)
    poisoned.armed = True

    def run(state, potential):
        g = torch.Generator().manual_seed(3)
        if kernel == "hmc":
            return hmc.step(state, potential, 0.5, 4, generator=g)
        step = langevin.mala_step if kernel == "mala" else langevin.ula_step
        return step(state, potential, 0.3, generator=g)

    good_new, good_info = run(state_clean, clean)
    bad_new, bad_info = run(state_bad, poisoned)
    others = [0, 2, 3, 5]
    assert torch.equal(bad_new.position[others], good_new.position[others])
    assert torch.equal(bad_info.acceptance_prob[others], good_info.acceptance_prob[others])
    assert torch.equal(bad_new.position[[1, 4]], start[[1, 4]])
    assert bad_info.is_divergent[[1, 4]].all() and not bad_info.is_divergent[others].any()
    assert (bad_info.acceptance_prob[[1, 4]] == 0).all()
    assert torch.isfinite(bad_new.potential_energy).all()


def test_energy_error_above_the_threshold_is_divergent():
    state = hmc.init(torch.full((4, 2), 3.0), lambda z: 0.5 * (z**2).sum(-1))
    _, info = hmc.step(state, lambda z: 0.5 * (z**2).sum(-1), 2.5, 20, divergence_threshold=1.0)
    assert info.is_divergent.all()


@pytest.mark.parametrize(
    "position, match",
    [
        (torch.zeros(3), "leading chain dimension"),
        (torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), r"non-finite initial position .*\[0\]"),
        (torch.zeros(2, 2, dtype=torch.long), "floating-point"),
        (torch.zeros(0, 2), "at least one chain"),
    ],
)
def test_bad_initial_positions_are_refused(position, match):
    with pytest.raises(ValueError, match=match):
        hmc.init(position, lambda z: (z**2).sum(-1))


def test_bad_potential_and_step_arguments_are_refused():
    potential = lambda z: 0.5 * (z**2).sum(-1)  # noqa: E731
    with pytest.raises(ValueError, match="not finite at the initial position"):
        hmc.init(torch.tensor([[1.0], [-1.0]]), lambda z: z.squeeze(-1).log())
    with pytest.raises(ValueError, match="one value per chain"):
        hmc.init(torch.zeros(3, 2), lambda z: (z**2).sum())
    state = hmc.init(torch.zeros(3, 2), potential)
    for steps in (0, -2, 1.5):
        with pytest.raises(ValueError, match="num_steps must be a positive integer"):
            hmc.step(state, potential, 0.1, steps)
    for step in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="step_size must be positive"):
            hmc.step(state, potential, step, 3)
    with pytest.raises(ValueError, match="per-chain value must have shape"):
        hmc.step(state, potential, torch.ones(2), 3)


def test_potential_and_grad_matches_the_analytic_gradient(gaussian):
    z = gaussian.draw(5)
    u, grad = potential_and_grad(gaussian.potential, z)
    assert torch.allclose(grad, (z - gaussian.mean) @ gaussian.precision)
    assert not u.requires_grad
