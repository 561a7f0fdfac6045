r"""The base of every pyrogen objective.

A subclass writes :meth:`Objective.differentiable_loss` only. :meth:`~Objective.loss` and
:meth:`~Objective.loss_and_grads` are derived from it here, once, so every objective works
both in :class:`pyro.infer.SVI` and as a module (``objective(model, guide)``, inherited from
:class:`pyro.infer.ELBO`) in a hand-written PyTorch loop.

Objectives with several players (a critic, a discriminator, an energy) return a
:class:`~typing.NamedTuple` of named losses; ``loss`` returns the same tuple of floats (as
Pyro's ``ReweightedWakeSleep`` does, which ``SVI.step`` passes through), and
``loss_and_grads`` back-propagates their sum, which is right when each loss reaches only its
own player's parameters. When they share parameters, step each loss with its own optimizer
(the several-player trainer does).

Beside its losses an objective declares:

- **roles**: the groups of parameters that each get an optimiser (``"critic"``,
  ``"generator"``; one role, ``"model"``, by default), with the papers' optimisers;
- **players**: the networks it owns (a critic, an energy, a log-normaliser), added with
  :meth:`Objective.add_player`. From them the base derives, once, their registration in
  Pyro's param store (safe against stale entries), the module form, each role's
  parameters and what a checkpoint holds;
- **state**: :meth:`Objective.state_dict` / :meth:`Objective.load_state_dict` (players'
  weights, and what a subclass keeps between calls: persistent chains, a noise snapshot);
- **hooks**: :meth:`Objective.after_step` after each optimiser step of a role, and
  :meth:`Objective.end_of_epoch` after each pass over the data.

**One reduction.** Every objective's loss is a *sum over the data points* of the batch
(times Pyro's subsampling scale where a plate subsamples), never a mean: that is Pyro's
convention (``Trace_ELBO`` and ``RenyiELBO`` return the negative bound of the whole batch),
so a pyrogen objective drops into code written for Pyro's and its value reads the same;
per-sample expectations (a critic's loss on generated samples, NCE's noise term) are
averaged inside and multiplied by the number of data points. The trainer divides by the
batch's rows and steps on the mean per data point, as most PyTorch code does.

Drawing particles and weighing them is not part of the base: the importance-weighted
objectives call :func:`pyrogen.inference.importance.draw_log_weights`.
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeAlias

import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from pyro.infer.elbo import ELBOModule
from pyro.params import param_with_module_name
from torch import nn

from pyrogen.compat import register_module
from pyrogen.inference.importance import trace_pair

Loss: TypeAlias = torch.Tensor | tuple[torch.Tensor, ...]
"""A scalar tensor, or a NamedTuple of named scalar tensors (several players)."""


def _item(x: Any) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _as_float(loss: Any) -> Any:
    """A loss as a float, or a (named) tuple of losses as a tuple of floats."""
    if isinstance(loss, tuple):
        values = [_item(x) for x in loss]
        return type(loss)(*values) if hasattr(loss, "_fields") else tuple(values)  # type: ignore[arg-type]
    return _item(loss)


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else a clear error
    naming ``name``: the check every count an objective or the trainer takes goes through."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


class FromIterable:
    """Mixin for a NamedTuple of named losses: it can also be built from one iterable, as
    Pyro's SVI rebuilds tuple losses (``type(loss)(map(...))``). Put it first:
    ``class MyLosses(FromIterable, _Fields)``."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and not isinstance(args[0], torch.Tensor | float):
            args = tuple(args[0])
        return super().__new__(cls, *args, **kwargs)


class Player(NamedTuple):
    """A network an objective owns.

    Attributes:
        module: the network.
        name: its Pyro module name; its parameters are ``"<name>$$$<parameter>"`` in the
            param store and in the trainer's checkpoints.
        role: the role whose optimiser trains it.
    """

    module: nn.Module
    name: str
    role: str


def empty_guide(*args: Any, **kwargs: Any) -> None:
    """A guide with no sites, for objectives that guide no latent variable (generators,
    unnormalized models): ``pyro.infer.SVI(model, empty_guide, optim, loss)``."""
    return None


