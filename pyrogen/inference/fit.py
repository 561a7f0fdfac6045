"""A guide fitted to a fixed data set, for posterior problems: Adam with a step schedule,
the guide's summary averaged over the last third of the steps, with its standard error.

Posterior comparisons need the point a stochastic optimiser hovers around, not its last
noisy iterate: averaging the iterates (Polyak & Juditsky 1992) over a stretch at a low,
fixed learning rate estimates it, and batch means of that stretch give its Monte Carlo error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor, nn

__all__ = ["FitResult", "Summarised", "fit_guide"]


class Summarised(Protocol):
    """A guide module; with a ``summary()`` its parameters reduce to one vector (means,
    variances...), else the vector is its parameters."""

    def parameters(self) -> Any: ...


class FitResult(NamedTuple):
    """The guide's summary averaged over the last third of the steps, its batch-means
    standard error (10 batches), the fit's wall time in seconds, and its gradient
    evaluations (steps times particles)."""

    average: Tensor
    stderr: Tensor
    seconds: float
    gradient_evaluations: int = 0


def _summary(guide: Any) -> Tensor:
    if hasattr(guide, "summary"):
        return guide.summary()
    return torch.cat([p.detach().reshape(-1) for p in guide.parameters()])


def fit_guide(
    model: Callable[..., Any],
    guide: Summarised,
    objective: Callable[..., nn.Module],
    *args: Any,
    num_steps: int = 3000,
    lr: float = 0.02,
    seed: int = 0,
    **kwargs: Any,
) -> FitResult:
    """Fit ``guide`` to ``model(*args, **kwargs)`` under ``objective`` (a pyrogen objective,
    used in its module form ``objective(model, guide)``) by Adam at ``lr``, cut by 0.3 at
    each third of ``num_steps``; average the guide's summary over the last third, and leave
    the guide at its parameters averaged over that stretch (Polyak averaging).

    A guide whose parameters appear on its first call (Pyro's autoguides) is called once
    first.

    Example:
        >>> from pyrogen.inference import RenyiBound
        >>> from pyrogen.models.correlated_gaussian import CorrelatedGaussian, MeanFieldGuide
        >>> target = CorrelatedGaussian()
        >>> fit = fit_guide(target.model, MeanFieldGuide(2), RenyiBound(1.0, 10), num_steps=90)
        >>> fit.average.shape, fit.gradient_evaluations
        (torch.Size([4]), 900)
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 30:
        raise ValueError(f"num_steps must be an int of at least 30, got {num_steps!r}")
    pyro.set_rng_seed(seed)
    with poutine.block():
        guide(*args, **kwargs)  # type: ignore[operator]
    loss = objective(model, guide)
    params = list(guide.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    third = num_steps // 3
    sched = torch.optim.lr_scheduler.StepLR(opt, third, 0.3)
    kept = []
    averaged = [torch.zeros_like(p) for p in params]
    start = time.perf_counter()
    for i in range(num_steps):
        opt.zero_grad()
        loss(*args, **kwargs).backward()
        opt.step()
        sched.step()
        if i >= num_steps - third:
            kept.append(_summary(guide))
            for a, p in zip(averaged, params, strict=True):
                a.add_(p.detach(), alpha=1.0 / third)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for a, p in zip(averaged, params, strict=True):
            p.copy_(a)
    trace = torch.stack(kept[: third - third % 10])
    batches = trace.reshape(10, -1, trace.shape[-1]).mean(1)
    particles = int(getattr(objective, "num_particles", 1))
    return FitResult(trace.mean(0), batches.std(0) / math.sqrt(10), seconds, num_steps * particles)
