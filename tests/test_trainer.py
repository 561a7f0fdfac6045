"""The several-player trainer: roles and their optimisers, exact resume from checkpoints,
Ctrl-C stops after a whole iteration, errors for bad input."""

import os
import signal

import pyro
import pytest
import torch

from pyrogen.checkpoint import CheckpointError
from pyrogen.inference import GAN, IWAE, WGAN, Trainer
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian, Generator, mlp
from pyrogen.warnings import PyrogenWarning


def _players(seed: int = 0) -> tuple[Generator, torch.nn.Module]:
    """Fresh players, as in a new process: Pyro's param store would otherwise hand a new
    module the values its name last had (pyro.module's rule)."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    return Generator(mlp([2, 8, 2]), 2, (2,)), mlp([2, 8, 1])


def _data() -> torch.Tensor:
    return torch.randn(200, 2, generator=torch.Generator().manual_seed(3)) + 2


def _flat(*modules: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


def test_roles_steps_and_default_optimisers() -> None:
    g, c = _players()
    trainer = Trainer(WGAN(c), g, progress=False)
    calls: list[str] = []
    orig = trainer.objective.role_loss

    def spy(role, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(role)
        return orig(role, *args, **kwargs)

    trainer.objective.role_loss = spy  # type: ignore[method-assign]
    history = trainer.fit(_data(), 3, 50)
    assert calls == (["critic"] * 5 + ["generator"]) * 3  # the paper's 5 critic steps
    assert isinstance(trainer.optimizers["critic"], torch.optim.RMSprop)
    assert trainer.optimizers["critic"].defaults["lr"] == 5e-5
    assert set(history) >= {"critic", "generator", "wasserstein"}
    assert all(len(v) == 3 for v in history.values())
    # each optimiser holds its own player only
    critic_ids = {id(p) for p in c.parameters()}
    gen_ids = {id(p) for p in g.parameters()}
    assert {id(p) for p in trainer.optimizers["critic"].param_groups[0]["params"]} == critic_ids
    assert {id(p) for p in trainer.optimizers["generator"].param_groups[0]["params"]} == gen_ids


def _run(path: str | None, iterations: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
    g, c = _players(seed)
    trainer = Trainer(GAN(c), g, checkpoint=path, checkpoint_every=2, progress=False)
    history = trainer.fit(_data(), iterations, 32, seed=5)
    return _flat(g, c), history


def test_resume_is_exact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    straight, history = _run(None, 9)
    path = str(tmp_path / "run.pt")
    _run(path, 4)
    torch.manual_seed(123)  # a resumed run must not depend on the global state before it
    resumed, resumed_history = _run(path, 9, seed=7)  # other init: the checkpoint wins
    assert torch.equal(straight, resumed)
    assert resumed_history == history


def test_ctrl_c_stops_after_the_iteration_and_resumes_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    straight, _ = _run(None, 6)
    path = str(tmp_path / "run.pt")
    g, c = _players()

    def interrupt(trainer: Trainer) -> None:
        if trainer.iteration == 3:
            os.kill(os.getpid(), signal.SIGINT)

    trainer = Trainer(GAN(c), g, checkpoint=path, callback=interrupt, progress=False)
    with pytest.warns(PyrogenWarning, match="interrupted after iteration 3"):
        trainer.fit(_data(), 6, 32, seed=5)
    assert trainer.iteration == 3
    resumed, _ = _run(path, 6)
    assert torch.equal(straight, resumed)


def test_single_role_objective_trains_pyro_parameters() -> None:
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(100, 2) + 1
    trainer = Trainer(IWAE(4, max_plate_nesting=1), model, guide, progress=False)
    before = _flat(model, guide)
    history = trainer.fit(x, 30, 20)
    assert not torch.equal(before, _flat(model, guide))
    assert len(history["model"]) == 30


def test_bad_input(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g, c = _players()
    with pytest.raises(TypeError, match="Objective"):
        Trainer(object(), g)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown roles"):
        Trainer(GAN(c), g, steps={"energy": 2})
    with pytest.raises(ValueError, match="at least 1"):
        Trainer(GAN(c), g, steps={"critic": 0})
    trainer = Trainer(GAN(c), g, progress=False)
    with pytest.raises(ValueError, match="exceeds"):
        trainer.fit(_data(), 1, 1000)
    with pytest.raises(ValueError, match="differ in length"):
        trainer.fit((_data(), torch.zeros(3)), 1, 10)
    path = tmp_path / "other.pt"
    Trainer(GAN(c), g, checkpoint=path, progress=False).fit(_data(), 1, 10)
    pyro.clear_param_store()
    g2 = Generator(mlp([2, 16, 2]), 2, (2,))  # other shapes: the checkpoint is refused
    with pytest.raises(CheckpointError):
        Trainer(GAN(mlp([2, 8, 1])), g2, checkpoint=path, progress=False).fit(_data(), 2, 10)


def test_non_finite_loss_stops_with_a_clear_error() -> None:
    g, c = _players()
    x = _data()
    x[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="critic loss"):
        Trainer(GAN(c), g, progress=False).fit(x, 5, 200)
