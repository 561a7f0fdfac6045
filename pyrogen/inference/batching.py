r"""How a Pyro model is run for many particles or chains at once.

Vectorized particles (:func:`~pyrogen.inference.importance.draw_log_weights`) and many-chain
MCMC (:class:`~pyrogen.inference.mcmc.ModelPotential`) put a leading batch dimension on every
latent value. Three paths evaluate a model there, fastest first:

- ``"plate"``: one run of the model under a ``pyro.plate`` left of its own plates, the way
  Pyro vectorizes particles. Needs a model that broadcasts over that dimension:
  ``(X * w).sum(-1)``, not ``X @ w``.
- ``"vmap"``: ``torch.func.vmap`` over a function that runs the model for one particle or
  chain. Any model whose Python control flow does not depend on a latent value works,
  written the way Pyro users write it. For 256 chains it costs about what the plate does;
  for 8 particles 3.4x, as the guide then runs once per particle
  (``benchmarks/results/nonbroadcasting.md``), so the plate is tried first.
- ``"loop"``: one run per particle or chain, the last resort.

``"auto"`` (the default) probes once: two particles or chains evaluated together are
compared with the two evaluated one by one, for the plate path and then for vmap, and the
first that agrees is kept. A model that needs the loop gets one :class:`PyrogenWarning`
that names the failing site and line and says what to write instead. Asking for
``"plate"`` or ``"vmap"`` explicitly turns that explanation into a :class:`BatchingError`.
"""

from __future__ import annotations

import contextlib
import linecache
import re
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrogen.warnings import PyrogenWarning

__all__ = [
    "BATCHING",
    "BatchingError",
    "explain",
    "probe_rng",
    "same_values",
    "saved_rng",
    "warn_loop",
]

BATCHING = ("auto", "plate", "vmap", "loop")

ADVICE = (
    "write the model so that it broadcasts over a leading batch dimension: "
    "(X * w).sum(-1) instead of X @ w, w[..., 0] instead of w[0], x.shape[-1] instead of "
    "len(x), torch.cat/stack along dim=-1 instead of dim=0, torch.where instead of a Python "
    "if on a latent value, and no .item() or float() of one"
)

_LIBRARIES = tuple(
    str(Path(module.__file__).resolve().parent)
    for module in (torch, pyro)
    if module.__file__ is not None
) + (str(Path(__file__).resolve().parents[1]),)
_SITE = re.compile(r"pyro\.(?:sample|factor|deterministic)\(\s*[\"']([^\"']+)[\"']")


class BatchingError(ValueError):
    """A model cannot be evaluated on the batching path asked for."""


def check_batching(batching: str) -> str:
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    return batching


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame outside torch, Pyro and pyrogen: the model's line that failed."""
    seen: set[int] = set()
    found = None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame in traceback.extract_tb(current.__traceback__):
            if not str(Path(frame.filename).resolve()).startswith(_LIBRARIES):
                found = frame
        current = current.__cause__ or current.__context__
    return found


def explain(failure: BaseException | str, unit: str) -> str:
    """What went wrong when the model ran for several ``unit`` (particles, chains) at once:
    the site and line when known, torch's message, and what to write instead."""
    if isinstance(failure, str):
        return f"{failure}; {ADVICE}"
    message = str(failure).strip().splitlines()
    first = message[0] if message else type(failure).__name__
    where = ""
    frame = _user_frame(failure)
    if frame is not None:
        code = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
        site = _SITE.search(code)
        at_site = f"at site '{site.group(1)}', " if site else ""
        where = f"{at_site}line {frame.lineno} of {Path(frame.filename).name} (`{code}`): "
    return (
        f"the model fails when run for several {unit} at once: {where}"
        f"{type(failure).__name__}: {first}; {ADVICE}"
    )


def warn_loop(reason: str, unit: str) -> None:
    """The one warning of a model that runs one particle or chain at a time."""
    warnings.warn(
        f"{reason}. Neither a pyro.plate of {unit} nor torch.func.vmap evaluates this model "
        f"correctly, so it runs once per {unit[:-1]}, which is slow for many {unit}",
        PyrogenWarning,
        stacklevel=4,
    )


def same_values(batched: torch.Tensor, one_by_one: torch.Tensor) -> bool:
    """Whether a batched evaluation agrees with the one-by-one one (to rounding)."""
    if batched.shape != one_by_one.shape:
        return False
    a, b = batched.detach().double(), one_by_one.detach().double()
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4, equal_nan=True))


def _cuda_devices(values: tuple[Any, ...]) -> list[int]:
    return sorted(
        {
            v.device.index or 0
            for v in values
            if isinstance(v, torch.Tensor) and v.device.type == "cuda"
        }
    )


@contextlib.contextmanager
def probe_rng(*values: Any) -> Iterator[None]:
    """Run a probe without moving torch's generators (the CPU one, and the CUDA devices of
    the tensors among ``values``), so that what follows draws what it would have drawn."""
    with torch.random.fork_rng(devices=_cuda_devices(values)):
        yield


def saved_rng(*values: Any) -> Callable[[], None]:
    """A function that puts torch's generators back as they are now (see :func:`probe_rng`)."""
    devices = _cuda_devices(values)
    cpu = torch.get_rng_state()
    cuda = [torch.cuda.get_rng_state(d) for d in devices]

    def restore() -> None:
        torch.set_rng_state(cpu)
        for d, state in zip(devices, cuda, strict=True):
            torch.cuda.set_rng_state(state, d)

    return restore
