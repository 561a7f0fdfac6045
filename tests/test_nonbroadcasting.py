"""Models written as Pyro users write them (``X @ w``) under vectorized particles and many
chains: the plate path when the model broadcasts, vmap when it does not, a warned loop when
vmap cannot run it either; values and gradients equal to evaluating one at a time."""

import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrogen.inference import IWAE, RenyiBound
from pyrogen.inference.batching import BatchingError
from pyrogen.inference.importance import draw_log_weights
from pyrogen.inference.mcmc import ModelPotential, sample
from pyrogen.inference.mcmc.state import potential_and_grad
from pyrogen.metrics import log_likelihood
from pyrogen.warnings import PyrogenWarning

K = 5  # tolerance in Monte Carlo standard errors
NOISE = 0.5


@pytest.fixture(autouse=True)
def _float64():
    """Exact comparisons: the models' priors are built in the default dtype."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def matmul_model(X, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    pyro.deterministic("mean_of_first", X[0] @ w + b)
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(X @ w + b, NOISE), obs=y)


def broadcasting_model(X, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal((X * w).sum(-1) + b, NOISE), obs=y)


def branching_model(X, y=None):  # Python control flow on a latent: vmap cannot run it
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    if b > 0:
        b = 2 * b
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(X @ w + b, NOISE), obs=y)


def guide(X, y=None):
    loc = pyro.param("loc", torch.zeros(3, dtype=X.dtype))
    scale = pyro.param("scale", torch.ones(3, dtype=X.dtype), constraint=dist.constraints.positive)
    pyro.sample("w", dist.Normal(loc, scale).to_event(1))
    pyro.sample("b", dist.Normal(pyro.param("b_loc", torch.tensor(0.0, dtype=X.dtype)), 1.0))


def discrete_guide(X, y=None):  # a score-function site: Trace_ELBO's surrogate at alpha = 1
    guide(X, y)
    pyro.sample("k", dist.Bernoulli(pyro.param("p", torch.tensor(0.3, dtype=X.dtype))))


def discrete_model(X, y=None):
    k = pyro.sample("k", dist.Bernoulli(0.5))
    matmul_model(X + k, y)


def data(n: int = 40, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, 3, generator=g, dtype=dtype)
    y = X @ torch.tensor([1.0, -0.5, 0.25], dtype=dtype) + 0.3
    return X, y + NOISE * torch.randn(n, generator=g, dtype=dtype)


def loss_and_grads(objective, model, guide, X, y):
    pyro.set_rng_seed(3)
    loss = objective.differentiable_loss(model, guide, X, y)
    params = [pyro.param(name).unconstrained() for name in pyro.get_param_store().keys()]
    return loss, torch.autograd.grad(loss, params)


@pytest.mark.parametrize(
    "make, model, the_guide",
    [
        (lambda v: IWAE(8, vectorize_particles=v), matmul_model, guide),
        (lambda v: IWAE(8, gradient="dreg", vectorize_particles=v), matmul_model, guide),
        (lambda v: RenyiBound(1.0, 8, vectorize_particles=v), discrete_model, discrete_guide),
    ],
    ids=["iwae", "iwae-dreg", "elbo-score"],
)
def test_particles_under_vmap_equal_sequential_particles(make, model, the_guide):
    X, y = data()
    vectorized = make(True)
    loss, grads = loss_and_grads(vectorized, model, the_guide, X, y)
    assert vectorized.particle_path.get(model, the_guide) == "vmap"
    expected_loss, expected_grads = loss_and_grads(make(False), model, the_guide, X, y)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-12)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    # The path found is kept: a second call runs no probe and gives the same numbers.
    torch.testing.assert_close(loss_and_grads(vectorized, model, the_guide, X, y)[0], loss)


def test_broadcasting_models_keep_the_plate():
    X, y = data()
    objective = IWAE(8)
    objective.loss(broadcasting_model, guide, X, y)
    assert objective.particle_path.get(broadcasting_model, guide) == "plate"
    w, _ = draw_log_weights(broadcasting_model, guide, (X, y), {}, 8)
    assert w.batching == "plate" and w.log_weight.shape[0] == 8
    assert ModelPotential(broadcasting_model, (X, y)).batching == "plate"


def test_given_plate_nesting_falls_back_without_moving_the_draws():
    """With max_plate_nesting given there is no probe run: the plate path fails, its draws
    are undone, and the vmap path draws what sequential particles draw."""
    X, y = data()
    w, _ = draw_log_weights(matmul_model, guide, (X, y), {}, 8, max_plate_nesting=1)
    assert w.batching == "vmap"
    pyro.set_rng_seed(0)  # the draws are the sequential ones
    w, _ = draw_log_weights(matmul_model, guide, (X, y), {}, 8, max_plate_nesting=1)
    pyro.set_rng_seed(0)
    seq, _ = draw_log_weights(matmul_model, guide, (X, y), {}, 8, vectorize_particles=False)
    torch.testing.assert_close(w.log_weight, seq.log_weight, rtol=1e-12, atol=1e-12)


def per_chain(potential, z):
    pairs = [potential_and_grad(potential, z[i : i + 1]) for i in range(len(z))]
    return torch.cat([u for u, _ in pairs]), torch.cat([g for _, g in pairs])


def test_many_chains_under_vmap_equal_a_loop_over_chains():
    X, y = data()
    potential = ModelPotential(matmul_model, (X, y))
    z = torch.randn(16, potential.dim, dtype=torch.float64)
    u, grad = potential_and_grad(potential, z)
    assert potential.batching == "vmap"
    u_loop, grad_loop = per_chain(potential, z)
    torch.testing.assert_close(u, u_loop, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_loop, rtol=1e-12, atol=1e-12)
    # Same numbers as the model written to broadcast, which keeps the plate.
    written_out = ModelPotential(broadcasting_model, (X, y))
    torch.testing.assert_close(u, written_out(z), rtol=1e-12, atol=1e-12)
    deterministic = potential.deterministic(z)["mean_of_first"]
    w_b = potential.constrain(z)
    torch.testing.assert_close(deterministic, w_b["w"] @ X[0] + w_b["b"])


def mcse(draws: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # arviz: more chains than draws
        return az.mcse(az.convert_to_dataset(draws))["x"].values


def test_many_chain_mcmc_recovers_the_closed_form_posterior():
    X, y = data()
    result = sample(
        model=matmul_model,
        model_args=(X, y),
        num_chains=16,
        num_warmup=150,
        num_samples=150,
        num_steps=5,
        progress=False,
    )
    # Gaussian prior N(0, I), known noise: the posterior of (w, b) is Gaussian.
    A = torch.cat([X, torch.ones(len(X), 1)], 1)
    precision = torch.eye(4, dtype=torch.float64) + A.T @ A / NOISE**2
    mean = torch.linalg.solve(precision, A.T @ y / NOISE**2).numpy()
    draws = torch.cat([result.samples["w"], result.samples["b"][..., None]], -1).numpy()
    assert (np.abs(draws.mean((0, 1)) - mean) <= K * mcse(draws)).all()
    assert result.samples["mean_of_first"].shape == (16, 150)


def test_a_model_vmap_cannot_run_loops_with_one_warning():
    X, y = data()
    with pytest.warns(PyrogenWarning, match=r"line \d+ of test_nonbroadcasting.py \(`if b > 0:`\)"):
        potential = ModelPotential(branching_model, (X, y))
        assert potential.batching == "loop"
    z = torch.randn(4, potential.dim, dtype=torch.float64)
    u, grad = potential_and_grad(potential, z)  # no second warning: tests make it an error
    u_loop, grad_loop = per_chain(potential, z)
    torch.testing.assert_close(u, u_loop)
    torch.testing.assert_close(grad, grad_loop)

    objective = IWAE(4)
    with pytest.warns(PyrogenWarning, match="torch.where instead of a Python if"):
        loss, _ = loss_and_grads(objective, branching_model, guide, X, y)
    assert objective.particle_path.get(branching_model, guide) == "loop"
    expected, _ = loss_and_grads(IWAE(4, vectorize_particles=False), branching_model, guide, X, y)
    torch.testing.assert_close(loss, expected)


def test_the_path_asked_for_fails_with_the_site_and_what_to_write():
    X, y = data()
    potential = ModelPotential(matmul_model, (X, y), batching="plate")
    with pytest.raises(
        BatchingError, match=r"at site 'mean_of_first'.*\(X \* w\)\.sum\(-1\) instead of X @ w"
    ):
        potential(torch.zeros(4, potential.dim, dtype=torch.float64))
    potential = ModelPotential(branching_model, (X, y), batching="vmap")
    with pytest.raises(BatchingError, match=r"`if b > 0:`.*data-dependent control flow"):
        potential(torch.zeros(4, potential.dim, dtype=torch.float64))
    with pytest.raises(BatchingError, match=r"`if b > 0:`"):
        draw_log_weights(branching_model, guide, (X, y), {}, 4, batching="vmap")
    with pytest.raises(ValueError, match="batching must be one of"):
        ModelPotential(matmul_model, (X, y), batching="chains")


def test_log_likelihood_of_a_local_latent_model_that_does_not_broadcast():
    """x = (z, z) + noise per row, written with cat along dim 1 (which a particle plate breaks);
    with the exact posterior as guide every weight is log p(x), so the estimate is exact."""
    s = 0.5

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
            pyro.sample("x", dist.Normal(torch.cat([z, z], dim=1), s).to_event(1), obs=x)

    def exact_guide(x):
        precision = 1.0 + 2.0 / s**2
        loc = (x.sum(1, keepdim=True) / s**2) / precision
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, precision**-0.5).to_event(1))

    x = torch.randn(30, 2)
    ll = log_likelihood(model, exact_guide, x, num_samples=16, particle_chunk=8, batch_size=10)
    cov = torch.ones(2, 2) + s**2 * torch.eye(2)
    exact = dist.MultivariateNormal(torch.zeros(2), cov).log_prob(x)
    torch.testing.assert_close(ll.per_point, exact, rtol=1e-10, atol=1e-10)
    w, _ = draw_log_weights(model, exact_guide, (x,), {}, 8)
    assert w.batching == "vmap"
