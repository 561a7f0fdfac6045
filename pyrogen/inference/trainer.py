"""The loop for objectives with several players (critic, generator, energy, model).

An objective names its ``roles``; for each it gives the loss (``role_loss``), the
parameters (``role_parameters``), the updates per iteration (``steps_per_iteration``), the
paper's optimiser (``default_optimizers``) and a hook after each step (``after_step``, where
WGAN clips). One iteration steps every role in order, each update on a fresh minibatch::

    for role in objective.roles:
        for _ in range(steps[role]):
            optimizer[role].zero_grad(); objective.role_loss(role, model, guide, batch).backward()
            optimizer[role].step(); objective.after_step(role)

The trainer keeps a history of each role's loss and of the objective's ``stats`` (e.g. the
WGAN critic's estimate of the Wasserstein distance), shows a progress bar, and writes an
atomic checkpoint (parameters, module buffers, optimisers, RNG states, data order, history)
every ``checkpoint_every`` iterations, at the end and on Ctrl-C; ``fit`` with the same
checkpoint path resumes where it stopped, drawing the same numbers as an uninterrupted run.
Nothing here depends on the device: the data and parameters decide it.
"""

from __future__ import annotations

import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyrogen.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyrogen.inference.objective import Objective, empty_guide
from pyrogen.warnings import PyrogenWarning

__all__ = ["Trainer"]

KIND = "pyrogen.trainer"


