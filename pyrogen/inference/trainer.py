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
        n = data[0].shape[0]
        assert self._generator is not None
        if self._order is None or self._position >= n:
            self._order = torch.randperm(n, generator=self._generator)
            self._position = 0
        idx = self._order[self._position : self._position + batch_size]
        self._position += batch_size
        if self._position >= n or (drop_last and self._position + batch_size > n):
            self._position = n  # this pass is over; the next batch starts a new order
            self._passes_done += 1
        return tuple(t[idx.to(t.device)] for t in data)

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
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, KIND, self.state())
            self._saved_iteration = self.iteration

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
        try:
            self.objective.load_state_dict(state["objective"])
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{self.checkpoint}: the objective's state: {exc}") from exc
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        for role, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][role])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
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
        return True

    # The loop.
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
        resumed = False
        self._restore_training_weights()
        if not self.optimizers:
            self._generator = torch.Generator().manual_seed(seed)
            self._build(tuple(t[:batch_size] for t in data_t))
            resumed = self._resume()
        by_epoch = num_epochs is not None
        bar = tqdm(
            total=total,
            initial=min(self.epoch if by_epoch else self.iteration, total),
            disable=not self.progress,
            desc="resumed" if resumed else "training",
            unit="epoch" if by_epoch else "it",
        )
        interrupted = _DeferredInterrupt()
        try:
            with interrupted:
                while (self.epoch if by_epoch else self.iteration) < total:
                    if interrupted.requested:
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
            if self.nonfinite_steps < self.skip_nonfinite:
                self.nonfinite_steps += 1
                return None
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
                f"{type(self.objective).__name__}: the {role!r} loss is "
                f"{float(loss.detach())} at iteration {self.iteration} "
                f"({self.nonfinite_steps} non-finite steps skipped before); {kept}. Lower "
                "the learning rate, check the data, or let the trainer skip such steps "
                "(skip_nonfinite=N)"
            )
        loss.backward()
        opt.step()
        self.objective.after_step(role)
        if self.ema is not None and role == self.ema_role:
            self._update_average()
        return float(loss.detach())

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
        self.steps = dict(self.objective.steps_at(self.iteration)) | self._fixed_steps
        for role in self.roles:
            check_int(f"steps[{role!r}] at iteration {self.iteration}", self.steps[role], 1)
        for role in self.roles:
            values = []
            for _ in range(self.steps[role]):
                batch = self._next_batch(data_t, batch_size, drop_last)
                if transform is not None:
                    assert self._generator is not None
                    batch = transform(batch, self._generator)
                value = self._step(role, batch)
                if value is not None:
                    values.append(value)
            self.log(role, sum(values) / len(values) if values else math.nan)
        for key, value in getattr(self.objective, "stats", {}).items():
            self.log(key, value)
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
