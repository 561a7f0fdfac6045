"""Noise sources for NCE: a distribution, or a Pyro model (scored by its trace, or by a
bound with its guide), possibly a frozen snapshot of the model being trained.

A source draws samples and scores rows; no gradient flows into it. A snapshot
(:class:`Snapshot`) is a deep copy of model and guide with frozen modules that runs against
a copy of Pyro's param store (:func:`pyrogen.compat.swapped_param_tables`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, NamedTuple

import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from torch import Tensor, nn

from pyrogen.compat import ParamTables, swapped_param_tables
from pyrogen.inference.densities import Bound, has_guide, log_density
from pyrogen.inference.gan import generate

__all__ = ["DistributionNoise", "ModelNoise", "Noise", "Snapshot"]


class FrozenParams(Messenger):
    """Parameter reads inside a frozen snapshot: the copy's own parameters are returned as
    they are (the param store never sees them, so it cannot make them trainable again), and
    a read that would return a tensor being trained is refused. A model that closes over a
    live module (a plain function calling ``pyro.module``) is not copied by
    ``copy.deepcopy``; its snapshot would silently follow training."""

    def __init__(self, own: frozenset[int]) -> None:
        super().__init__()
        self.own = own

    def _pyro_param(self, msg: Any) -> None:
        init = msg["args"][1] if len(msg["args"]) > 1 else None
        if not isinstance(init, Tensor):
            return
        if id(init) in self.own:
            msg["value"] = init
            msg["done"] = True
        elif init.requires_grad:
            raise ValueError(
                f"the frozen noise model reads the trainable parameter '{msg['name']}': the model "
                "(and guide) must be nn.Modules, or methods of one, so that a deep copy freezes "
                "them; a plain function closing over a module cannot be copied"
            )


class Snapshot(NamedTuple):
    """What a frozen copy runs against: the param store's copy, and its own modules."""

    store: ParamTables
    modules: tuple[nn.Module, ...]

    @property
    def own(self) -> frozenset[int]:
        return frozenset(id(p) for module in self.modules for p in module.parameters())

    def freeze(self) -> None:
        # Also after every run: a parameter read hidden from the handlers (an inner
        # poutine.block) reaches the store, which marks a new entry trainable.
        for module in self.modules:
            module.requires_grad_(False)


class Noise:
    """Draws noise samples and scores rows; no gradient flows into it."""

    def sample(self, num: int, data: Tensor) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class DistributionNoise(Noise):
    def __init__(self, distribution: torch.distributions.Distribution) -> None:
        self.distribution = distribution

    def _check(self, data: Tensor) -> None:
        d = self.distribution
        shape = tuple(d.batch_shape) + tuple(d.event_shape)
        if shape != tuple(data.shape[1:]):
            raise ValueError(
                f"the noise distribution draws points of shape {shape} (batch_shape "
                f"{tuple(d.batch_shape)} + event_shape {tuple(d.event_shape)}), the data points "
                f"have shape {tuple(data.shape[1:])}: give the noise the data's point shape "
                "(e.g. dist.Normal(loc, scale).to_event(1) for rows)"
            )

    def sample(self, num: int, data: Tensor) -> Tensor:
        self._check(data)
        return self.distribution.sample(torch.Size([num]))

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        lp = self.distribution.log_prob(x)
        return lp.reshape(x.shape[0], -1).sum(1)


class ModelNoise(Noise):
    """A Pyro model as noise: sampled by running it with its data site unobserved, scored
    by its trace (or, with a guide, by the bound). A frozen snapshot runs against its own
    copy of the param store."""

    def __init__(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any] | None,
        data_site: str,
        bound: Bound,
        snapshot: Snapshot | None = None,
        log_normalizer: float = 0.0,
    ) -> None:
        self.model = model
        self.guide = guide if has_guide(guide) else None
        self.data_site = data_site
        self.bound = bound
        self.snapshot = snapshot
        self.log_normalizer = log_normalizer

    @contextmanager
    def _running(self) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(poutine.block())  # hidden from SVI's parameter capture
            if self.snapshot is not None:
                stack.callback(self.snapshot.freeze)
                stack.enter_context(swapped_param_tables(self.snapshot.store))
                stack.enter_context(FrozenParams(self.snapshot.own))
            yield

    def sample(self, num: int, data: Tensor) -> Tensor:
        # The model is called with data rows (for their shape and sizes); the data site
        # then draws instead of observing.
        rows = torch.arange(num, device=data.device) % data.shape[0]
        with self._running():
            try:
                value, _ = generate(self.model, self.data_site, data[rows])
            except ValueError as exc:
                if "no sample site named" not in str(exc):
                    raise
                raise ValueError(
                    f"the noise model cannot be sampled: {exc}. The noise must draw its data "
                    f"at a sample site named '{self.data_site}' (pass data_site=); an "
                    "unnormalized model (pyro.factor only) cannot serve as noise"
                ) from exc
        return value

    def log_prob(self, x: Tensor) -> Tensor:
        with self._running():
            return log_density(self.model, self.guide, x, self.bound) - self.log_normalizer
