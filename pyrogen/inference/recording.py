r"""Record a function's torch operations once per input shape, check the record, replay it.

The machinery behind :class:`~pyrogen.inference.mcmc.compiled.CompiledPotential` (a
potential and its gradient), :class:`RecordedLoss` (a training loss and its parameter
gradients, module form) and :class:`RecordedObjective` (the same inside
``pyro.infer.SVI``). ``torch.fx.experimental.proxy_tensor.make_fx`` runs the function once
and keeps every operation torch's dispatcher sees, the backward pass and random draws
included; the replay runs those operations without the Python that issued them
(Pyro's handler stack, distribution objects, autograd's engine):

- ``"trace"`` replays the operations as they are: the same kernels in the same order, so
  results are bit for bit the eager ones, and random draws consume torch's generator as the
  eager run does;
- ``"inductor"`` gives the record to ``torch.compile``, which fuses element-wise operations
  (results within rounding; compiling takes seconds and needs a C++ compiler on CPU). Random
  draws stay torch's own kernels (inductor's ``fallback_random``), so they consume torch's
  generator as the eager run does and draw the same numbers.

Every record is checked before it is used: its first replay must equal an eager call from
the same random state (a second one: the first call of a Pyro objective may do more, such
as a probe of its batching) (``"trace"``: bit for bit; ``"inductor"``: within
``1000 eps`` of the largest value). Reading a traced value in Python (``if x > 0``,
``.item()``) raises while recording, so control flow that depends on the inputs' values is
caught. On any failure the recorder warns once (:class:`~pyrogen.warnings.PyrogenWarning`)
and runs the function eagerly from then on. A record is kept per shape, dtype and device of
the tensor arguments and per value of the others (up to :data:`MAX_RECORDS`; eager beyond).

What a record cannot see: Python state outside its arguments that changes between calls (a
counter, a flag, Python's ``random``), and side effects of the function, which happen once,
while recording. Tensors the function reads without being given them (data, network
weights, parameters) are read at each replay, so in-place updates of them, an optimiser's
included, are seen; a tensor replaced by a new object is not.
"""

import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.infer.util import is_validation_enabled
from torch import Tensor

from pyrogen.warnings import PyrogenWarning

__all__ = ["MAX_RECORDS", "MODES", "RecordedLoss", "RecordedObjective", "Recorder", "check_mode"]

MODES = ("none", "trace", "inductor")  # "none": no recorder, the eager path
MAX_RECORDS = 8


