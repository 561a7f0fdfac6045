"""Importance sampling as a component: particles and log-weights, and the refusal of guides
whose sites have no usable density (implicit guides)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

from pyrogen.inference import IWAE, NCE, RenyiBound
from pyrogen.inference.importance import draw_log_weights
from pyrogen.metrics import log_likelihood
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian


def model(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def delta_guide(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Delta(x / 2))


def marked_guide(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 2, 0.7), infer={"implicit": True})


def noise_guide(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        eps = pyro.sample("eps", dist.Normal(0.0, 1.0))
        pyro.sample("z", dist.Normal(x / 2 + eps, 0.7))


@pytest.mark.parametrize(
    ("guide", "site", "what"),
    [
        (delta_guide, "z", "implicit"),
        (marked_guide, "z", "implicit"),
        (noise_guide, "eps", "not a site of the model"),
    ],
)
def test_every_importance_weighted_computation_refuses_implicit_sites(
    guide: object, site: str, what: str
) -> None:
    x = torch.randn(5)
    pattern = f"guide site '{site}' .*{what}.*AVB"
    for objective in (IWAE(4), RenyiBound(0.5, 3), IWAE(2, vectorize_particles=False)):
        with pytest.raises(ValueError, match=pattern):
            objective.loss(model, guide, x)
    with pytest.raises(ValueError, match=pattern):
        log_likelihood(model, guide, x, num_samples=10, progress=False)
    with pytest.raises(ValueError, match=pattern):
        NCE(dist.Normal(0.0, 3.0), num_particles=3).loss(model, guide, x)


def test_draw_log_weights_shapes_and_the_nesting_it_finds() -> None:
    m, g = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(7, 2)
    w, nesting = draw_log_weights(m, g, (x,), {}, num_particles=5)
    assert w.log_weight.shape == (5, 7) and nesting == 1
    w, nesting = draw_log_weights(m, g, (x,), {}, 3, vectorize_particles=False)
    assert w.log_weight.shape == (3, 7) and nesting == 1
    # the same numbers as the objective that calls it, at the same seed
    pyro.set_rng_seed(1)
    w, _ = draw_log_weights(m, g, (x,), {}, 4, max_plate_nesting=1)
    pyro.set_rng_seed(1)
    torch.testing.assert_close(
        IWAE(4, max_plate_nesting=1).log_weights(m, g, (x,), {}).log_weight, w.log_weight
    )


def _positive_model(v: torch.Tensor) -> None:
    """The conjugate model written in s = exp(u) > 0: a constrained latent."""
    with pyro.plate("data", v.shape[0]):
        s = pyro.sample("s", dist.LogNormal(0.3, 1.0).expand([2]).to_event(1))
        pyro.sample("x", dist.Normal(s.log(), 0.5).to_event(1), obs=v)


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("autoguide", ["AutoNormal", "AutoMultivariateNormal"])
def test_pyro_autoguides_at_the_exact_posterior_weigh_every_draw_log_p_x(
    autoguide: str, constrained: bool
) -> None:
    """Pyro's autoguides draw auxiliary unconstrained sites and write each latent at a Delta
    whose log_density is the transform's Jacobian term: with the guide set to the exact
    posterior (in u = log s for the constrained model), every weight is log p(x), which
    holds only if the auxiliary densities and the Jacobian terms both enter log q."""
    from pyro.infer import autoguide as autoguides

    conjugate = ConjugateGaussian(dim=2, prior_loc=0.3)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(5))
    loc, sd = conjugate.posterior(x)
    model = _positive_model if constrained else conjugate
    pyro.clear_param_store()
    guide = getattr(autoguides, autoguide)(model)
    guide(x)  # creates the parameters
    with torch.no_grad():
        if autoguide == "AutoNormal":
            name = "s" if constrained else "z"
            getattr(guide.locs, name).copy_(loc)
            setattr(guide.scales, name, sd.expand(4, 2).clone())
        else:
            guide.loc.copy_(loc.reshape(-1))
            guide.scale = sd.expand(8).clone()
            guide.scale_tril = torch.eye(8)
    weights, _ = draw_log_weights(model, guide, (x,), {}, num_particles=16)
    truth = conjugate.log_marginal(x).detach().sum()
    lw = weights.log_weight.reshape(16, -1).sum(-1)  # per point (AutoNormal) or global
    torch.testing.assert_close(lw, truth.expand(16), rtol=0, atol=1e-3)
    bound = RenyiBound(0.5, 16)(model, guide)(x).detach()
    assert float(bound) == pytest.approx(-float(truth), abs=1e-3)


@pytest.mark.parametrize("keep", [True, False])
def test_a_python_bool_mask_keeps_or_drops_a_site(keep: bool) -> None:
    """poutine.mask(mask=True / False) as Pyro accepts it: the observed site's term is kept
    or dropped, so the weights are those of the model with or without its likelihood."""
    model = ConjugateGaussian(dim=2, prior_loc=0.3)
    guide = AmortizedGaussianGuide(dim=2).set_to(0.6, 0.1, 0.7)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(6))

    def masked(v: torch.Tensor) -> None:
        with pyro.plate("data", v.shape[0]):
            z = pyro.sample("z", dist.Normal(model.prior_loc, 1.0).to_event(1))
            with pyro.poutine.mask(mask=keep):
                pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=v)

    pyro.set_rng_seed(0)
    weights, _ = draw_log_weights(masked, guide, (x,), {}, num_particles=3)
    pyro.set_rng_seed(0)
    full, _ = draw_log_weights(model, guide, (x,), {}, num_particles=3)
    z = weights.guide_traces[0].nodes["z"]["value"]
    likelihood = dist.Normal(z, 0.5).to_event(1).log_prob(x)
    expected = full.log_weight if keep else full.log_weight - likelihood
    torch.testing.assert_close(weights.log_weight, expected.detach())


def test_pyros_own_model_guide_checks_run() -> None:
    """What pyro.util.check_model_guide_match refuses or warns about, pyrogen does too (with
    Pyro's validation on, the default)."""
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(7))
    model = ConjugateGaussian(dim=2)

    def wrong_shape(v: torch.Tensor) -> None:
        with pyro.plate("data", v.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    with pytest.raises(ValueError, match="Model and guide shapes disagree at site 'z'"):
        draw_log_weights(model, wrong_shape, (x,), {}, num_particles=3)

    def factor_guide(v: torch.Tensor) -> None:
        AmortizedGaussianGuide(dim=2)(v)
        pyro.factor("extra", torch.tensor(0.5))

    with pytest.raises(ValueError, match="missing specification of has_rsample"):
        draw_log_weights(model, factor_guide, (x,), {}, num_particles=3)

    def extra_plate(v: torch.Tensor) -> None:
        with pyro.plate("unused", 4):
            pass
        AmortizedGaussianGuide(dim=2)(v)

    with pytest.warns(UserWarning, match="plate statements in guide but not model"):
        draw_log_weights(model, extra_plate, (x,), {}, num_particles=3)


@pytest.mark.parametrize("num_particles", [1, 3])
def test_an_empty_model_and_guide_weigh_zero(num_particles: int) -> None:
    """No sample sites at all: p(x) = 1 and the loss is 0, as Pyro's ELBOs return."""

    def empty() -> None:
        pass

    weights, _ = draw_log_weights(empty, empty, (), {}, num_particles=num_particles)
    assert torch.equal(weights.log_weight, torch.zeros(num_particles))
    assert RenyiBound(0.5, num_particles).loss(empty, empty) == 0.0
    svi = pyro.infer.SVI(empty, empty, pyro.optim.Adam({"lr": 0.1}), RenyiBound(1.0, 1))
    assert svi.step() == 0.0


def test_batch_dimensions_outside_every_plate_are_summed_one_particle_at_a_time() -> None:
    """Sites with a batch dimension of size one that no plate declares, which Pyro's
    Trace_ELBO accepts: one particle at a time pyrogen sums it, and the loss is
    Trace_ELBO's draw by draw."""
    data = torch.tensor([2.0])

    def model() -> None:
        rate = pyro.sample("rate", dist.Gamma(torch.tensor([1.1]), torch.tensor([1.3])))
        pyro.sample("obs", dist.Poisson(rate), obs=data)

    def guide() -> None:
        shape = pyro.param("shape", torch.tensor([1.2]), constraint=constraints.positive)
        pyro.sample("rate", dist.Gamma(shape, torch.tensor([1.4])))

    for seed in range(3):
        pyro.set_rng_seed(seed)
        ours = RenyiBound(1.0, 1).loss(model, guide)
        pyro.set_rng_seed(seed)
        assert ours == pytest.approx(pyro.infer.Trace_ELBO().loss(model, guide), rel=1e-6)
        assert math.isfinite(RenyiBound(0.5, 2, vectorize_particles=False).loss(model, guide))


def test_point_mass_guides_give_the_map_objective_under_the_elbo() -> None:
    """AutoDelta (a Delta at every latent) under RenyiBound(alpha = 1) is Trace_ELBO's MAP
    objective; importance-weighted estimates still refuse a point mass."""
    from pyro.infer.autoguide import AutoDelta

    model = ConjugateGaussian(dim=2)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(8))
    pyro.clear_param_store()
    guide = AutoDelta(model)
    ours = RenyiBound(1.0, 1).loss(model, guide, x)
    assert ours == pytest.approx(pyro.infer.Trace_ELBO().loss(model, guide, x), rel=1e-6)
    with pytest.raises(ValueError, match="implicit"):
        IWAE(3).loss(model, guide, x)


def test_a_model_without_sites_and_a_guide_factor_as_trace_elbo() -> None:
    def model() -> None:
        pass

    def guide() -> None:
        pyro.factor("f", torch.tensor(0.7), has_rsample=True)

    assert RenyiBound(1.0, 1).loss(model, guide) == pytest.approx(
        pyro.infer.Trace_ELBO().loss(model, guide)
    )


def test_pyros_own_runtime_errors_and_shape_mismatches() -> None:
    def duplicate() -> None:
        pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("z", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    def guide() -> None:
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(RuntimeError, match="Multiple sample sites named 'z'"):
        RenyiBound(1.0, 1).loss(duplicate, guide)

    def mismatched() -> None:
        with pyro.plate("a", 5, dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=torch.zeros(6))

    def plate_guide() -> None:
        with pyro.plate("a", 5, dim=-1):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="shape mismatch|not broadcastable"):
        RenyiBound(1.0, 1).loss(mismatched, plate_guide)
