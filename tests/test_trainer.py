"""The several-player trainer: roles and their optimisers, exact resume from checkpoints,
Ctrl-C stops after a whole iteration, errors for bad input."""

import math
import os
import signal

import pyro
import pytest
import torch

from pyrogen.checkpoint import CheckpointError
from pyrogen.inference import (
    GAN,
    IWAE,
    WGAN,
    ContrastiveDivergence,
    SelfContrastive,
    Trainer,
)
from pyrogen.models import (
    AmortizedGaussianGuide,
    BernoulliRBM,
    ConjugateGaussian,
    Generator,
    build_vae,
    mlp,
)
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
    with (
        pytest.raises(KeyboardInterrupt),  # a script must not go on with a half-trained model
        pytest.warns(PyrogenWarning, match="interrupted after iteration 3"),
    ):
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
    with pytest.raises(FloatingPointError, match="the 'critic' loss is nan at iteration 0"):
        Trainer(GAN(c), g, progress=False).fit(x, 5, 200)


# Exact resume for every family: a run stopped at a checkpoint and resumed (with players
# built afresh from another seed, so the checkpoint must restore everything) equals an
# uninterrupted one bit for bit, objective state included.
def _resumes_exactly(tmp_path, build, first, then) -> None:  # type: ignore[no-untyped-def]
    """``build(seed) -> (objective, model, guide, data, modules)``; ``first`` and ``then``
    are ``fit`` keyword budgets: the stopped run's and the whole run's."""
    objective, model, guide, data, modules = build(0)
    straight = Trainer(objective, model, guide, progress=False).fit(data, **then)
    expected = _flat(*modules)
    expected_state = objective.state_dict()
    path = str(tmp_path / "run.pt")
    objective, model, guide, data, modules = build(0)
    Trainer(objective, model, guide, checkpoint=path, progress=False).fit(data, **first)
    torch.manual_seed(123)  # a resumed run must not depend on the global state before it
    objective, model, guide, data, modules = build(7)
    trainer = Trainer(objective, model, guide, checkpoint=path, progress=False)
    resumed = trainer.fit(data, **then)
    assert torch.equal(_flat(*modules), expected)
    assert resumed == straight
    for key, value in expected_state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(objective.state_dict()[key], value), key


def _renyi(seed: int):  # type: ignore[no-untyped-def]
    pyro.clear_param_store()
    torch.manual_seed(seed)
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(60, 2, generator=torch.Generator().manual_seed(1)) + 1
    return IWAE(4, max_plate_nesting=1), model, guide, x, (model, guide)


def _pcd(seed: int):  # type: ignore[no-untyped-def]
    pyro.clear_param_store()
    torch.manual_seed(seed)
    rbm = BernoulliRBM(6, 4)
    cd = ContrastiveDivergence(rbm, k=2, persistent=True, num_chains=20)
    data = torch.bernoulli(torch.full((80, 6), 0.3), generator=torch.Generator().manual_seed(2))
    return cd, rbm.model, None, data, (rbm,)


def _self_contrastive(seed: int):  # type: ignore[no-untyped-def]
    pyro.clear_param_store()
    torch.manual_seed(seed)
    vae = build_vae("pyro", data_shape=(12,), z_dim=2)
    sc = SelfContrastive(nu=1, refresh_every=1, num_particles=2, max_plate_nesting=1)
    data = torch.bernoulli(torch.full((40, 12), 0.4), generator=torch.Generator().manual_seed(4))
    return sc, vae.model, vae.guide, data, (vae,)


@pytest.mark.parametrize(
    "build", [_renyi, _pcd, _self_contrastive], ids=["renyi", "pcd", "self-contrastive"]
)
def test_every_family_resumes_exactly(tmp_path, build) -> None:  # type: ignore[no-untyped-def]
    # 4 iterations a pass: stopped in the middle of the second pass, resumed to the fourth
    first = {"num_iterations": 6, "batch_size": 10 if build is not _renyi else 15}
    then = {"num_epochs": 4, "batch_size": first["batch_size"]}
    _resumes_exactly(tmp_path, build, first, then)