@contextmanager
def frozen(params: Iterable[torch.Tensor]) -> Iterator[None]:
    """Parameters that take no gradient from what is computed inside (a critic used as a
    fixed function, a model held fixed while its guide learns); restored on exit."""
    trainable = [p for p in params if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        with warnings.catch_warnings():  # pyro.module's note on parameters without grad
            warnings.filterwarnings("ignore", message=".*not registered in the param store")
            yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


class Objective(ELBO):
    r"""Base class: implement :meth:`differentiable_loss`, inherit the rest.

    Args:
        num_particles: particles per data point, :math:`K \geq 1`.
        max_plate_nesting: the number of nested ``pyro.plate`` dimensions of the model and
            guide; guessed by running them once when left at infinity.
        vectorize_particles: draw the particles as one outermost ``pyro.plate`` (the
            default), or run the model and guide once per particle (for programs whose
            structure cannot be vectorized).
    """

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
    ) -> None:
        if isinstance(num_particles, bool) or not isinstance(num_particles, int):
            raise TypeError(f"num_particles must be an int, got {num_particles!r}")
        if num_particles < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
        )

    # The one method a subclass writes.
    @abstractmethod
    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Loss:
        """The loss to minimise, differentiable: its value is the negative bound (or the
        named losses), its gradient is the objective's estimator."""

    def loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """The value of :meth:`differentiable_loss` as a float (or a NamedTuple of floats)."""
        self.register_players()
        with torch.no_grad():
            return _as_float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Back-propagates :meth:`differentiable_loss` and returns its value, for SVI."""
        self.register_players()
        out = self.differentiable_loss(model, guide, *args, **kwargs)
        total = out if isinstance(out, torch.Tensor) else sum(out)
        if isinstance(total, torch.Tensor) and total.requires_grad:
            total.backward(retain_graph=self.retain_graph)
        return _as_float(out)

    # Roles: what the trainer reads. One role, "model", by default: every Pyro parameter of
    # the model and guide, stepped on the sum of the named losses.
    roles: tuple[str, ...] = ("model",)
    #: the role that trains the Pyro parameters which running the model and guide registers
    #: (``None``: they are all players', as for contrastive divergence).
    model_role: str | None = "model"
    default_optimizers: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
        "model": (torch.optim.Adam, {"lr": 1e-3}),
    }

    def _check_role(self, role: str) -> None:
        if role not in self.roles:
            raise ValueError(f"unknown role {role!r}; roles are {self.roles}")

    def steps_per_iteration(self) -> dict[str, int]:
        """Updates of each role per trainer iteration."""
        return {role: 1 for role in self.roles}

    def steps_at(self, iteration: int) -> dict[str, int]:
        """Updates of each role in trainer iteration ``iteration`` (counted from 0): by
        default :meth:`steps_per_iteration` throughout; an objective with a schedule (KALE's
        long energy phases) overrides it."""
        return self.steps_per_iteration()

    def role_loss(
        self,
        role: str,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The loss that ``role``'s optimiser minimises: by default the sum of the named
        losses (right when each reaches only its own player's parameters)."""
        self._check_role(role)
        out = self.differentiable_loss(model, guide, *args, **kwargs)
        return out if isinstance(out, torch.Tensor) else torch.stack(list(out)).sum()

    # Players.
    @property
    def players(self) -> dict[str, Player]:
        """The networks this objective owns, by attribute name."""
        players: dict[str, Player] | None = self.__dict__.get("_players")
        if players is None:
            players = self.__dict__["_players"] = {}
        return players

    def add_player(
        self, attr: str, module: nn.Module, *, role: str, name: str | None = None
    ) -> nn.Module:
        """Declare ``module`` a player, trained by ``role``'s optimiser, under the Pyro
        module name ``name`` (default ``attr``); returns it. The module form holds it as
        submodule ``attr``."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"{attr} must be a torch.nn.Module, got {type(module).__name__}")
        self._check_role(role)
        self.players[attr] = Player(module, name if name is not None else attr, role)
        return module

    def register_players(self) -> None:
        """Register every player in Pyro's param store, so :class:`pyro.infer.SVI` steps
        them; stale entries of the same names (an earlier objective's) are replaced.
        :meth:`loss` and :meth:`loss_and_grads` call it; the module form needs no store."""
        for player in self.players.values():
            register_module(player.name, player.module)

    def player_parameters(self, role: str | None = None) -> dict[str, torch.Tensor]:
        """The players' parameters (of ``role``, or all), by Pyro name."""
        return {
            param_with_module_name(p.name, k): v
            for p in self.players.values()
            if role is None or p.role == role
            for k, v in p.module.named_parameters()
        }

    def role_parameters(
        self,
        role: str,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """The parameters ``role`` updates, by Pyro name: its players', and for
        :attr:`model_role` the Pyro parameters (unconstrained) that running ``model`` and
        ``guide`` once registers, as :class:`pyro.infer.SVI` finds them, less the players'.
        Running them draws random numbers."""
        self._check_role(role)
        params = self.player_parameters(role)
        if role == self.model_role:
            owned = {id(v) for v in self.player_parameters().values()}
            found = self.pyro_parameters(model, guide, *args, **kwargs)
            params |= {k: v for k, v in found.items() if id(v) not in owned}
        return params

    @staticmethod
    def pyro_parameters(
        model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """The Pyro parameters (unconstrained) registered by one run of guide and model."""
        with poutine.block(), poutine.trace(param_only=True) as tracer:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            poutine.replay(model, trace=guide_trace)(*args, **kwargs)
        return {
            name: site["value"].unconstrained()
            for name, site in tracer.trace.nodes.items()
            if site["type"] == "param" and site["value"] is not None
        }

    def __call__(self, model: Callable[..., Any], guide: Callable[..., Any]) -> ELBOModule:
        """The module form (Pyro's ``elbo(model, guide)``), holding every player as a
        submodule, so that ``module.parameters()`` are every player's too; calling it
        returns :meth:`differentiable_loss`."""
        module = ELBOModule(model, guide, self)  # type: ignore[arg-type]
        for attr, player in self.players.items():
            module.add_module(attr, player.module)
        return module

    def _get_trace(
        self, model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """:class:`pyro.infer.ELBO`'s hook: one guide trace and the model replayed on it."""
        return trace_pair(model, guide, args, kwargs)

    # State and hooks.
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume this objective exactly: the players'
        weights (and buffers), plus what a subclass keeps between calls."""
        return {"players": {k: p.module.state_dict() for k, p in self.players.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        saved = state.get("players", {})
        if set(saved) != set(self.players):
            raise ValueError(
                f"the state holds players {sorted(saved)}, this objective has "
                f"{sorted(self.players)}"
            )
        for k, p in self.players.items():
            p.module.load_state_dict(saved[k])

    def bind(self, model: Callable[..., Any], guide: Callable[..., Any]) -> None:
        """The trainer names the programs it is about to train, before it resumes a state
        (an objective whose state copies them, as self-contrastive noise does, needs them)."""

    def after_step(self, role: str) -> None:
        """Called by the trainer after each optimiser step of ``role`` (e.g. clipping)."""

    def end_of_epoch(
        self, epoch: int, model: Callable[..., Any], guide: Callable[..., Any]
    ) -> None:
        """Called by the trainer after each pass over the data; ``epoch`` counts finished
        passes (e.g. the self-contrastive noise refresh)."""
