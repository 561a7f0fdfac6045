r"""Beyond one machine: ``torch.distributed`` helpers for the trainer, batched MCMC and
held-out estimates.

The :class:`~pyrogen.inference.Trainer` runs data-parallel by itself whenever
``torch.distributed`` is initialised (``torchrun`` sets the environment;
:func:`init_from_env` opens the process group from it). This module holds what the
trainer and the estimators share:

* :func:`rank_seed`: each rank's seed for its own random stream (model noise, chains),
  derived from one user seed and the rank, so that ranks never draw the same numbers;
* :func:`shard`: the contiguous block of ``n`` items a rank owns (sizes differ by at most
  one, as :func:`torch.tensor_split` cuts);
* :func:`all_gather_rows`: the rows of every rank, concatenated in rank order (blocks of
  different lengths allowed);
* :func:`sample_distributed`: many MCMC chains split among ranks, draws gathered;
* :func:`log_likelihood_distributed` and :func:`ais_log_partition_distributed`: test points
  (or AIS runs) split among ranks, results gathered.

**What equals what.** A rank's chains (or test points) are drawn with the rank's own
generator, seeded by ``rank_seed(seed, rank)``, and (for MCMC) adapted on that rank's
chains alone: the gathered result is, item for item, the concatenation of single-process
runs on each block with that block's generator (:func:`sample_blocks`,
:func:`log_likelihood_blocks` compute exactly that in one process; the tests check the
equality). It does not equal one run of all chains with one generator: ``sample`` draws
every chain's noise from one generator in one tensor, and its warm-up pools step size,
mass matrix and ChEES over all chains, so no split could reproduce that run. Each block
is an independent sampler, as separate jobs would be; split chains in blocks of at least
two (ChEES needs two).

Without an initialised process group every function here runs as one rank of one.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_gather_rows",
    "ais_log_partition_distributed",
    "init_from_env",
    "is_distributed",
    "log_likelihood_blocks",
    "log_likelihood_distributed",
    "rank_and_world",
    "rank_seed",
    "sample_blocks",
    "sample_distributed",
    "shard",
]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def init_from_env(device: str | torch.device = "cpu", timeout_s: float = 1800.0) -> bool:
    """Open the default process group from ``torchrun``'s environment (``WORLD_SIZE``,
    ``RANK``, ``MASTER_ADDR``...): NCCL for a CUDA ``device`` (each process on
    ``cuda:LOCAL_RANK``), gloo otherwise. Returns whether a group is open (``False`` when
    the environment names one process or none, so a plain run stays a plain run)."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return True


def rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed for ``rank``'s own stream, from the run's ``seed`` (a hash of both, so
    that neighbouring seeds and ranks give unrelated streams)."""
    digest = hashlib.blake2b(f"pyrogen:{int(seed)}:{int(rank)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def shard(n: int, rank: int, world_size: int) -> slice:
    """The contiguous block of ``range(n)`` that ``rank`` owns: the first ``n % world_size``
    ranks get one item more (:func:`torch.tensor_split`'s cut)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def all_gather_rows(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along dimension 0, in rank order; the ranks'
    first dimensions may differ (each is padded to the longest for the collective). Without
    a process group, ``tensor`` itself."""
    if not is_distributed():
        return tensor
    world = dist.get_world_size()
    length = torch.tensor([tensor.shape[0]], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    dist.all_gather(lengths, length)
    sizes = [int(s) for s in lengths]
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


def _gather_float(value: float) -> list[float]:
    if not is_distributed():
        return [value]
    return [float(v) for v in _gather_objects(value)]


# MCMC: chains split among ranks.
def _sample_block(
    block: slice,
    rank: int,
    seed: int,
    potential_fn: Any,
    initial_position: Tensor | None,
    num_chains: int | None,
    kwargs: dict[str, Any],
) -> Any:
    from pyrogen.inference.mcmc.sample import sample

    device = initial_position.device if initial_position is not None else torch.device("cpu")
    generator = torch.Generator(device).manual_seed(rank_seed(seed, rank))
    start = initial_position[block] if initial_position is not None else None
    chains = None if initial_position is not None else block.stop - block.start
    if start is None and num_chains is None:
        raise ValueError("give initial_position, or num_chains to sample a model")
    return sample(
        potential_fn,
        start,
        num_chains=chains,
        generator=generator,
        **kwargs,
    )


def _per_chain(value: Tensor | float, chains: int, shared: bool) -> Tensor:
    """A block's adapted setting as one row per chain: ``shared`` ones (the inverse mass,
    event-shaped) and scalar step sizes are repeated; per-chain step sizes are kept."""
    value = torch.as_tensor(value)
    if shared or value.dim() == 0:
        value = value.expand(chains, *value.shape)
    return value


def _merge(results: list[Any], chains: list[int], gather: Callable[[Tensor], Tensor]) -> Any:
    """One MCMCResult of every block's chains. ``results`` holds this process's blocks;
    ``gather`` concatenates rows over the ranks (the identity in one process)."""
    from pyrogen.inference.mcmc.result import MCMCResult

    def cat(parts: list[Tensor]) -> Tensor:
        return gather(torch.cat(parts))

    def per_chain(name: str, shared: bool) -> Tensor | None:
        if getattr(results[0], name) is None:
            return None
        return cat([_per_chain(getattr(r, name), r.num_chains, shared) for r in results])

    first = results[0]
    fields = type(first.final_state)._fields
    local = [(r.trajectory_length, r.wall_time) for r in results]
    every = [v for part in _gather_objects(local) for v in part] if gather is not _same else local
    lengths = [length for length, _ in every]
    known = [v for v in lengths if v is not None]
    return MCMCResult(
        samples={k: cat([r.samples[k] for r in results]) for k in first.samples},
        stats={k: cat([r.stats[k] for r in results]) for k in first.stats},
        step_size=per_chain("step_size", False),
        inverse_mass=per_chain("inverse_mass", True),
        trajectory_length=sum(known) / len(known) if known else None,
        final_state=type(first.final_state)(
            *(cat([getattr(r.final_state, f) for r in results]) for f in fields)
        ),
        warmup_divergences=cat([r.warmup_divergences for r in results]),
        wall_time=max(wall for _, wall in every),
        extra={"chains_per_block": chains, "trajectory_length_per_block": lengths},
    )


def _same(tensor: Tensor) -> Tensor:
    return tensor


def _gather_objects(value: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _check_chains(initial_position: Tensor | None, num_chains: int | None) -> int:
    if initial_position is not None:
        if num_chains is not None and num_chains != initial_position.shape[0]:
            raise ValueError(
                f"num_chains={num_chains} but initial_position has {initial_position.shape[0]} rows"
            )
        return int(initial_position.shape[0])
    if num_chains is None:
        raise ValueError("give initial_position, or num_chains to sample a model")
    return int(num_chains)


def sample_distributed(
    potential_fn: Any = None,
    initial_position: Tensor | None = None,
    *,
    num_chains: int | None = None,
    seed: int = 0,
    progress: bool = True,
    **kwargs: Any,
) -> Any:
    r""":func:`~pyrogen.inference.mcmc.sample` with the chains split among the ranks, the
    draws gathered on every rank.

    Rank ``r`` runs the block ``shard(num_chains, r, world_size)`` of the chains (rows of
    ``initial_position``, or chains of a ``model=`` started by its own generator) with its
    own ``torch.Generator`` seeded ``rank_seed(seed, r)`` and its own warm-up; the draws,
    statistics, final states and warm-up divergences are gathered (``all_gather``) in chain
    order, the adapted step size and inverse mass as one row per chain, the trajectory
    length as the mean of the blocks' (each in ``extra``), the wall time as the slowest
    rank's. The result equals :func:`sample_blocks` with ``blocks=world_size`` in one
    process, chain for chain. Without a process group it is that with one block.

    Args:
        potential_fn, initial_position: as for ``sample`` (all chains, on every rank).
        num_chains: all chains, with ``model=``.
        seed: the seed of every block's generator (through :func:`rank_seed`).
        progress: a bar on rank 0 only.
        kwargs: the rest of ``sample``'s arguments (``model=``, ``num_warmup=``, ...), not
            ``generator``.

    Example:
        >>> import torch
        >>> potential = lambda z: 0.5 * (z**2).sum(-1)
        >>> result = sample_distributed(potential, torch.zeros(4, 2), num_warmup=50,
        ...                             num_samples=20, progress=False)
        >>> result.samples["z"].shape
        torch.Size([4, 20, 2])
    """
    if "generator" in kwargs:
        raise TypeError("sample_distributed draws with each block's own generator: give seed")
    total = _check_chains(initial_position, num_chains)
    rank, world = rank_and_world()
    if total < world:
        raise ValueError(f"{total} chains cannot be split among {world} ranks")
    block = shard(total, rank, world)
    kwargs["progress"] = progress and rank == 0
    result = _sample_block(block, rank, seed, potential_fn, initial_position, total, kwargs)
    chains = [shard(total, r, world).stop - shard(total, r, world).start for r in range(world)]
    return _merge([result], chains, all_gather_rows if is_distributed() else _same)


def sample_blocks(
    potential_fn: Any = None,
    initial_position: Tensor | None = None,
    *,
    blocks: int,
    num_chains: int | None = None,
    seed: int = 0,
    progress: bool = False,
    **kwargs: Any,
) -> Any:
    """What :func:`sample_distributed` returns on ``blocks`` ranks, computed in one process
    (one block after another): the reference the distributed run equals, and the way to
    reproduce it on one machine."""
    if "generator" in kwargs:
        raise TypeError("sample_blocks draws with each block's own generator: give seed")
    total = _check_chains(initial_position, num_chains)
    if total < blocks:
        raise ValueError(f"{total} chains cannot be split in {blocks} blocks")
    kwargs["progress"] = progress
    results, chains = [], []
    for r in range(blocks):
        block = shard(total, r, blocks)
        chains.append(block.stop - block.start)
        results.append(_sample_block(block, r, seed, potential_fn, initial_position, total, kwargs))
    return _merge(results, chains, _same)


# Held-out estimates: test points (or AIS runs) split among ranks.
def _log_likelihood_block(
    model: Any, guide: Any, rows: Tensor, rank: int, seed: int, kwargs: dict[str, Any]
) -> Any:
    from pyrogen.metrics.likelihood import log_likelihood

    devices = [rows.device] if rows.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(rank_seed(seed, rank))
        return log_likelihood(model, guide, rows, **kwargs)


def _combine_log_likelihood(per_point: Tensor, mc_parts: list[tuple[float, int]], k: int) -> Any:
    """One LogLikelihood from per-point values and each block's (mc_stderr, rows)."""
    from pyrogen.metrics.likelihood import LogLikelihood

    n = per_point.numel()
    stderr = float(per_point.std() / math.sqrt(n)) if n > 1 else math.nan
    # each block's mc_stderr is sqrt(S_b / K) / n_b, with S_b its sum of Var(w)/w^2
    mc = math.nan
    if k > 1:
        mc = math.sqrt(sum((m * rows) ** 2 for m, rows in mc_parts if rows)) / n
    return LogLikelihood(per_point, float(per_point.mean()), stderr, mc, k)


