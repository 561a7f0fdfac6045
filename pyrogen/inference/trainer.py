"""The loop for objectives with several players (critic, generator, energy, model).

An objective names its ``roles``; for each it gives the loss (``role_loss``), the
parameters (``role_parameters``), the updates per iteration (``steps_per_iteration``), the
paper's optimiser (``default_optimizers``) and a hook after each step (``after_step``, where
WGAN clips). One iteration steps every role in order, each update on a fresh minibatch::

    for role in objective.roles:
        for _ in range(steps[role]):
            optimizer[role].zero_grad(); objective.role_loss(role, model, guide, batch).backward()
            optimizer[role].step(); objective.after_step(role)

Budgets are iterations or epochs (passes over the data, each in a fresh order; an
objective's :meth:`~pyrogen.inference.objective.Objective.end_of_epoch` runs after each).
The trainer keeps a history of each role's loss and of the objective's ``stats`` (e.g. the
WGAN critic's estimate of the Wasserstein distance), shows a progress bar, and writes an
atomic checkpoint (parameters, the objective's state: players, persistent chains, noise
snapshots; module buffers, optimisers, RNG states, data order, history) every
``checkpoint_every`` iterations, at the end and on Ctrl-C or SIGTERM; ``fit`` with the same
checkpoint path resumes where it stopped, drawing the same numbers as an uninterrupted run.
An interruption finishes the iteration, saves, says how to resume and re-raises
:class:`KeyboardInterrupt`, so a script never goes on with a half-trained model.
Nothing here depends on the device: the data and parameters decide it.

**Data-parallel** (``torch.distributed``, launched by ``torchrun``): when a process group is
initialised (``distributed=None``, the default, follows it; ``True`` requires one, ``False``
ignores it), each of the ``W`` ranks steps on ``batch_size`` rows: the slice of a global
batch of ``W * batch_size`` rows cut from the one permutation every rank draws with the same
data generator (a batch ``transform`` runs on the global batch, so it draws what one process
would). Each rank divides its loss by the global batch's rows and the role's gradients are
summed over the ranks (one ``all_reduce`` per update, the loss riding along), so ``W`` ranks
with ``batch_size`` B step exactly as one process with ``W * B`` on the same random numbers
for objectives that are sums over rows (batch-level coupling, such as batch norm or PacGAN
packs, stays within a rank). Model randomness differs per rank: each rank's torch generator
is seeded ``rank_seed(seed, rank)`` (:mod:`pyrogen.distributed`) at the start.
Parameters are broadcast from rank 0 after they are found and again after the first
iteration (parameters an objective initialises from its first batch, as KALE's
log-normaliser, then agree). Rank 0 shows progress and writes checkpoints, holding every
rank's random state, objective state (e.g. persistent chains) and module buffers; the
others wait at a barrier; every rank resumes from the same file (a shared folder across
nodes). A stop (Ctrl-C, SIGTERM) on any rank stops every rank after the same iteration.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyrogen import distributed as ddp
from pyrogen.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyrogen.inference.objective import Objective, check_int, empty_guide
from pyrogen.warnings import PyrogenWarning

__all__ = ["Trainer"]

KIND = "pyrogen.trainer"


class _DeferredInterrupt:
    """Ctrl-C (or SIGTERM) during an iteration stops the loop after that iteration, so the
    checkpoint written then is a state of the uninterrupted run (a second one stops at
    once)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


Transform = Callable[[tuple[Tensor, ...], torch.Generator], tuple[Tensor, ...]]
"""``transform(batch, generator)``: a batch as the model sees it (e.g. dynamic
binarization), drawn with the trainer's data generator so that resume stays exact."""


