"""The base of every objective: players (registration, module form, roles, state), derived
once for every family."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrogen.inference import GAN, NCE, ContrastiveDivergence, empty_guide
from pyrogen.models import BernoulliRBM, Generator, mlp


def _generator() -> Generator:
    return Generator(mlp([2, 8, 2]), 2, (2,))


def test_a_second_gan_in_the_same_process_trains_its_own_critic() -> None:
    """The notebook case: a GAN built after another with a critic of the same name. Plain
    pyro.module would hand SVI the first critic's tensors, left in the param store."""
    x = torch.randn(64, 2)
    first = mlp([2, 8, 1])
    svi = pyro.infer.SVI(_generator(), empty_guide, pyro.optim.Adam({"lr": 0.1}), GAN(first))
    svi.step(x)
    first_after = [p.detach().clone() for p in first.parameters()]
    second, generator = mlp([2, 8, 1]), _generator()
    second_before = [p.detach().clone() for p in second.parameters()]
    svi = pyro.infer.SVI(generator, empty_guide, pyro.optim.Adam({"lr": 0.1}), GAN(second))
    svi.step(x)
    assert all(torch.equal(a, p) for a, p in zip(first_after, first.parameters(), strict=True))
    assert all(
        not torch.equal(b, p) for b, p in zip(second_before, second.parameters(), strict=True)
    )
    store = pyro.get_param_store()
    for name, p in second.named_parameters():
        assert store[f"critic$$${name}"] is p


def test_players_give_module_form_roles_and_state() -> None:
    critic = mlp([2, 8, 1])
    gan = GAN(critic)
    generator = _generator()
    assert set(gan.players) == {"critic"}
    module = gan(generator, empty_guide)
    assert module.critic is critic
    ids = {id(p) for p in module.parameters()}
    assert {id(p) for p in critic.parameters()} <= ids
    assert {id(p) for p in generator.parameters()} <= ids
    x = torch.randn(8, 2)
    critic_params = gan.role_parameters("critic", generator, empty_guide, x)
    generator_params = gan.role_parameters("generator", generator, empty_guide, x)
    assert {id(p) for p in critic_params.values()} == {id(p) for p in critic.parameters()}
    assert {id(p) for p in generator_params.values()} == {id(p) for p in generator.parameters()}
    assert all(k.startswith("critic$$$") for k in critic_params)
    # state round trip into another objective of the same shapes
    other = GAN(mlp([2, 8, 1]))
    other.load_state_dict(gan.state_dict())
    for a, b in zip(critic.parameters(), other.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="players"):
        NCE(dist.Normal(0.0, 1.0)).load_state_dict(gan.state_dict())


def test_every_family_declares_its_networks_as_players() -> None:
    rbm = BernoulliRBM(4, 3)
    nce = NCE(dist.Normal(0.0, 1.0), learn_log_normalizer=True)
    cd = ContrastiveDivergence(rbm)
    assert cd.players["energy"].module is rbm and cd.players["energy"].role == "model"
    assert nce.players["normalizer"].name == "nce"
    assert set(nce.player_parameters()) == {"nce$$$log_Z"}
    assert set(NCE(dist.Normal(0.0, 1.0)).players) == set()


def test_a_player_must_be_a_module_in_a_known_role() -> None:
    gan = GAN(mlp([2, 4, 1]))
    with pytest.raises(TypeError, match="nn.Module"):
        gan.add_player("energy", lambda x: x, role="critic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown role"):
        gan.add_player("energy", nn.Linear(2, 1), role="model")
    with pytest.raises(TypeError, match="critic must be"):
        GAN(lambda x: x)  # type: ignore[arg-type]
