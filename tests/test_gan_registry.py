"""The registry of adversarial objectives by name (pyrogen.inference.gan.ADVERSARIAL): each
name builds the objective its papers describe, trains through the Trainer, and an unknown
name is refused with the choices."""

import math

import pytest
import torch

from pyrogen.inference import GAN, WGAN, WGANGP, HingeGAN, Trainer
from pyrogen.inference.gan import (
    ADVERSARIAL,
    RECOMMENDED,
    Adversarial,
    make_adversarial,
    parse_adversarial,
)
from pyrogen.models import Generator, mlp

EXPECTED = {
    "gan": (GAN, {"generator_loss_kind": "nonsaturating", "pack": 1, "critic_steps": 1}),
    "gan-minimax": (GAN, {"generator_loss_kind": "minimax", "pack": 1}),
    "hinge": (HingeGAN, {"pack": 1, "critic_steps": 1}),
    "wgan": (WGAN, {"clip": 0.01, "critic_steps": 5}),
    "wgan-gp": (WGANGP, {"penalty": 10.0, "critic_steps": 5}),
    "pacgan2": (GAN, {"generator_loss_kind": "nonsaturating", "pack": 2}),
}


def critic_for(name: str) -> torch.nn.Module:
    pack = ADVERSARIAL[name][1].get("pack", 1)
    return mlp([2 * pack, 8, 1])


def test_the_registry_names_the_six_objectives() -> None:
    assert list(ADVERSARIAL) == list(EXPECTED)
    for name, (cls, _) in ADVERSARIAL.items():
        assert issubclass(cls, Adversarial), name


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_name_builds_its_objective(name: str) -> None:
    critic = critic_for(name)
    obj = make_adversarial(name, critic)
    cls, attrs = EXPECTED[name]
    assert type(obj) is cls
    assert obj.critic is critic
    for attr, value in attrs.items():
        assert getattr(obj, attr) == value, (name, attr)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_name_trains_through_the_trainer(name: str) -> None:
    torch.manual_seed(0)
    generator = Generator(mlp([2, 8, 2]), latent_dim=2, event_shape=(2,))
    obj = make_adversarial(name, critic_for(name))
    before = [p.detach().clone() for p in generator.parameters()]
    trainer = Trainer(obj, generator, progress=False)
    history = trainer.fit(torch.randn(64, 2), num_iterations=2, batch_size=16, seed=0)
    assert len(history["critic"]) == len(history["generator"]) == 2
    assert all(math.isfinite(v) for v in history["critic"] + history["generator"])
    assert any(not torch.equal(a, p) for a, p in zip(before, generator.parameters(), strict=True))


def test_options_add_to_and_override_the_registered_ones() -> None:
    obj = make_adversarial("pacgan2", mlp([8, 4, 1]), pack=4, critic_steps=3)
    assert isinstance(obj, GAN) and obj.pack == 4 and obj.critic_steps == 3
    wgan = make_adversarial("wgan", mlp([2, 4, 1]), clip=0.05)
    assert isinstance(wgan, WGAN) and wgan.clip == 0.05
    assert ADVERSARIAL["pacgan2"][1] == {"pack": 2}  # the registry itself is not changed


def test_an_unknown_name_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown adversarial objective 'wgan-lp'.*'hinge'"):
        make_adversarial("wgan-lp", mlp([2, 4, 1]))
    with pytest.raises(TypeError):  # a bad option reaches the class and is refused there
        make_adversarial("gan", mlp([2, 4, 1]), clip=0.1)


def test_parse_adversarial_reads_penalties_and_the_moving_average() -> None:
    assert parse_adversarial(RECOMMENDED) == ("gan", {"r1": 1.0}, 0.999)
    assert parse_adversarial("pacgan2+r2=0.5") == ("pacgan2", {"r2": 0.5}, None)
    assert parse_adversarial("wgan-gp") == ("wgan-gp", {}, None)
    name, options, _ = parse_adversarial("wgan-gp+gp=0.1")  # Gulrajani et al.'s toy penalty
    assert (name, options) == ("wgan-gp", {"penalty": 0.1})
    assert make_adversarial(name, mlp([2, 4, 1]), **options).penalty == 0.1
    for bad, match in (
        ("gan+gp=0.1", "has none"),
        ("gun", "unknown adversarial objective 'gun'"),
        ("gan+r3=1", "options are"),
        ("gan+r1", "options are"),
        ("gan+ema=fast", "ema must be a number"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_adversarial(bad)
