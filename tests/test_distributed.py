"""Data-parallel training and split sampling over 2 gloo processes on the CPU.

The claims: 2 ranks x batch B step exactly as 1 process with batch 2B (given the same random
numbers: the tests pass each row's noise in the data, so that both runs draw the same);
MCMC chains, test points and AIS runs split among ranks gather to the single-process run of
the same blocks; a rank killed mid-run leaves a checkpoint from which the job resumes to the
numbers of an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import Tensor, nn

from pyrogen import distributed as ddp
from pyrogen.inference import GAN, IWAE, Trainer
from pyrogen.inference.mcmc import sample
from pyrogen.metrics import log_likelihood
from pyrogen.metrics.ais import ais_log_partition
from pyrogen.models import AmortizedGaussianGuide, BernoulliRBM, ConjugateGaussian, mlp

WORLD = 2
pytestmark = pytest.mark.skipif(not tdist.is_available(), reason="torch.distributed missing")


# Running a function on 2 ranks (forked: torch is imported once).
def _entry(rank: int, world: int, store: str, out: str, fn: Callable[..., Any], args: Any) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        result = fn(*args)
        torch.save(result, Path(out) / f"{rank}.pt")
    finally:
        tdist.destroy_process_group()


def _on_ranks(fn: Callable[..., Any], *args: Any) -> list[Any]:
    """``fn(*args)`` on each of 2 ranks; their results in rank order."""
    with tempfile.TemporaryDirectory() as out:
        store = str(Path(out) / f"store-{uuid.uuid4().hex}")
        mp.start_processes(_entry, (WORLD, store, out, fn, args), nprocs=WORLD, start_method="fork")
        return [torch.load(Path(out) / f"{r}.pt", weights_only=False) for r in range(WORLD)]


# A Rényi-family fit whose noise is part of the data.
class NoiseNormal(dist.Normal):
    """``Normal(loc, scale)`` whose reparameterized draw is ``loc + scale * noise`` with
    the given standard ``noise`` (common random numbers), shaped like its batch."""

    def __init__(self, loc: Tensor, scale: Tensor, noise: Tensor) -> None:
        loc, scale, noise = torch.broadcast_tensors(loc, scale, noise)
        super().__init__(loc, scale)
        self.noise = noise

    def expand(self, batch_shape: Any, _instance: Any = None) -> NoiseNormal:
        shape = torch.Size(batch_shape)
        return NoiseNormal(
            self.loc.expand(shape), self.scale.expand(shape), self.noise.expand(shape)
        )

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        assert not sample_shape
        return self.loc + self.scale * self.noise


class NoiseVAE(nn.Module):
    """x ~ N(z, 1), z ~ N(0, I); q(z | x) = N(A x + b, diag(exp s)) drawn with data noise."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 2).double()
        self.log_scale = nn.Parameter(torch.zeros(2, dtype=torch.float64))
        self.decoder = nn.Linear(2, 2).double()

    def model(self, x: Tensor, noise: Tensor) -> None:
        pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 1.0).to_event(1), obs=x)

    def guide(self, x: Tensor, noise: Tensor) -> None:
        pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            # noise: (rows, K, 2) -> (K, rows, 2), the particle plate's layout
            q = NoiseNormal(self.encoder(x), self.log_scale.exp(), noise.transpose(0, 1))
            pyro.sample("z", q.to_event(1))


K = 3


def _renyi_data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(57, 2, generator=g, dtype=torch.float64) + 1
    return x, torch.randn(57, K, 2, generator=g, dtype=torch.float64)


def _fit_renyi(batch_size: int) -> dict[str, Any]:
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = NoiseVAE()
    trainer = Trainer(
        IWAE(num_particles=K, max_plate_nesting=1),
        vae.model,
        vae.guide,
        optimizers={"model": (torch.optim.Adam, {"lr": 0.05})},
        progress=False,
    )
    # 57 rows, global batch 16, drop_last=False: the last batch of 9 rows splits 5 / 4
    history = trainer.fit(_renyi_data(), batch_size=batch_size, num_epochs=3, drop_last=False)
    return {
        "params": {k: v.detach().clone() for k, v in vae.state_dict().items()},
        "history": history,
        "iteration": trainer.iteration,
        "noise": torch.rand(3),
    }  # the rank's own stream after training


def test_renyi_two_ranks_equal_one_process_with_twice_the_batch() -> None:
    ranks = _on_ranks(_fit_renyi, 8)
    single = _fit_renyi(16)
    assert ranks[0]["iteration"] == single["iteration"] == 12  # 4 batches x 3 epochs
    for r in ranks:
        for name, value in single["params"].items():
            torch.testing.assert_close(r["params"][name], value, rtol=1e-12, atol=1e-12)
        assert r["history"]["model"] == pytest.approx(single["history"]["model"], rel=1e-12)
    # each rank draws its own model randomness
    assert not torch.equal(ranks[0]["noise"], ranks[1]["noise"])


