r"""A potential and its gradient recorded once as torch operations, and replayed.

Every leapfrog step evaluates :math:`U` and :math:`\nabla U` at positions of the same shape.
For a Pyro model most of such an evaluation is Python: the handler stack, distribution
objects, autograd's graph; for a small hand-written potential, autograd's bookkeeping and one
kernel launch per operation. :class:`CompiledPotential` records one evaluation, forward and
backward, with :class:`~pyrogen.inference.recording.Recorder` and replays it: ``"trace"``
bit for bit, ``"inductor"`` fused by ``torch.compile`` within rounding (the sampler then
targets that function consistently, its accept step included). The recorder's module says
how records are checked, when they fall back to the eager evaluation (with a warning:
control flow on the position, a failing compiler) and what a record cannot see.

Example:
    >>> import torch
    >>> potential = CompiledPotential(lambda z: 0.5 * (z**2).sum(-1))
    >>> u, grad = potential.value_and_grad(torch.ones(4, 3))
    >>> u.tolist(), bool(torch.equal(grad, torch.ones(4, 3)))
    ([1.5, 1.5, 1.5, 1.5], True)
"""

from torch import Tensor

from pyrogen.inference.mcmc.state import PotentialFn, eager_potential_and_grad
from pyrogen.inference.recording import MAX_RECORDS, MODES, Recorder, check_mode

__all__ = ["COMPILE_MODES", "MAX_RECORDS", "CompiledPotential", "check_compile_mode"]

COMPILE_MODES = MODES  # "none" (the eager path, sample's default), "trace", "inductor"


def check_compile_mode(mode: str) -> None:
    """A ValueError naming the choices unless ``mode`` is one of :data:`COMPILE_MODES`."""
    check_mode("compile_potential", mode)


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
        self._recorder = Recorder(self._eager, mode, f"compile_potential={mode!r}")

    @property
    def fallback(self) -> str | None:
        return self._recorder.fallback

    def __call__(self, position: Tensor) -> Tensor:
        return self.potential_fn(position)

    def _eager(self, position: Tensor) -> tuple[Tensor, Tensor]:
        return eager_potential_and_grad(self.potential_fn, position)

    def value_and_grad(self, position: Tensor) -> tuple[Tensor, Tensor]:
        """``U`` and its gradient at ``position``: the replay of this shape's record, made
        (and checked against the eager evaluation) at the first call with that shape."""
        u, grad = self._recorder(position.detach())
        return u, grad