class _DeferredInterrupt:
    """Ctrl-C during an iteration stops the loop after that iteration, so the checkpoint
    written then is a state of the uninterrupted run (a second Ctrl-C stops at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


class Trainer:
    """Fits ``model`` (and ``guide``) under a several-player ``objective``.

    Args:
        objective: a :class:`~pyrogen.inference.objective.Objective` (one role, "model",
            unless it names others, as the adversarial ones do).
        model, guide: the Pyro programs, called as ``model(*batch)``; the guide defaults
            to one that does nothing (generators need none).
        optimizers: per role, a ``torch.optim.Optimizer`` class and its keyword arguments,
            or a function ``params -> optimizer``; roles left out get the objective's
            default (the paper's settings).
        steps: per role, updates per iteration (defaults from the objective).
        modules: modules whose buffers (batch-norm statistics...) belong in checkpoints,
            by name; the objective's critic is added. Parameters are saved in any case.
        checkpoint: path of the checkpoint file; an existing one is resumed.
        checkpoint_every: iterations between checkpoints.
        callback: called as ``callback(trainer)`` after every iteration (evaluations,
            snapshots); ``trainer.iteration`` counts finished iterations.
        progress: show a tqdm bar.
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
        progress: bool = True,
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
        self.steps = dict(objective.steps_per_iteration()) | dict(steps or {})
        for role, n in self.steps.items():
            _check_int(f"steps[{role!r}]", n, 1)
        self._optimizer_specs = dict(optimizers or {})
        self.modules = dict(modules or {})
        critic = getattr(objective, "critic", None)
        if isinstance(critic, nn.Module):
            self.modules.setdefault("critic", critic)
        self.checkpoint = checkpoint
        self.checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
        self.callback = callback
        self.progress = progress
        self.iteration = 0
        self.history: dict[str, list[float]] = {}
        self.params: dict[str, dict[str, Tensor]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._generator: torch.Generator | None = None
        self._order: Tensor | None = None
        self._position = 0

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

    def _next_batch(self, data: tuple[Tensor, ...], batch_size: int) -> tuple[Tensor, ...]:
        n = data[0].shape[0]
        assert self._generator is not None
        if self._order is None or self._position + batch_size > n:
            self._order = torch.randperm(n, generator=self._generator)
            self._position = 0
        idx = self._order[self._position : self._position + batch_size]
        self._position += batch_size
        return tuple(t[idx.to(t.device)] for t in data)

    # Checkpoints.
    def state(self) -> dict[str, Any]:
        assert self._generator is not None
        return {
            "iteration": self.iteration,
            "roles": list(self.roles),
            "params": {
                r: {k: v.detach().cpu() for k, v in p.items()} for r, p in self.params.items()
            },
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {r: o.state_dict() for r, o in self.optimizers.items()},
            "torch_rng": torch.get_rng_state(),
            "data_rng": self._generator.get_state(),
            "order": self._order if self._order is not None else torch.empty(0, dtype=torch.long),
            "position": self._position,
            "history": self.history,
        }

    def save(self) -> None:
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, KIND, self.state())

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
                    raise CheckpointError(
                        f"{self.checkpoint} holds other parameters for role {role!r}: "
                        f"{sorted(set(saved) ^ set(params))[:5]} differ"
                    )
                for name, p in params.items():
                    if saved[name].shape != p.shape:
                        raise CheckpointError(f"parameter {name!r} changed shape")
                    p.copy_(saved[name])
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        for role, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][role])
        torch.set_rng_state(state["torch_rng"])
        assert self._generator is not None
        self._generator.set_state(state["data_rng"])
        self._order = state["order"] if state["order"].numel() else None
        self._position = int(state["position"])
        self.iteration = int(state["iteration"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        return True

    # The loop.
    def _log(self, key: str, value: float) -> None:
        self.history.setdefault(key, []).append(value)

    def fit(
        self,
        data: Tensor | Iterable[Tensor],
        num_iterations: int,
        batch_size: int,
        seed: int = 0,
    ) -> dict[str, list[float]]:
        """Runs until ``num_iterations`` iterations are done in all (resuming counts those
        in the checkpoint) and returns the history: per iteration, each role's mean loss
        and each of the objective's ``stats``.

        Args:
            data: a tensor of rows, or a tuple of tensors with the same first dimension
                (passed to the model as positional arguments).
            num_iterations: total iterations (one iteration steps every role).
            batch_size: rows per update; the rows are reshuffled every pass (``seed``).
        """
        data_t = (data,) if isinstance(data, Tensor) else tuple(data)
        if not data_t or not all(isinstance(t, Tensor) for t in data_t):
            raise TypeError("data must be a tensor or a tuple of tensors")
        n = data_t[0].shape[0]
        if any(t.shape[0] != n for t in data_t):
            raise ValueError(f"data tensors differ in length: {[t.shape[0] for t in data_t]}")
        _check_int("num_iterations", num_iterations, 0)
        _check_int("batch_size", batch_size, 1)
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} rows of data")
        resumed = False
        if not self.optimizers:
            self._generator = torch.Generator().manual_seed(seed)
            self._build(tuple(t[:batch_size] for t in data_t))
            resumed = self._resume()
        bar = tqdm(
            total=num_iterations,
            initial=min(self.iteration, num_iterations),
            disable=not self.progress,
            desc="resumed" if resumed else "training",
        )
        interrupted = _DeferredInterrupt()
        try:
            with interrupted:
                self._loop(data_t, num_iterations, batch_size, bar, interrupted)
        finally:
            bar.close()
        self.save()
        if interrupted.requested:
            warnings.warn(
                f"interrupted after iteration {self.iteration}; "
                + (
                    f"fit again to resume from {self.checkpoint}"
                    if self.checkpoint
                    else "pass checkpoint= to be able to resume"
                ),
                PyrogenWarning,
                stacklevel=2,
            )
        return self.history

    def _loop(
        self,
        data_t: tuple[Tensor, ...],
        num_iterations: int,
        batch_size: int,
        bar: Any,
        interrupted: _DeferredInterrupt,
    ) -> None:
        while self.iteration < num_iterations and not interrupted.requested:
            for role in self.roles:
                total = 0.0
                for _ in range(self.steps[role]):
                    batch = self._next_batch(data_t, batch_size)
                    opt = self.optimizers[role]
                    opt.zero_grad(set_to_none=True)
                    loss = self.objective.role_loss(role, self.model, self.guide, *batch)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"{role} loss is {float(loss.detach())} at iteration {self.iteration}; "
                            "lower the learning rate or check the data"
                        )
                    loss.backward()
                    opt.step()
                    self.objective.after_step(role)
                    total += float(loss.detach())
                self._log(role, total / self.steps[role])
            for key, value in getattr(self.objective, "stats", {}).items():
                self._log(key, value)
            self.iteration += 1
            bar.update(1)
            if self.iteration % 50 == 0 or self.iteration == num_iterations:
                bar.set_postfix({r: f"{self.history[r][-1]:.3g}" for r in self.roles})
            if self.callback is not None:
                self.callback(self)
            if self.iteration % self.checkpoint_every == 0:
                self.save()