# A two-role objective: a GAN whose generator reads its noise from the data.
class NoiseGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = mlp([2, 8, 2]).double()

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        pyro.module("generator", self)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("x", dist.Delta(self.net(noise), event_dim=1), obs=x)


def _jitter(batch: tuple[Tensor, ...], generator: torch.Generator) -> tuple[Tensor, ...]:
    """A batch transform drawing from the trainer's data generator."""
    x, noise = batch
    return x + 0.01 * torch.randn(x.shape, generator=generator, dtype=x.dtype), noise


def _fit_gan(batch_size: int) -> dict[str, Any]:
    pyro.clear_param_store()
    torch.manual_seed(0)
    generator, critic = NoiseGenerator(), mlp([2, 8, 1]).double()
    g = torch.Generator().manual_seed(2)
    data = (
        torch.randn(64, 2, generator=g, dtype=torch.float64) + 2,
        torch.randn(64, 2, generator=g, dtype=torch.float64),
    )
    trainer = Trainer(GAN(critic, critic_steps=2), generator, progress=False)
    history = trainer.fit(data, 6, batch_size, seed=4, transform=_jitter)
    return {"generator": generator.state_dict(), "critic": critic.state_dict(), "history": history}


def test_gan_two_ranks_equal_one_process_with_twice_the_batch() -> None:
    ranks = _on_ranks(_fit_gan, 8)
    single = _fit_gan(16)
    for r in ranks:
        for player in ("generator", "critic"):
            for name, value in single[player].items():
                torch.testing.assert_close(r[player][name], value, rtol=1e-10, atol=1e-12)
        for role in ("critic", "generator"):
            assert r["history"][role] == pytest.approx(single["history"][role], rel=1e-10)


# Split sampling and held-out estimates.
def _potential(z: Tensor) -> Tensor:
    return 0.5 * (z**2 * torch.tensor([1.0, 4.0, 0.25])).sum(-1)


MCMC = {"num_warmup": 60, "num_samples": 15, "num_steps": 4}


def _split_estimates() -> dict[str, Any]:
    start = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    result = ddp.sample_distributed(_potential, start, seed=7, progress=False, **MCMC)
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(11, 2, generator=torch.Generator().manual_seed(1))
    ll = ddp.log_likelihood_distributed(model, guide, x, seed=3, num_samples=40)
    torch.manual_seed(0)
    rbm = BernoulliRBM(6, 4, init_scale=0.5)
    ais = ddp.ais_log_partition_distributed(rbm, num_runs=9, seed=2, betas=torch.linspace(0, 1, 30))
    return {"mcmc": result, "ll": ll, "ais": ais}


def test_split_sampling_and_estimates_equal_single_process_blocks() -> None:
    ranks = _on_ranks(_split_estimates)
    start = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    reference = ddp.sample_blocks(_potential, start, blocks=WORLD, seed=7, **MCMC)
    # ... which is, block by block, sample() with the block's own generator
    alone = sample(
        _potential,
        start[3:],
        generator=torch.Generator().manual_seed(ddp.rank_seed(7, 1)),
        progress=False,
        **MCMC,
    )
    torch.testing.assert_close(reference.samples["z"][3:], alone.samples["z"], rtol=0, atol=0)
    for r in ranks:
        got = r["mcmc"]
        torch.testing.assert_close(got.samples["z"], reference.samples["z"], rtol=0, atol=0)
        for k, v in reference.stats.items():
            torch.testing.assert_close(got.stats[k], v, rtol=0, atol=0)
        torch.testing.assert_close(got.step_size, reference.step_size, rtol=0, atol=0)
        torch.testing.assert_close(got.inverse_mass, reference.inverse_mass, rtol=0, atol=0)
        torch.testing.assert_close(
            got.final_state.position, reference.final_state.position, rtol=0, atol=0
        )
        assert got.extra["chains_per_block"] == [3, 3]
    # test points split among ranks: the blocks' estimates, gathered
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(11, 2, generator=torch.Generator().manual_seed(1))
    blocks = ddp.log_likelihood_blocks(model, guide, x, WORLD, seed=3, num_samples=40)
    with torch.random.fork_rng():
        torch.manual_seed(ddp.rank_seed(3, 0))
        first = log_likelihood(model, guide, x[:6], num_samples=40)
    torch.testing.assert_close(blocks.per_point[:6], first.per_point, rtol=0, atol=0)
    for r in ranks:
        torch.testing.assert_close(r["ll"].per_point, blocks.per_point, rtol=0, atol=0)
        assert r["ll"].mean == pytest.approx(blocks.mean, rel=1e-12)
        assert r["ll"].mc_stderr == pytest.approx(blocks.mc_stderr, rel=1e-12)
    # AIS runs split among ranks: the log-weights of each rank's own generator
    torch.manual_seed(0)
    rbm = BernoulliRBM(6, 4, init_scale=0.5)
    parts = [
        ais_log_partition(
            rbm,
            num_runs=n,
            betas=torch.linspace(0, 1, 30),
            generator=torch.Generator().manual_seed(ddp.rank_seed(2, r)),
        )
        for r, n in enumerate((5, 4))
    ]
    log_w = torch.cat([p.log_weights for p in parts])
    for r in ranks:
        torch.testing.assert_close(r["ais"].log_weights, log_w, rtol=0, atol=0)
        assert r["ais"].log_weights.shape == (9,)