def test_pcd_chains_and_the_copy_are_in_the_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without them a resumed run would restart the chains or take a new first copy."""
    cd, model, _, data, _ = _pcd(0)
    Trainer(cd, model, progress=False, checkpoint=str(tmp_path / "a.pt")).fit(data, 3, 10)
    chains = cd.chains
    assert chains is not None
    fresh, model, _, data, _ = _pcd(1)
    Trainer(fresh, model, progress=False, checkpoint=str(tmp_path / "a.pt")).fit(data, 3, 10)
    assert fresh.chains is not None and torch.equal(fresh.chains, chains)
    sc, model, guide, data, _ = _self_contrastive(0)
    Trainer(sc, model, guide, progress=False, checkpoint=str(tmp_path / "b.pt")).fit(
        data, num_epochs=2, batch_size=10
    )
    assert sc.num_refreshes == 3  # the first call's copy, then one after each epoch
    copy = [p.detach().clone() for p in sc.noise_model.__self__.parameters()]  # type: ignore[union-attr]
    other, model, guide, data, _ = _self_contrastive(5)
    Trainer(other, model, guide, progress=False, checkpoint=str(tmp_path / "b.pt")).fit(
        data, num_epochs=2, batch_size=10
    )
    assert other.num_refreshes == 3
    restored = list(other.noise_model.__self__.parameters())  # type: ignore[union-attr]
    assert all(torch.equal(a, b) for a, b in zip(copy, restored, strict=True))
    assert not any(p.requires_grad for p in restored)


def test_epoch_budget_hooks_and_last_batch() -> None:
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(25, 2)
    seen: list[tuple[int, int]] = []
    trainer = Trainer(
        IWAE(2, max_plate_nesting=1),
        model,
        guide,
        progress=False,
        epoch_callback=lambda t: seen.append((t.epoch, t.iteration)),
    )
    trainer.fit(x, num_epochs=3, batch_size=10)  # drop_last: 2 batches a pass
    assert seen == [(1, 2), (2, 4), (3, 6)]
    sizes: list[int] = []
    trainer = Trainer(IWAE(2, max_plate_nesting=1), model, guide, progress=False)
    trainer.fit(
        x,
        num_epochs=2,
        batch_size=10,
        drop_last=False,
        transform=lambda b, g: sizes.append(b[0].shape[0]) or b,  # type: ignore[func-returns-value]
    )
    assert sizes == [10, 10, 5, 10, 10, 5] and trainer.epoch == 2
    with pytest.raises(ValueError, match="one budget"):
        trainer.fit(x, 3, 10, num_epochs=2)


def test_sigterm_saves_and_stops_like_ctrl_c(tmp_path) -> None:  # type: ignore[no-untyped-def]
    straight, _ = _run(None, 5)
    path = str(tmp_path / "run.pt")
    g, c = _players()

    def terminate(trainer: Trainer) -> None:
        if trainer.iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = Trainer(GAN(c), g, checkpoint=path, callback=terminate, progress=False)
    with (
        pytest.raises(KeyboardInterrupt),
        pytest.warns(PyrogenWarning, match=f"by SIGTERM; call fit again with checkpoint='{path}'"),
    ):
        trainer.fit(_data(), 5, 32, seed=5)
    assert trainer.iteration == 2
    resumed, _ = _run(path, 5)
    assert torch.equal(straight, resumed)


def _flaky_trainer(path, bad_iterations, **kwargs):  # type: ignore[no-untyped-def]
    """An IWAE fit whose loss is NaN at the given iterations."""
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    objective = IWAE(4, max_plate_nesting=1)
    trainer = Trainer(
        objective, model, guide, checkpoint=path, checkpoint_every=1, progress=False, **kwargs
    )
    clean = objective.role_loss

    def flaky(role, *args, **kw):  # type: ignore[no-untyped-def]
        out = clean(role, *args, **kw)
        return out * float("nan") if trainer.iteration in bad_iterations else out

    objective.role_loss = flaky  # type: ignore[method-assign]
    return trainer


def test_a_nonfinite_loss_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "run.pt"
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    trainer = _flaky_trainer(path, {3})
    with pytest.raises(FloatingPointError) as info:
        trainer.fit(x, 10, 20)
    message = str(info.value)
    for part in ("IWAE", "'model' loss is nan", "iteration 3", f"{path}", "holds iteration 3"):
        assert part in message, (part, message)
    saved = torch.load(path, weights_only=True)
    assert saved["iteration"] == 3  # the checkpoint of the last good iteration, untouched


def test_nonfinite_steps_can_be_skipped_and_are_counted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    trainer = _flaky_trainer(tmp_path / "run.pt", {2, 5}, skip_nonfinite=2)
    history = trainer.fit(x, 8, 20)
    assert trainer.nonfinite_steps == 2 and trainer.iteration == 8
    assert math.isnan(history["model"][2]) and math.isnan(history["model"][5])
    assert all(math.isfinite(v) for i, v in enumerate(history["model"]) if i not in (2, 5))
    assert torch.load(tmp_path / "run.pt", weights_only=True)["nonfinite_steps"] == 2
    with pytest.raises(FloatingPointError, match="2 non-finite steps skipped before"):
        _flaky_trainer(tmp_path / "other.pt", {1, 2, 3}, skip_nonfinite=2).fit(x, 8, 20)


def _ema_run(
    iterations: int | list[int], ema: float | None, path: str | None = None, record=None
) -> tuple[Trainer, Generator, torch.nn.Module]:
    g, c = _players()
    trainer = Trainer(GAN(c), g, ema=ema, checkpoint=path, callback=record, progress=False)
    for total in iterations if isinstance(iterations, list) else [iterations]:
        trainer.fit(_data(), total, 32, seed=5)
    return trainer, g, c


def test_ema_is_the_stated_average_of_the_training_weights() -> None:
    """The average follows avg <- d avg + (1 - d) w after each generator step, with
    d = min(ema, (1 + u) / (10 + u)), from the training weights of a run without it (the
    average does not change the training); after fit the generator holds the average, the
    callback sees it, and the critic is left alone."""

    def generator_weights(t: Trainer) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in t.params["generator"].values()])

    weights: list[torch.Tensor] = []
    _, g, _ = _ema_run(12, None, record=lambda t: weights.append(generator_weights(t)))
    raw_final = _flat(g)
    seen: list[torch.Tensor] = []
    trainer, g2, _ = _ema_run(12, 0.8, record=lambda t: seen.append(generator_weights(t)))
    average = weights[0].clone()
    expected = [average.clone()]
    for u, w in enumerate(weights[1:], start=1):
        d = min(0.8, (1 + u) / (10 + u))
        average = d * average + (1 - d) * w
        expected.append(average.clone())
    assert torch.allclose(generator_weights(trainer), expected[-1], atol=1e-6)
    assert all(torch.allclose(s, e, atol=1e-6) for s, e in zip(seen, expected, strict=True))
    assert (expected[-1] - raw_final).abs().max() > 1e-4  # the test can tell them apart
    with trainer.averaged():  # already in: nothing changes, and it stays in
        assert torch.allclose(generator_weights(trainer), expected[-1], atol=1e-6)
    assert torch.allclose(generator_weights(trainer), expected[-1], atol=1e-6)
    assert torch.equal(_flat(g2), generator_weights(trainer))  # the module holds them


def test_ema_fit_again_and_resume_continue_the_training_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """fit(5) then fit(12) equals fit(12): the second call trains on from the training
    weights, not the average; a checkpoint keeps both, so a resumed run equals it too."""
    _, g, c = _ema_run(12, 0.9)
    straight = _flat(g, c)
    _, g, c = _ema_run([5, 12], 0.9)
    assert torch.equal(_flat(g, c), straight)
    path = str(tmp_path / "ema.pt")
    _ema_run(5, 0.9, path)
    _, g, c = _ema_run(12, 0.9, path)
    assert torch.equal(_flat(g, c), straight)


def test_ema_bad_input() -> None:
    g, c = _players()
    for bad in (0.0, 1.0, 1.5, True, "0.9"):
        with pytest.raises(ValueError, match="ema must be a decay strictly between 0 and 1"):
            Trainer(GAN(c), g, ema=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ema_role 'model' is not a role"):
        Trainer(GAN(c), g, ema=0.99, ema_role="model")


def test_decay_learning_rates_is_linear_to_zero() -> None:
    g, c = _players()
    trainer = Trainer(
        GAN(c), g, callback=lambda t: t.decay_learning_rates(t.iteration, 4), progress=False
    )
    trainer.fit(_data(), 2, 50)
    for opt in trainer.optimizers.values():
        group = opt.param_groups[0]
        assert group["lr"] == group["initial_lr"] * (1 - 2 / 4)  # after iteration 2 of 4
    trainer.decay_learning_rates(6, 4)  # past the end: 0, never negative
    assert all(o.param_groups[0]["lr"] == 0.0 for o in trainer.optimizers.values())
