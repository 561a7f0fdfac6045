r"""A potential and its gradient recorded once as torch operations, and replayed.

Every leapfrog step evaluates :math:`U` and :math:`\nabla U` at positions of the same shape.
For a Pyro model most of such an evaluation is Python: the handler stack, distribution
objects, autograd's graph; for a small hand-written potential, autograd's bookkeeping and one
kernel launch per operation. :class:`CompiledPotential` records one evaluation, the forward
and the backward pass as torch's dispatcher sees them
(``torch.fx.experimental.proxy_tensor.make_fx``), and afterwards replays the record:

- ``mode="trace"`` runs the recorded operations as they are: the same kernels in the same
  order, so values and gradients are bit for bit those of the eager path;
- ``mode="inductor"`` gives the record to ``torch.compile``, which fuses element-wise
  operations into generated loops: values within rounding of the eager path (the sampler then
  targets that function consistently, its accept step included). Compiling takes seconds
  (torch caches the result on disk, so a second process takes fewer) and needs a C++
  compiler on CPU.

It falls back to the eager evaluation, with one
:class:`~pyrogen.warnings.PyrogenWarning`, when recording fails (a potential that reads a
position-dependent value in Python, as ``if u > 0`` or ``.item()`` do, raises while it is
recorded, which is how control flow on the position is caught), when compiling fails, or when
the first replay disagrees with the eager evaluation it is checked against. A record is kept
per shape, dtype and device of the positions (up to :data:`MAX_RECORDS`).

What a record cannot see: Python state outside the tensors it is given that changes between
calls (a counter, a flag, a choice made with Python's ``random``), and side effects of the
potential, which happen once, while recording. Tensors the potential closes over (data,
network weights) are read at each replay, so in-place updates of them are seen.

Example:
    >>> import torch
    >>> potential = CompiledPotential(lambda z: 0.5 * (z**2).sum(-1))
    >>> u, grad = potential.value_and_grad(torch.ones(4, 3))
    >>> u.tolist(), bool(torch.equal(grad, torch.ones(4, 3)))
    ([1.5, 1.5, 1.5, 1.5], True)
"""

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pyrogen.inference.mcmc.state import PotentialFn, eager_potential_and_grad
from pyrogen.warnings import PyrogenWarning

__all__ = ["COMPILE_MODES", "MAX_RECORDS", "CompiledPotential"]

# How a potential is evaluated: "none" (eager, the default of ``sample``), or recorded.
COMPILE_MODES = ("none", "trace", "inductor")
MAX_RECORDS = 8  # shapes recorded per potential; further shapes run eagerly

_Key = tuple[tuple[int, ...], torch.dtype, torch.device]


def check_compile_mode(mode: str) -> None:
    """A ValueError naming the choices unless ``mode`` is one of :data:`COMPILE_MODES`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile_potential must be one of {COMPILE_MODES}, got {mode!r}")


class CompiledPotential:
    """``potential_fn`` with :meth:`value_and_grad` replayed from a record of its operations.

    Args:
        potential_fn: ``U``, ``(num_chains, *event_shape) -> (num_chains,)``.
        mode: ``"trace"`` (bit-exact replay) or ``"inductor"`` (fused by ``torch.compile``).

    Attributes:
        fallback: why the eager path is used, or ``None`` while replays run.

    Calling the object evaluates ``U`` eagerly (no gradient is needed there, and nothing is
    recorded); the kernels ask for :meth:`value_and_grad` through
    :func:`~pyrogen.inference.mcmc.state.potential_and_grad`.
    """

    def __init__(self, potential_fn: PotentialFn, mode: str = "trace") -> None:
        check_compile_mode(mode)
        if mode == "none":
            raise ValueError("mode 'none' needs no CompiledPotential: use the potential itself")
        if not callable(potential_fn):
            raise TypeError(f"potential_fn must be callable, got {type(potential_fn).__name__}")
        self.potential_fn = potential_fn
        self.mode = mode
        self.fallback: str | None = None
        self._records: dict[_Key, Callable[[Tensor], Any]] = {}

    def __call__(self, position: Tensor) -> Tensor:
        return self.potential_fn(position)

    def value_and_grad(self, position: Tensor) -> tuple[Tensor, Tensor]:
        """``U`` and its gradient at ``position``: the replay of this shape's record, made
        (and checked against the eager evaluation) at the first call with that shape."""
        if self.fallback is not None:
            return eager_potential_and_grad(self.potential_fn, position)
        key = (tuple(position.shape), position.dtype, position.device)
        replay = self._records.get(key)
        if replay is not None:
            u, grad = replay(position.detach())
            return u, grad
        expected = eager_potential_and_grad(self.potential_fn, position)
        if len(self._records) < MAX_RECORDS:
            self._record(key, position, expected)
        return expected

    def _record(self, key: _Key, position: Tensor, expected: tuple[Tensor, Tensor]) -> None:
        from torch.fx.experimental.proxy_tensor import make_fx

        def traced(z: Tensor) -> tuple[Tensor, Tensor]:
            return eager_potential_and_grad(self.potential_fn, z)

        try:
            graph = make_fx(traced)(position.detach())
        except Exception as exc:  # noqa: BLE001 - any failure to record falls back
            self._fall_back(f"recording the potential failed ({_short(exc)})")
            return
        replay: Callable[[Tensor], Any] = graph
        if self.mode == "inductor":
            try:
                replay = torch.compile(graph, dynamic=False)
                got = replay(position.detach())
            except Exception as exc:  # noqa: BLE001 - no compiler, or a compile error
                self._fall_back(f"torch.compile failed ({_short(exc)})")
                return
            if not _close(got, expected):
                self._fall_back("the compiled potential disagrees with the eager one")
                return
        elif not _equal(graph(position.detach()), expected):
            self._fall_back("the replayed potential differs from the eager one")
            return
        self._records[key] = replay

    def _fall_back(self, why: str) -> None:
        self.fallback = why
        self._records.clear()
        warnings.warn(
            f"compile_potential={self.mode!r}: {why}; the potential runs eagerly instead",
            PyrogenWarning,
            stacklevel=4,
        )


def _equal(got: tuple[Tensor, Tensor], expected: tuple[Tensor, Tensor]) -> bool:
    """Bit for bit (NaN where NaN)."""
    return all(
        a.shape == b.shape and torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True)
        for a, b in zip(got, expected, strict=True)
    )


def _close(got: tuple[Tensor, Tensor], expected: tuple[Tensor, Tensor]) -> bool:
    """Agreement within rounding: ``|a - b| <= 1000 eps (max |b| + 1)`` per tensor, where
    both are finite (a sum of n terms in another order moves by about ``sqrt(n) eps`` of the
    largest term; a fused loop also rounds its intermediate results differently)."""
    for a, b in zip(got, expected, strict=True):
        if a.shape != b.shape:
            return False
        finite = torch.isfinite(b)
        if not torch.equal(finite, torch.isfinite(a)):
            return False
        scale = float(b[finite].abs().max()) + 1.0 if finite.any() else 1.0
        tol = 1000 * torch.finfo(b.dtype).eps * scale
        if not bool(((a - b).abs() <= tol)[finite].all()):
            return False
    return True


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."