# A rank killed mid-run, then the job resumed.
def _fit_checkpointed(path: str, kill_at: int | None) -> dict[str, Any]:
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(96, 2, generator=torch.Generator().manual_seed(5)) + 1

    def callback(trainer: Trainer) -> None:
        if trainer.rank == 1 and trainer.iteration == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer = Trainer(
        IWAE(num_particles=4, max_plate_nesting=1),
        model,
        guide,
        checkpoint=path,
        checkpoint_every=4,
        callback=callback,
        progress=False,
    )
    trainer.fit(x, 12, 8, seed=1)
    return {
        "params": {k: v.detach().clone() for k, v in trainer.params["model"].items()},
        "history": trainer.history["model"],
    }


def test_killed_rank_resumes_to_the_uninterrupted_run(tmp_path: Path) -> None:
    straight = _on_ranks(_fit_checkpointed, str(tmp_path / "straight.pt"), None)
    path = str(tmp_path / "killed.pt")
    with pytest.raises(mp.ProcessExitedException):  # rank 1 is killed at iteration 6
        _on_ranks(_fit_checkpointed, path, 6)
    saved = torch.load(path, weights_only=False)
    assert saved["iteration"] == 4  # the last checkpoint before the kill
    assert saved["distributed"]["world_size"] == WORLD
    resumed = _on_ranks(_fit_checkpointed, path, None)
    for a, b in zip(resumed, straight, strict=True):
        for name, value in b["params"].items():
            torch.testing.assert_close(a["params"][name], value, rtol=0, atol=0)
        assert a["history"] == b["history"]
    # the ranks drew different guide noise, so a resume that mixed up their streams
    # would differ; the two ranks' parameters agree
    for name, value in straight[0]["params"].items():
        torch.testing.assert_close(straight[1]["params"][name], value, rtol=0, atol=0)


def test_distributed_true_needs_a_process_group() -> None:
    with pytest.raises(ValueError, match="process group"):
        Trainer(IWAE(), ConjugateGaussian(dim=1), AmortizedGaussianGuide(dim=1), distributed=True)


def test_helpers_without_a_process_group() -> None:
    assert ddp.rank_and_world() == (0, 1)
    assert [ddp.shard(9, r, 2) for r in range(2)] == [slice(0, 5), slice(5, 9)]
    assert ddp.rank_seed(0, 0) != ddp.rank_seed(0, 1) != ddp.rank_seed(1, 0)
    t = torch.arange(3)
    assert ddp.all_gather_rows(t) is t
    # one rank of one: the functions run, and equal their one-block references
    start = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    alone = ddp.sample_distributed(_potential, start, seed=1, progress=False, **MCMC)
    blocks = ddp.sample_blocks(_potential, start, blocks=1, seed=1, **MCMC)
    torch.testing.assert_close(alone.samples["z"], blocks.samples["z"], rtol=0, atol=0)
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(5, 2)
    ll = ddp.log_likelihood_distributed(model, guide, x, seed=3, num_samples=10)
    ref = ddp.log_likelihood_blocks(model, guide, x, 1, seed=3, num_samples=10)
    torch.testing.assert_close(ll.per_point, ref.per_point, rtol=0, atol=0)
    rbm = BernoulliRBM(4, 3)
    ais = ddp.ais_log_partition_distributed(rbm, num_runs=3, betas=torch.linspace(0, 1, 5))
    assert ais.log_weights.shape == (3,)


def _nonfinite_on_rank_one() -> dict[str, Any]:
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    trainer = Trainer(IWAE(max_plate_nesting=1), model, guide, progress=False, skip_nonfinite=1)
    loss = trainer.objective.role_loss

    def broken(*args: Any, **kwargs: Any) -> Tensor:
        value = loss(*args, **kwargs)
        return value * math.nan if trainer.rank == 1 and trainer.iteration >= 2 else value

    trainer.objective.role_loss = broken  # type: ignore[method-assign]
    try:
        trainer.fit(torch.randn(40, 2), 6, 4)
    except FloatingPointError as exc:
        return {
            "error": str(exc),
            "iteration": trainer.iteration,
            "skipped": trainer.nonfinite_steps,
        }
    return {"error": None}


def test_a_nonfinite_loss_on_one_rank_stops_every_rank_alike() -> None:
    for r in _on_ranks(_nonfinite_on_rank_one):
        # iteration 2 skipped (skip_nonfinite=1) on both ranks, iteration 3 stops both
        assert r["iteration"] == 3 and r["skipped"] == 1
        assert "summed over the ranks is nan" in r["error"]