def log_likelihood_distributed(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: Tensor,
    seed: int = 0,
    **kwargs: Any,
) -> Any:
    r""":func:`~pyrogen.metrics.log_likelihood` with the rows of ``data`` split among the
    ranks and the per-point estimates gathered on every rank.

    Rank ``r`` scores the rows ``shard(N, r, world_size)`` with torch's global generator
    seeded ``rank_seed(seed, r)`` inside :func:`torch.random.fork_rng` (the caller's state
    is left as it was); the mean, its standard error and the Monte Carlo standard error are
    those of all rows. Equals :func:`log_likelihood_blocks` with ``blocks=world_size``.
    ``progress`` shows on rank 0 only. A rank with no rows (fewer rows than ranks) is an
    error.
    """
    rank, world = rank_and_world()
    n = data.shape[0]
    if n < world:
        raise ValueError(f"{n} rows cannot be split among {world} ranks")
    kwargs["progress"] = kwargs.get("progress", False) and rank == 0
    part = _log_likelihood_block(model, guide, data[shard(n, rank, world)], rank, seed, kwargs)
    per_point = all_gather_rows(part.per_point)
    rows = [shard(n, r, world).stop - shard(n, r, world).start for r in range(world)]
    mc = _gather_float(part.mc_stderr)
    return _combine_log_likelihood(per_point, list(zip(mc, rows, strict=True)), part.num_samples)


def log_likelihood_blocks(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: Tensor,
    blocks: int,
    seed: int = 0,
    **kwargs: Any,
) -> Any:
    """What :func:`log_likelihood_distributed` returns on ``blocks`` ranks, in one
    process."""
    n = data.shape[0]
    if n < blocks:
        raise ValueError(f"{n} rows cannot be split in {blocks} blocks")
    parts = [
        _log_likelihood_block(model, guide, data[shard(n, r, blocks)], r, seed, dict(kwargs))
        for r in range(blocks)
    ]
    per_point = torch.cat([p.per_point for p in parts])
    mc = [(p.mc_stderr, p.per_point.numel()) for p in parts]
    return _combine_log_likelihood(per_point, mc, parts[0].num_samples)


def ais_log_partition_distributed(
    rbm: Any, num_runs: int = 100, seed: int = 0, num_sd: float = 3.0, **kwargs: Any
) -> Any:
    r""":func:`~pyrogen.metrics.ais.ais_log_partition` with the ``num_runs`` AIS runs split
    among the ranks (each with its own generator, seeded ``rank_seed(seed, r)``, on the
    RBM's device) and the log-weights gathered: every rank returns the estimate of all runs
    (log Z, its spread and the log-weights in rank order). The annealing is the whole cost
    and the runs are independent, so it divides among ranks; the per-point free energies of
    :func:`~pyrogen.metrics.ais.rbm_log_likelihood` are cheap and need no split."""
    from pyrogen.metrics.ais import AISResult, _spread, ais_log_partition

    rank, world = rank_and_world()
    if isinstance(num_runs, bool) or not isinstance(num_runs, int) or num_runs < world:
        raise ValueError(f"num_runs must be an integer >= {world} (one run per rank at least)")
    block = shard(num_runs, rank, world)
    generator = torch.Generator(rbm.weight.device).manual_seed(rank_seed(seed, rank))
    kwargs["progress"] = kwargs.get("progress", False) and rank == 0
    part = ais_log_partition(
        rbm, num_runs=block.stop - block.start, num_sd=num_sd, generator=generator, **kwargs
    )
    log_w = all_gather_rows(part.log_weights)
    log_z, low, high = _spread(log_w, num_sd, False, part.log_z_base)
    return AISResult(log_z, low, high, log_w, part.log_z_base, "forward")