def _to_cpu(value: Any) -> Any:
    """Tensors in a (nested) state dict moved to the CPU, for the gather to rank 0."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _readable(name: str) -> str:
    """A Pyro parameter name as a user wrote it: ``"vae.encoder$$$net.0.weight"`` (Pyro's
    module separator) -> ``"vae.encoder.net.0.weight"``."""
    return name.replace("$$$", ".")


class Trainer:
    """Fits ``model`` (and ``guide``) under any pyrogen ``objective``.

    Args:
        objective: a :class:`~pyrogen.inference.objective.Objective` (one role, "model",
            unless it names others, as the adversarial ones do).
        model, guide: the Pyro programs, called as ``model(*batch)``; the guide defaults
            to one that does nothing (generators need none).
        optimizers: per role, a ``torch.optim.Optimizer`` class and its keyword arguments,
            or a function ``params -> optimizer``; roles left out get the objective's
            default (the paper's settings).
        steps: per role, updates per iteration (defaults from the objective, which may
            change them from one iteration to the next: ``Objective.steps_at``).
        modules: modules whose buffers (batch-norm statistics...) belong in checkpoints,
            by name (the objective's players are saved with its state). Parameters are
            saved in any case.
        checkpoint: path of the checkpoint file; an existing one is resumed.
        checkpoint_every: iterations between checkpoints (with an epoch budget, also one at
            the end of every epoch).
        callback: called as ``callback(trainer)`` after every iteration (evaluations,
            snapshots), after the epoch hooks when a pass ended in it;
            ``trainer.iteration`` counts finished iterations.
        epoch_callback: called as ``epoch_callback(trainer)`` after every pass over the
            data (and after the objective's ``end_of_epoch``); ``trainer.epoch`` counts
            finished passes. What it adds to ``trainer.history`` is checkpointed.
        progress: show a tqdm bar.
        skip_nonfinite: how many steps with a NaN or infinite loss to skip (no update,
            counted in ``trainer.nonfinite_steps``) before stopping; 0 (the default) stops
            at the first, with a ``FloatingPointError`` naming the objective, the role and
            the iteration, the last checkpoint left as it was.
        ema: decay of an exponential moving average of the ``ema_role`` parameters (e.g.
            0.999; Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN
            Training"), updated after each of that role's steps with the decay
            ``min(ema, (1 + u) / (10 + u))`` at its ``u``-th update, so that the first
            updates do not keep the initial weights. Once it is on, evaluation uses the
            average: ``callback`` and ``epoch_callback`` run with the averaged weights in
            place, and ``fit`` returns with them loaded (the training weights are put back
            when ``fit`` is called again, and checkpoints hold both). :meth:`averaged`
            swaps them in for any other evaluation. ``None`` (the default): no average.
        ema_role: the role averaged; the objective's ``model_role`` by default (the
            generator of the adversarial objectives).
        distributed: data-parallel over the ranks of ``torch.distributed`` (see the module
            docstring): ``None`` (the default) when a process group is initialised,
            ``True`` to require one, ``False`` to train each process on its own.
            ``batch_size`` is then per rank; callbacks run on every rank (``trainer.rank``
            says which; collectives such as
            :func:`~pyrogen.distributed.log_likelihood_distributed` belong there).
    """

    def __init__(
        self,
        objective: Objective,
        model: Callable[..., Any],
        guide: Callable[..., Any] | None = None,
        *,
        optimizers: dict[str, Any] | None = None,
        steps: dict[str, int] | None = None,
        modules: dict[str, nn.Module] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1000,
        callback: Callable[[Trainer], None] | None = None,
        epoch_callback: Callable[[Trainer], None] | None = None,
        progress: bool = True,
        skip_nonfinite: int = 0,
        ema: float | None = None,
        ema_role: str | None = None,
        distributed: bool | None = None,
    ) -> None:
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a pyrogen Objective, got {type(objective)}")
        self.objective = objective
        self.model = model
        self.guide = guide if guide is not None else empty_guide
        self.roles: tuple[str, ...] = tuple(objective.roles)
        unknown = set(optimizers or {}) | set(steps or {})
        if unknown - set(self.roles):
            raise ValueError(
                f"unknown roles {sorted(unknown - set(self.roles))}; "
                f"this objective's roles are {self.roles}"
            )
        self._fixed_steps = dict(steps or {})
        for role, n in self._fixed_steps.items():
            check_int(f"steps[{role!r}]", n, 1)
        self.steps = dict(objective.steps_per_iteration()) | self._fixed_steps
        self._optimizer_specs = dict(optimizers or {})
        self.modules = dict(modules or {})
        self.checkpoint = checkpoint
        self.checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
        self.callback = callback
        self.epoch_callback = epoch_callback
        self.progress = progress
        self.skip_nonfinite = check_int("skip_nonfinite", skip_nonfinite, 0)
        self.nonfinite_steps = 0  # skipped so far (checkpointed)
        if ema is not None and (
            isinstance(ema, bool) or not isinstance(ema, int | float) or not 0 < ema < 1
        ):
            raise ValueError(f"ema must be a decay strictly between 0 and 1, got {ema!r}")
        self.ema = None if ema is None else float(ema)
        averaged = ema_role if ema_role is not None else objective.model_role
        if self.ema is not None and averaged not in self.roles:
            raise ValueError(f"ema_role {averaged!r} is not a role of this objective {self.roles}")
        self.ema_role: str = averaged or ""
        self._average: dict[str, Tensor] = {}  # the moving average, by parameter name
        self._ema_updates = 0
        self._held: dict[str, Tensor] | None = None  # training weights while the average is in
        self._saved_iteration: int | None = None
        self.iteration = 0
        self.epoch = 0
        self.history: dict[str, list[float]] = {}
        self.params: dict[str, dict[str, Tensor]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._generator: torch.Generator | None = None
        self._order: Tensor | None = None
        self._position = 0
        self._passes_done = 0  # passes finished during the current iteration
        if distributed is True and not ddp.is_distributed():
            raise ValueError(
                "distributed=True needs an initialised torch.distributed process group "
                "(launch with torchrun and call pyrogen.distributed.init_from_env())"
            )
        self.distributed = ddp.is_distributed() if distributed is None else bool(distributed)
        self.rank, self.world_size = ddp.rank_and_world() if self.distributed else (0, 1)
        self._seed = 0

    # Set-up.
    def _build(self, batch: Sequence[Tensor]) -> None:
        for role in self.roles:
            params = self.objective.role_parameters(role, self.model, self.guide, *batch)
            if not params:
                raise ValueError(f"role {role!r} has no parameters to train")
            self.params[role] = params
            spec = self._optimizer_specs.get(role, self.objective.default_optimizers.get(role))
            if spec is None:
                spec = (torch.optim.Adam, {"lr": 1e-3})
            if isinstance(spec, tuple):
                cls, kwargs = spec
                self.optimizers[role] = cls(list(params.values()), **kwargs)
            else:
                self.optimizers[role] = spec(list(params.values()))
        self.objective.bind(self.model, self.guide)

    def _next_batch(
        self, data: tuple[Tensor, ...], batch_size: int, drop_last: bool
    ) -> tuple[Tensor, ...]:
        idx = self._next_indices(data[0].shape[0], batch_size, drop_last)
        return tuple(t[idx.to(t.device)] for t in data)

    def _next_indices(self, n: int, batch_size: int, drop_last: bool) -> Tensor:
        assert self._generator is not None
        if self._order is None or self._position >= n:
            self._order = torch.randperm(n, generator=self._generator)
            self._position = 0
        idx = self._order[self._position : self._position + batch_size]
        self._position += batch_size
        if self._position >= n or (drop_last and self._position + batch_size > n):
            self._position = n  # this pass is over; the next batch starts a new order
            self._passes_done += 1
        return idx

    def _next_shard(
        self,
        data: tuple[Tensor, ...],
        batch_size: int,
        drop_last: bool,
        transform: Transform | None,
    ) -> tuple[tuple[Tensor, ...], int]:
        """This rank's rows of the next global batch (``world_size * batch_size`` rows of
        the shared permutation), and the global batch's rows."""
        idx = self._next_indices(data[0].shape[0], self.world_size * batch_size, drop_last)
        rows = idx.shape[0]
        mine = ddp.shard(rows, self.rank, self.world_size)
        if transform is None:
            return tuple(t[idx[mine].to(t.device)] for t in data), rows
        assert self._generator is not None  # drawn for the whole batch, as one process does
        batch = transform(tuple(t[idx.to(t.device)] for t in data), self._generator)
        return tuple(t[mine] for t in batch), rows

    # Checkpoints.
    def state(self) -> dict[str, Any]:
        assert self._generator is not None
        return {
            "iteration": self.iteration,
            "epoch": self.epoch,
            "roles": list(self.roles),
            "params": {
                r: {k: self._training_value(r, k, v).detach().cpu() for k, v in p.items()}
                for r, p in self.params.items()
            },
            "ema": {
                "average": {k: v.cpu() for k, v in self._average.items()},
                "updates": self._ema_updates,
            },
            "objective": self.objective.state_dict(),
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {r: o.state_dict() for r, o in self.optimizers.items()},
            "torch_rng": torch.get_rng_state(),
            # every CUDA device's generator, when CUDA is in use (exact resume on GPU too)
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "data_rng": self._generator.get_state(),
            "order": self._order if self._order is not None else torch.empty(0, dtype=torch.long),
            "position": self._position,
            "nonfinite_steps": self.nonfinite_steps,
            "history": self.history,
        }

    def save(self) -> None:
        if self.checkpoint is None:
            return
        if not self.distributed:
            save_checkpoint(self.checkpoint, KIND, self.state())
            self._saved_iteration = self.iteration
            return
        # every rank's own state travels to rank 0, which writes; the others wait
        ranks: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(ranks, self._rank_state())
        if self.rank == 0:
            state = self.state()
            state["distributed"] = {"world_size": self.world_size, "ranks": ranks}
            save_checkpoint(self.checkpoint, KIND, state)
        torch.distributed.barrier()
        self._saved_iteration = self.iteration

    def _rank_state(self) -> dict[str, Any]:
        """What differs between ranks: random streams, the objective's state (persistent
        chains...), module buffers (batch-norm statistics)."""
        return {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "objective": _to_cpu(self.objective.state_dict()),
            "modules": {k: _to_cpu(m.state_dict()) for k, m in self.modules.items()},
        }

    def _load_process_state(self, state: dict[str, Any]) -> None:
        """One process's part of a checkpoint: the objective's state, the modules' buffers
        and the random streams (the whole checkpoint in one process, a rank's entry under
        DDP)."""
        try:
            self.objective.load_state_dict(state["objective"])
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{self.checkpoint}: the objective's state: {exc}") from exc
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def _resume_rank(self, state: dict[str, Any]) -> None:
        """Under DDP, this rank's own part of a checkpoint (its random stream, objective
        state and buffers); a checkpoint without one (written by one process, or by fewer
        ranks) leaves rank 0's and seeds a fresh stream, with a warning."""
        saved = state.get("distributed", {}).get("ranks", [])
        if self.rank < len(saved):
            self._load_process_state(saved[self.rank])
            return
        torch.manual_seed(ddp.rank_seed(self._seed + 7919 * self.iteration, self.rank))
        warnings.warn(
            f"{self.checkpoint} holds no random state for rank {self.rank} (written by "
            f"{len(saved) or 'one'} process(es)): this rank starts a fresh stream, so the run "
            "does not repeat an uninterrupted one",
            PyrogenWarning,
            stacklevel=4,
        )

    def _resume(self) -> bool:
        if self.checkpoint is None or not os.path.exists(self.checkpoint):
            return False
        state = load_checkpoint(self.checkpoint, KIND)
        if tuple(state["roles"]) != self.roles:
            raise CheckpointError(
                f"{self.checkpoint} holds roles {state['roles']}, this objective has {self.roles}"
            )
        with torch.no_grad():
            for role, params in self.params.items():
                saved = state["params"][role]
                if set(saved) != set(params):
                    differ = ", ".join(_readable(n) for n in sorted(set(saved) ^ set(params))[:5])
                    raise CheckpointError(
                        f"{self.checkpoint} was saved from another model: its parameters of "
                        f"role {role!r} differ from this one's ({differ})"
                    )
                for name, p in params.items():
                    if saved[name].shape != p.shape:
                        raise CheckpointError(
                            f"{self.checkpoint} was saved from another model: parameter "
                            f"{_readable(name)} has shape {tuple(saved[name].shape)} there and "
                            f"{tuple(p.shape)} here (another architecture or latent size?)"
                        )
                    p.copy_(saved[name])
        self._load_process_state(state)
        for role, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][role])
        assert self._generator is not None
        self._generator.set_state(state["data_rng"])
        self._order = state["order"] if state["order"].numel() else None
        self._position = int(state["position"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        ema = state.get("ema", {"average": {}, "updates": 0})
        if self.ema is not None and ema["average"]:
            params = self.params[self.ema_role]
            if set(ema["average"]) != set(params):
                raise CheckpointError(
                    f"{self.checkpoint}: its moving average covers other parameters than "
                    f"role {self.ema_role!r} has"
                )
            self._average = {k: v.to(params[k]) for k, v in ema["average"].items()}
            self._ema_updates = int(ema["updates"])
        self.iteration = int(state["iteration"])
        self._saved_iteration = self.iteration
        self.epoch = int(state["epoch"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        if self.distributed:
            self._resume_rank(state)
        return True

    def decay_learning_rates(self, done: float, total: float) -> None:
        """Every optimiser's learning rates set to their first value times
        ``max(0, 1 - done / total)``: a linear decay to 0 over ``total`` iterations (the
        first value is kept in each parameter group as ``initial_lr``)."""
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * max(0.0, 1 - done / total)

    # The loop.
    def steps_at(self, iteration: int) -> dict[str, int]:
        """Updates of each role at ``iteration`` (from 0): the objective's schedule, with the
        ``steps=`` given to the trainer in its place; what a budget in gradient
        evaluations counts."""
        return dict(self.objective.steps_at(iteration)) | self._fixed_steps

    def log(self, key: str, value: float) -> None:
        """Append ``value`` to ``history[key]`` (checkpointed with the rest)."""
        self.history.setdefault(key, []).append(value)

    def fit(
        self,
        data: Tensor | Iterable[Tensor],
        num_iterations: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        *,
        num_epochs: int | None = None,
        drop_last: bool = True,
        transform: Transform | None = None,
    ) -> dict[str, list[float]]:
        """Runs until ``num_iterations`` iterations, or ``num_epochs`` passes over the data,
        are done in all (resuming counts those in the checkpoint) and returns the history:
        per iteration, each role's loss per data point (the objective's sum over the batch
        divided by its rows, which is also what the optimisers step on), averaged over the
        role's updates, and each of the objective's ``stats``.

        Args:
            data: a tensor of rows, or a tuple of tensors with the same first dimension
                (passed to the model as positional arguments).
            num_iterations: total iterations (one iteration steps every role); or
            num_epochs: total passes over the data (give one budget, not both).
            batch_size: rows per update; the rows are reshuffled every pass (``seed``).
            drop_last: a pass ends when fewer than ``batch_size`` rows are left (the
                default); ``False`` steps on that last, smaller batch too.
            transform: ``transform(batch, generator)`` applied to each batch as it is
                drawn (e.g. dynamic binarization), with the trainer's data generator.

        Raises:
            KeyboardInterrupt: after Ctrl-C or SIGTERM, once the iteration has finished and
                the checkpoint is written.
        """
        data_t = (data,) if isinstance(data, Tensor) else tuple(data)
        if not data_t or not all(isinstance(t, Tensor) for t in data_t):
            raise TypeError("data must be a tensor or a tuple of tensors")
        n = data_t[0].shape[0]
        if any(t.shape[0] != n for t in data_t):
            raise ValueError(f"data tensors differ in length: {[t.shape[0] for t in data_t]}")
        if (num_iterations is None) == (num_epochs is None):
            raise ValueError("give one budget: num_iterations or num_epochs")
        total = check_int(
            "num_iterations" if num_epochs is None else "num_epochs",
            num_iterations if num_epochs is None else num_epochs,
            0,
        )
        if batch_size is None:
            raise TypeError("fit needs batch_size")
        check_int("batch_size", batch_size, 1)
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} rows of data")
        if self.distributed and self.world_size * batch_size > n:
            raise ValueError(
                f"{self.world_size} ranks x batch_size {batch_size} exceed the {n} rows of data"
            )
        resumed = False
        self._restore_training_weights()
        if not self.optimizers:
            self._generator = torch.Generator().manual_seed(seed)
            self._seed = seed
            self._build(tuple(t[:batch_size] for t in data_t))
            if self.distributed:
                self._broadcast_parameters()
                torch.manual_seed(ddp.rank_seed(seed, self.rank))
            resumed = self._resume()
        by_epoch = num_epochs is not None
        bar = tqdm(
            total=total,
            initial=min(self.epoch if by_epoch else self.iteration, total),
            disable=not self.progress or self.rank != 0,
            desc="resumed" if resumed else "training",
            unit="epoch" if by_epoch else "it",
        )
        interrupted = _DeferredInterrupt()
        try:
            with interrupted:
                while (self.epoch if by_epoch else self.iteration) < total:
                    if self._stop(interrupted.requested):
                        interrupted.requested = interrupted.requested or "another rank"
                        break
                    self._iterate(data_t, batch_size, drop_last, transform, bar, by_epoch)
        finally:
            bar.close()
        self.save()
        if self.ema is not None and not interrupted.requested:
            self._load_average()
        if interrupted.requested:
            where = f"iteration {self.iteration} (epoch {self.epoch})"
            how = (
                f"call fit again with checkpoint={str(self.checkpoint)!r} to resume"
                if self.checkpoint
                else "pass checkpoint= to be able to resume"
            )
            warnings.warn(
                f"interrupted after {where} by {interrupted.requested}; {how}",
                PyrogenWarning,
                stacklevel=2,
            )
            raise KeyboardInterrupt(f"training interrupted after {where}")
        return self.history

    def _step(self, role: str, batch: tuple[Tensor, ...]) -> float | None:
        """One update of ``role``; None when a non-finite loss was skipped."""
        opt = self.optimizers[role]
        opt.zero_grad(set_to_none=True)
        # Objectives sum over data points (Pyro's convention); the trainer steps on the mean
        # per data point, so that learning rates do not depend on the batch size.
        loss = self.objective.role_loss(role, self.model, self.guide, *batch) / batch[0].shape[0]
        if not torch.isfinite(loss):
            self._skip_or_stop(role, f"the {role!r} loss is {float(loss.detach())}")
            return None
        loss.backward()
        opt.step()
        self.objective.after_step(role)
        if self.ema is not None and role == self.ema_role:
            self._update_average()
        return float(loss.detach())

    def _skip_or_stop(self, role: str, what: str) -> None:
        """A non-finite loss: counted and skipped while ``skip_nonfinite`` allows, else a
        ``FloatingPointError`` naming the objective, ``what``, the iteration and the
        checkpoint kept."""
        if self.nonfinite_steps < self.skip_nonfinite:
            self.nonfinite_steps += 1
            return
        kept = (
            "no checkpoint was asked for"
            if self.checkpoint is None
            else f"the last checkpoint, {self.checkpoint}, "
            + (
                f"holds iteration {self._saved_iteration} and is kept as it was"
                if self._saved_iteration is not None
                else "was not written yet"
            )
        )
        raise FloatingPointError(
            f"{type(self.objective).__name__}: {what} at iteration {self.iteration} "
            f"({self.nonfinite_steps} non-finite steps skipped before); {kept}. Lower the "
            "learning rate, check the data, or let the trainer skip such steps "
            "(skip_nonfinite=N)"
        )

    def _step_distributed(self, role: str, batch: tuple[Tensor, ...], rows: int) -> float | None:
        """One update of ``role`` on this rank's share of a global batch of ``rows`` rows:
        the loss divided by ``rows`` (not the rank's own), the gradients summed over ranks,
        so the update is the one of the whole batch; every rank skips or stops alike."""
        opt = self.optimizers[role]
        opt.zero_grad(set_to_none=True)
        value = torch.zeros(())
        if batch[0].shape[0]:  # a short last batch may leave a rank without rows
            loss = self.objective.role_loss(role, self.model, self.guide, *batch) / rows
            loss.backward()  # a non-finite loss is judged after the sum over ranks
            value = loss.detach()
        total = self._all_reduce_grads(role, value)
        if not math.isfinite(total):
            opt.zero_grad(set_to_none=True)
            self._skip_or_stop(role, f"the {role!r} loss summed over the ranks is {total}")
            return None
        opt.step()
        self.objective.after_step(role)
        if self.ema is not None and role == self.ema_role:
            self._update_average()
        return total

    def _all_reduce_grads(self, role: str, value: Tensor) -> float:
        """Sums ``role``'s gradients and ``value`` over the ranks in one ``all_reduce``; a
        parameter without a gradient on every rank keeps none (as in one process)."""
        params = list(self.params[role].values())
        dtype = params[0].dtype
        for p in params[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        device = params[0].device
        parts = [
            p.grad.reshape(-1).to(dtype)
            if p.grad is not None
            else p.new_zeros(p.numel(), dtype=dtype)
            for p in params
        ]
        has = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=device)
        flat = torch.cat([*parts, has, value.to(dtype=dtype, device=device).reshape(1)])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype).clone()
            offset += p.numel()
        for p, present in zip(params, flat[offset : offset + len(params)].tolist(), strict=True):
            if not present:
                p.grad = None
        return float(flat[-1])

    @torch.no_grad()
    def _broadcast_parameters(self) -> None:
        """Every rank takes rank 0's parameters and module buffers."""
        for params in self.params.values():
            for p in params.values():
                torch.distributed.broadcast(p.data, 0)
        for module in self.modules.values():
            for b in module.buffers():
                torch.distributed.broadcast(b.data, 0)

    def _stop(self, requested: str | None) -> bool:
        """Whether to stop now: this process was asked to, or (under DDP) any rank was."""
        if not self.distributed:
            return requested is not None
        flag = torch.tensor([1.0 if requested else 0.0], device=self._device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _device(self) -> torch.device:
        """Where collectives run: the parameters' device (NCCL needs CUDA tensors)."""
        return next(iter(next(iter(self.params.values())).values())).device

    # The moving average of the ema_role's weights.
    @torch.no_grad()
    def _update_average(self) -> None:
        params = self.params[self.ema_role]
        if not self._average:
            self._average = {k: p.detach().clone() for k, p in params.items()}
        decay = min(self.ema or 0.0, (1 + self._ema_updates) / (10 + self._ema_updates))
        for name, p in params.items():
            self._average[name].lerp_(p.detach(), 1 - decay)
        self._ema_updates += 1

    def _training_value(self, role: str, name: str, value: Tensor) -> Tensor:
        if self._held is not None and role == self.ema_role:
            return self._held[name]
        return value

    @torch.no_grad()
    def _load_average(self) -> None:
        """Puts the averaged weights in place, keeping the training ones aside."""
        if self.ema is None or not self._average or self._held is not None:
            return
        params = self.params[self.ema_role]
        self._held = {k: p.detach().clone() for k, p in params.items()}
        for name, p in params.items():
            p.copy_(self._average[name])

    @torch.no_grad()
    def _restore_training_weights(self) -> None:
        if self._held is None:
            return
        for name, p in self.params[self.ema_role].items():
            p.copy_(self._held[name])
        self._held = None

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """Within the block, the ``ema_role`` parameters hold their moving average (no-op
        without ``ema``, before the first update, or when the average is already in)::

            with trainer.averaged():
                samples = generator.sample(1000)
        """
        loaded = self._held is None and bool(self._average)
        self._load_average()
        try:
            yield
        finally:
            if loaded:
                self._restore_training_weights()

    def _iterate(
        self,
        data_t: tuple[Tensor, ...],
        batch_size: int,
        drop_last: bool,
        transform: Transform | None,
        bar: Any,
        by_epoch: bool,
    ) -> None:
        """One iteration: every role's updates, each on a fresh batch; then the hooks."""
        self._passes_done = 0
        # the objective's schedule for this iteration; steps= given to the trainer win
        self.steps = self.steps_at(self.iteration)
        for role in self.roles:
            check_int(f"steps[{role!r}] at iteration {self.iteration}", self.steps[role], 1)
        for role in self.roles:
            values = []
            for _ in range(self.steps[role]):
                if self.distributed:
                    shard, rows = self._next_shard(data_t, batch_size, drop_last, transform)
                    value = self._step_distributed(role, shard, rows)
                else:
                    batch = self._next_batch(data_t, batch_size, drop_last)
                    if transform is not None:
                        assert self._generator is not None
                        batch = transform(batch, self._generator)
                    value = self._step(role, batch)
                if value is not None:
                    values.append(value)
            self.log(role, sum(values) / len(values) if values else math.nan)
        stats = dict(getattr(self.objective, "stats", {}))
        if self.distributed and stats:  # the ranks' mean, one number per statistic
            mean = torch.tensor([float(v) for v in stats.values()], dtype=torch.float64)
            mean = mean.to(self._device())
            torch.distributed.all_reduce(mean)
            stats = dict(zip(stats, (mean / self.world_size).tolist(), strict=True))
        for key, value in stats.items():
            self.log(key, value)
        if self.distributed and self.iteration == 0:
            self._broadcast_parameters()  # parameters initialised from a first batch agree
        self.iteration += 1
        if not by_epoch:
            bar.update(1)
        if self.iteration % 50 == 0:
            bar.set_postfix({r: f"{self.history[r][-1]:.3g}" for r in self.roles})
        for _ in range(self._passes_done):
            self.epoch += 1
            self.objective.end_of_epoch(self.epoch, self.model, self.guide)
            if self.epoch_callback is not None:
                with self.averaged():
                    self.epoch_callback(self)
            if by_epoch:
                bar.update(1)
        if self.callback is not None:
            with self.averaged():
                self.callback(self)
        if self.iteration % self.checkpoint_every == 0 or (by_epoch and self._passes_done):
            self.save()
