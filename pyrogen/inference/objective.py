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
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine import Trace

from pyrogen.inference.importance import LogWeights, check_traces, log_weights

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


def _check_no_nan(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    named = [(f"positional argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument '{k}'", v) for k, v in kwargs.items()]
    for where, value in named:
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and bool(torch.isnan(value).any())
        ):
            count = int(torch.isnan(value).sum())
            raise ValueError(
                f"the data passed as {where} contain NaN ({count} of {value.numel()} entries): "
                "drop or impute the missing values, or mask them out with poutine.mask"
            )


def _plate_nesting(traces: list[tuple[Trace, Trace]]) -> int:
    dims = [
        -int(frame.dim)
        for pair in traces
        for trace in pair
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.dim is not None
    ]
    return max(dims, default=0)


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
        with torch.no_grad():
            return _as_float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Back-propagates :meth:`differentiable_loss` and returns its value, for SVI."""
        out = self.differentiable_loss(model, guide, *args, **kwargs)
        total = out if isinstance(out, torch.Tensor) else sum(out)
        if isinstance(total, torch.Tensor) and total.requires_grad:
            total.backward(retain_graph=self.retain_graph)
        return _as_float(out)

    # Roles: what the several-player trainer reads. One role, "model", by default: every
    # Pyro parameter of the model and guide, stepped on the sum of the named losses.
    roles: tuple[str, ...] = ("model",)
    default_optimizers: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
        "model": (torch.optim.Adam, {"lr": 1e-3}),
    }

    def steps_per_iteration(self) -> dict[str, int]:
        """Updates of each role per trainer iteration."""
        return {role: 1 for role in self.roles}

    def role_loss(
        self,
        role: str,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The loss that ``role``'s optimiser minimises."""
        if role not in self.roles:
            raise ValueError(f"unknown role {role!r}; roles are {self.roles}")
        out = self.differentiable_loss(model, guide, *args, **kwargs)
        return out if isinstance(out, torch.Tensor) else torch.stack(list(out)).sum()

    def role_parameters(
        self,
        role: str,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """The parameters ``role`` updates, by name: here the Pyro parameters (unconstrained)
        that running ``model`` and ``guide`` once registers, as :class:`pyro.infer.SVI`
        finds them. Running them draws random numbers."""
        if role not in self.roles:
            raise ValueError(f"unknown role {role!r}; roles are {self.roles}")
        return self.pyro_parameters(model, guide, *args, **kwargs)

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

    def after_step(self, role: str) -> None:
        """Called by the trainer after each optimiser step of ``role`` (e.g. clipping)."""

    # Traces and weights, shared by the importance-weighted objectives.
    def _get_trace(
        self, model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any
    ) -> tuple[Trace, Trace]:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        return model_trace, guide_trace

    @property
    def _particle_plate(self) -> bool:
        return bool(self.vectorize_particles and self.num_particles > 1)

    def log_weights(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        want_direct: bool = False,
    ) -> LogWeights:
        r"""Draw ``num_particles`` particles from the guide and weigh them by the model.

        Returns:
            :class:`~pyrogen.inference.importance.LogWeights` whose ``log_weight`` has shape
            ``(num_particles, *plates)``.
        """
        if is_validation_enabled():
            _check_no_nan(args, kwargs)
        if self.max_plate_nesting == math.inf and self.vectorize_particles:
            # One unvectorized run finds the plate nesting (as Pyro's ELBO does, drawing the
            # same random numbers); its traces are checked before any density is computed.
            with poutine.block():
                pair = self._get_trace(model, guide, args, kwargs)
            check_traces(*pair)
            self.max_plate_nesting = _plate_nesting([pair]) + int(self._particle_plate)
        traces = list(self._get_traces(model, guide, args, kwargs))
        if self.max_plate_nesting == math.inf:  # sequential: read it off the traces
            self.max_plate_nesting = _plate_nesting(traces)
        out = log_weights(
            traces, int(self.max_plate_nesting), self._particle_plate, want_direct=want_direct
        )
        assert out.log_weight.shape[0] == self.num_particles, (
            f"expected {self.num_particles} particles first, got {tuple(out.log_weight.shape)}"
        )
        return out
