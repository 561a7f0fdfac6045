import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrogen.inference.mcmc import ModelPotential

COUNTS = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0])


def gamma_poisson(counts):
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", len(counts)):
        pyro.sample("counts", dist.Poisson(rate), obs=counts)
    return loc


def test_potential_is_minus_log_joint_minus_log_jacobian():
    potential = ModelPotential(gamma_poisson, (COUNTS,))
    assert potential.names == ["rate", "loc"] and potential.dim == 3
    flat = torch.tensor([[0.3, -1.0, 0.5], [-0.2, 0.0, 2.0]])
    rate = flat[:, 0].exp()
    expected = -(
        dist.Gamma(2.0, 1.0).log_prob(rate)
        + dist.Poisson(rate[:, None]).log_prob(COUNTS).sum(1)
        + dist.Normal(0.0, 1.0).log_prob(flat[:, 1:]).sum(1)
        + flat[:, 0]  # log |d exp(u) / du|
    )
    assert torch.allclose(potential(flat), expected)
    # one chain runs without the chain plate, as Pyro's HMC does: same number
    assert torch.allclose(potential(flat[:1]), expected[:1])


def test_constrain_and_unconstrain_are_inverse():
    potential = ModelPotential(gamma_poisson, (COUNTS,))
    flat = torch.randn(4, 3)
    values = potential.constrain(flat)
    assert values["rate"].shape == (4,) and (values["rate"] > 0).all()
    assert values["loc"].shape == (4, 2)
    assert torch.allclose(potential.unconstrain(values), flat, atol=1e-6)
    with pytest.raises(ValueError, match="no value for latent sites"):
        potential.unconstrain({"rate": values["rate"]})
    with pytest.raises(ValueError, match=r"expected \(num_chains, 3\)"):
        potential(torch.zeros(4, 2))


def test_local_latents_inside_a_plate_are_batched():
    def model(y):
        with pyro.plate("data", len(y)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(z, 1.0), obs=y)

    y = torch.tensor([0.5, -1.0, 2.0])
    potential = ModelPotential(model, (y,))
    flat = torch.randn(7, 3)
    expected = -(
        dist.Normal(0.0, 1.0).log_prob(flat).sum(1) + dist.Normal(flat, 1.0).log_prob(y).sum(1)
    )
    assert torch.allclose(potential(flat), expected)


def test_discrete_and_non_broadcasting_models_get_clear_errors():
    def discrete(y):
        k = pyro.sample("k", dist.Bernoulli(0.5))
        pyro.sample("y", dist.Normal(k, 1.0), obs=y)

    with pytest.raises(ValueError, match="'k' is discrete"):
        ModelPotential(discrete, (torch.tensor(0.0),))

    x = torch.randn(10, 3)

    def misaligned(y):  # right for one chain, but the chain dim lands left of the plate's
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        logits = (x * beta.unsqueeze(-2)).sum(-1)
        with pyro.plate("data", 10):
            pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)

    # Asked for the plate, the error names the site; by default the model runs under vmap
    # (tests/test_nonbroadcasting.py).
    potential = ModelPotential(misaligned, (torch.ones(10),), batching="plate")
    with pytest.raises(ValueError, match="'y'.*must broadcast over a leading chain dimension"):
        potential(torch.zeros(4, 3))
    assert ModelPotential(misaligned, (torch.ones(10),)).batching == "vmap"

    with pytest.raises(ValueError, match="no latent sample site"):
        ModelPotential(lambda: pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0)))