def check_mode(name: str, mode: str) -> None:
    """A ValueError naming the choices unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")


class Recorder:
    """``fn(*args) -> tuple of tensors``, replayed from a record per kind of arguments.

    Args:
        fn: the function; its results must be a tuple of tensors (``None`` allowed).
        mode: ``"trace"`` or ``"inductor"``.
        what: how the warning names the setting (``"compile_potential='trace'"``).
        recording_context: entered while recording and checking (the eager call that the
            record is checked against runs outside it).

    Attributes:
        fallback: why the eager path is used, or ``None`` while replays run.
    """

    def __init__(
        self,
        fn: Callable[..., tuple[Any, ...]],
        mode: str,
        what: str,
        recording_context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        check_mode("mode", mode)
        if mode == "none":
            raise ValueError("mode 'none' needs no recorder: call the function itself")
        self.fn = fn
        self.recording_context = recording_context
        self.mode = mode
        self.what = what
        self.fallback: str | None = None
        self.records: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def __call__(self, *args: Any) -> tuple[Any, ...]:
        if self.fallback is not None:
            return self.fn(*args)
        key = tuple(
            (tuple(a.shape), a.dtype, a.device) if isinstance(a, Tensor) else ("value", repr(a))
            for a in args
        )
        replay = self.records.get(key)
        if replay is not None:
            return tuple(replay(*_tensors(args)))
        if len(self.records) >= MAX_RECORDS:
            return self.fn(*args)
        result = self.fn(*args)  # the caller's result: a first call may do more (a probe)
        after = _rng_state()
        replay = self._record(args, after)
        _set_rng_state(after)  # the stream continues as after the eager call
        if replay is not None:
            self.records[key] = replay
        return result

    def _record(self, args: tuple[Any, ...], start: Any) -> Callable[..., Any] | None:
        """A record checked against a second eager call from the same random state."""
        _set_rng_state(start)
        expected = self.fn(*args)
        with self.recording_context():
            return self._record_in_context(args, start, expected)

    def _record_in_context(
        self, args: tuple[Any, ...], start: Any, expected: tuple[Any, ...]
    ) -> Callable[..., Any] | None:
        from torch.fx.experimental.proxy_tensor import make_fx

        def on_tensors(*tensors: Tensor) -> tuple[Any, ...]:
            return self.fn(*_merge(args, tensors))

        tensors = [a.detach() for a in _tensors(args)]
        try:
            _set_rng_state(start)
            graph = make_fx(on_tensors)(*tensors)
        except Exception as exc:  # noqa: BLE001 - any failure to record falls back
            self._fall_back(f"recording failed ({_short(exc)})")
            return None
        replay: Callable[..., Any] = graph
        if self.mode == "inductor":
            try:
                # fallback_random: the record's random draws run as torch's kernels, not as
                # inductor's own generator, so they are the eager run's numbers
                replay = torch.compile(graph, dynamic=False, options={"fallback_random": True})
                _set_rng_state(start)
                got = tuple(replay(*tensors))
            except Exception as exc:  # noqa: BLE001 - no compiler, or a compile error
                self._fall_back(f"torch.compile failed ({_short(exc)})")
                return None
            if not _close(got, expected):
                self._fall_back("the compiled record disagrees with the eager run")
                return None
        else:
            _set_rng_state(start)
            if not _equal(tuple(graph(*tensors)), expected):
                self._fall_back("the replayed record differs from the eager run")
                return None
        return replay

    def _fall_back(self, why: str) -> None:
        self.fallback = why
        self.records.clear()
        warnings.warn(f"{self.what}: {why}; running eagerly instead", PyrogenWarning, stacklevel=5)


def _unconstrained(name: str) -> Tensor:
    """The leaf tensor behind Pyro parameter ``name`` (what SVI's optimiser steps), looked
    up through ``pyro.param`` so that an enclosing trace records the parameter."""
    value: Any = pyro.param(name)
    return value.unconstrained()


def _tensors(args: tuple[Any, ...]) -> list[Tensor]:
    return [a for a in args if isinstance(a, Tensor)]


def _merge(args: tuple[Any, ...], tensors: tuple[Tensor, ...]) -> list[Any]:
    """``args`` with its tensors replaced, in order, by ``tensors``."""
    it = iter(tensors)
    return [next(it) if isinstance(a, Tensor) else a for a in args]


def _rng_state() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, list[Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _pairs(got: tuple[Any, ...], expected: tuple[Any, ...]) -> list[tuple[Tensor, Tensor]] | None:
    """Tensor pairs of two results, or ``None`` when their structure differs."""
    if len(got) != len(expected):
        return None
    pairs = []
    for a, b in zip(got, expected, strict=True):
        if a is None or b is None:
            if a is not b:
                return None
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            return None
        pairs.append((a.detach(), b.detach()))
    return pairs


def _equal(got: tuple[Any, ...], expected: tuple[Any, ...]) -> bool:
    """Bit for bit (NaN where NaN)."""
    pairs = _pairs(got, expected)
    return pairs is not None and all(
        torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True) for a, b in pairs
    )


def _close(got: tuple[Any, ...], expected: tuple[Any, ...]) -> bool:
    """Agreement within rounding: ``|a - b| <= 1000 eps (max |b| + 1)`` per tensor, where
    both are finite (a sum of n terms in another order moves by about ``sqrt(n) eps`` of the
    largest term; a fused loop also rounds its intermediate results differently)."""
    pairs = _pairs(got, expected)
    if pairs is None:
        return False
    for a, b in pairs:
        finite = torch.isfinite(b)
        if not torch.equal(finite, torch.isfinite(a)):
            return False
        if not b.is_floating_point():
            if not torch.equal(a, b):
                return False
            continue
        scale = float(b[finite].abs().max()) + 1.0 if finite.any() else 1.0
        tol = 1000 * torch.finfo(b.dtype).eps * scale
        if not bool(((a - b).abs() <= tol)[finite].all()):
            return False
    return True


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."


class RecordedLoss:
    """A training loss and its parameter gradients, replayed from a record per batch shape.

    Args:
        loss_fn: ``loss_fn(*args) -> scalar loss``; an ``nn.Module`` (such as
            ``RenyiBound(...)(model, guide)``) or any function of tensors.
        params: the tensors to differentiate (default: ``loss_fn.parameters()``); their
            values are read at each replay, so an optimiser may update them in place.
        mode: ``"trace"`` (the default) replays the recorded operations bit for bit;
            ``"inductor"`` fuses them with ``torch.compile`` (values and gradients within
            rounding of the eager ones, random draws the eager run's; the first call per
            batch shape compiles, which takes seconds; the :mod:`recording
            <pyrogen.inference.recording>` module says how records are checked).

    :meth:`backward` is ``loss = loss_fn(*args); loss.backward()``: gradients are added to
    each parameter's ``.grad``, and the loss comes back detached. The first call per kind of
    arguments runs eagerly and records; later calls replay (the
    :mod:`~pyrogen.inference.recording` module says what a record cannot see).

    Example:
        >>> import torch
        >>> w = torch.ones(3, requires_grad=True)
        >>> step = RecordedLoss(lambda x: ((x @ w) ** 2).sum(), [w])
        >>> for _ in range(2):
        ...     w.grad = None
        ...     loss = step.backward(torch.ones(4, 3))
        >>> float(loss), w.grad.tolist()
        (36.0, [24.0, 24.0, 24.0])
    """

    def __init__(
        self,
        loss_fn: Callable[..., Tensor],
        params: list[Tensor] | None = None,
        mode: str = "trace",
    ) -> None:
        if mode not in ("trace", "inductor"):
            raise ValueError(f"RecordedLoss mode must be 'trace' or 'inductor', got {mode!r}")
        if params is None:
            if not isinstance(loss_fn, torch.nn.Module):
                raise TypeError("give params: loss_fn is not an nn.Module with parameters()")
            params = list(loss_fn.parameters())
        self.params = list(params)
        if not self.params or not all(
            isinstance(p, Tensor) and p.requires_grad for p in self.params
        ):
            raise ValueError("params must be a non-empty list of tensors that require grad")
        self.loss_fn = loss_fn
        self._recorder = Recorder(
            self._loss_and_grads,
            mode,
            f"RecordedLoss(mode={mode!r})",
            # Pyro's and pyrogen's validation read values (a support check, a NaN check),
            # which cannot be recorded: the eager call of each record validates instead.
            recording_context=lambda: pyro.validation_enabled(False),
        )

    @property
    def fallback(self) -> str | None:
        return self._recorder.fallback

    def _loss_and_grads(self, *args: Any) -> tuple[Any, ...]:
        with torch.enable_grad():
            loss = self.loss_fn(*args)
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                raise ValueError("loss_fn must return a scalar tensor")
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return (loss.detach(), *grads)

    def backward(self, *args: Any) -> Tensor:
        """The loss at ``args``, with its gradients added to the parameters' ``.grad``.

        A replayed loss that is not finite is computed again eagerly, from the same random
        state, so that validation (when enabled) can say where it went wrong."""
        start = _rng_state() if is_validation_enabled() else None
        loss, *grads = self._recorder(*args)
        if start is not None and not bool(torch.isfinite(loss)):
            _set_rng_state(start)
            loss, *grads = self._loss_and_grads(*args)
        with torch.no_grad():
            for p, g in zip(self.params, grads, strict=True):
                if g is None:
                    continue
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)
        return loss


class RecordedObjective(ELBO):
    """An objective for ``pyro.infer.SVI`` whose ``loss_and_grads`` is replayed (a Pyro
    ``ELBO``, as SVI requires).

    Args:
        objective: a pyrogen objective (or any object with ``differentiable_loss(model,
            guide, *args)`` returning a scalar tensor, ``loss`` and ``loss_and_grads``).
        mode: ``"trace"`` or ``"inductor"`` (see :class:`RecordedLoss`).

    Per (model, guide) pair the first step runs the objective eagerly and finds the Pyro
    parameters, then :class:`RecordedLoss` records per kind of arguments (so the steps are
    bit for bit those of SVI with ``objective`` itself under ``"trace"``, within rounding
    under ``"inductor"``). Each later call looks the
    parameters up with ``pyro.param``, so that SVI's parameter capture sees them, and starts
    again from an eager step when one of them is gone from the param store or is no longer
    the tensor recorded (``pyro.clear_param_store()``, a re-created parameter). Keyword
    arguments are not recorded: a call with any runs eagerly.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyrogen.inference import RenyiBound
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.zeros(()))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        >>> svi = pyro.infer.SVI(model, lambda x: None, pyro.optim.SGD({"lr": 0.1}),
        ...                      loss=RecordedObjective(RenyiBound()))
        >>> losses = [svi.step(torch.ones(4)) for _ in range(30)]
        >>> round(float(pyro.param("loc")), 3)
        1.0
    """

    def __init__(self, objective: Any, mode: str = "trace") -> None:
        if not callable(getattr(objective, "differentiable_loss", None)):
            raise TypeError(
                f"objective must have a differentiable_loss, got {type(objective).__name__}"
            )
        if mode not in ("trace", "inductor"):
            raise ValueError(f"RecordedObjective mode must be 'trace' or 'inductor', got {mode!r}")
        super().__init__()
        self.objective = objective
        self.mode = mode
        self._entries: dict[tuple[Any, Any], tuple[list[str], RecordedLoss]] = {}

    def loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        return self.objective.loss(model, guide, *args, **kw)

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        return self.objective.differentiable_loss(model, guide, *args, **kw)

    def _get_trace(
        self, model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        return self.objective._get_trace(model, guide, args, kwargs)

    def loss_and_grads(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kw: Any
    ) -> float:
        """The loss as a float, its gradients added to the parameters' ``.grad``."""
        if kw:
            return self.objective.loss_and_grads(model, guide, *args, **kw)
        entry = self._entries.get((model, guide))
        if entry is not None:
            names, recorded = entry
            store = pyro.get_param_store()
            if not all(name in store for name in names) or any(
                _unconstrained(name) is not p
                for name, p in zip(names, recorded.params, strict=True)
            ):
                entry = None
        if entry is None:  # an eager step that finds the parameters
            with poutine.trace(param_only=True) as capture:
                loss = self.objective.loss_and_grads(model, guide, *args)
            names = list(capture.trace.nodes)
            params = [_unconstrained(name) for name in names]
            if params:

                def loss_fn(*a: Any) -> Tensor:
                    return self.objective.differentiable_loss(model, guide, *a)

                self._entries[(model, guide)] = (names, RecordedLoss(loss_fn, params, self.mode))
            return loss
        return float(entry[1].backward(*args))
