r"""Draws from a fitted guide, with the densities that diagnose it.

A variational posterior is only as good as its fit, and the fit is judged on draws: their
latent values, :math:`\log p(x, z)`, :math:`\log q(z)` and the importance log-weights
:math:`\log w = \log p(x, z) - \log q(z)`. :func:`draw_guide` returns all of them from one
vectorized run of model and guide (the draws a dimension, never a loop);
:func:`~pyrogen.metrics.psis.psis_khat` reads the Pareto tail of the weights, and
:func:`~pyrogen.metrics.arviz.to_arviz` turns the draws into ArviZ data beside an MCMC run.

The weights follow :func:`pyrogen.inference.importance.log_weights`: one per draw for a model
whose latents are global (a posterior), one per draw and data point when every site shares
the data plate (a VAE's local latents).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro.poutine as poutine
import torch
from torch import Tensor

from pyrogen.compat import is_subsample, is_unconditioned_deterministic
from pyrogen.inference.importance import (
    _plate_nesting,
    check_traces,
    in_plate,
    is_auxiliary,
    is_implicit,
    log_weights,
    trace_pair,
)

__all__ = ["GuideDraws", "draw_guide"]

PARTICLES = "guide_draws"


class GuideDraws(NamedTuple):
    r"""``num_samples`` draws of a guide, weighed by the model.

    Attributes:
        samples: per latent site of the guide (and per ``pyro.deterministic`` site of the
            model), its values with the draws first: ``(S, *shape)``, in the site's own
            (constrained) space; plate dimensions the site does not use are dropped.
        log_p: :math:`\log p(x, z_s)`, shape ``(S,)``, or ``(S, N)`` when every site shares
            a plate of N data points.
        log_q: :math:`\log q(z_s)`, the same shape.
    """

    samples: dict[str, Tensor]
    log_p: Tensor
    log_q: Tensor

    @property
    def log_weight(self) -> Tensor:
        r""":math:`\log p(x, z_s) - \log q(z_s)`."""
        return self.log_p - self.log_q

    @property
    def num_samples(self) -> int:
        return int(self.log_p.shape[0])


def _plate_dims(site: Any) -> frozenset[int]:
    """The dims of the plates a site sits in, the draws' plate left out."""
    return frozenset(
        f.dim
        for f in site["cond_indep_stack"]
        if f.vectorized and f.dim is not None and f.name != PARTICLES
    )


def _draws_first(
    value: Tensor, batch_dims: int, particle_dim: int, plates: frozenset[int]
) -> Tensor:
    """Move the draws' dimension (``particle_dim`` counted from the right of the batch
    shape) to the front and drop the size-one batch dimensions of plates the site is not in
    (a global latent broadcast against the data plate); its own plates stay, size one too."""
    axis = batch_dims - particle_dim
    value = value.movedim(axis, 0)

    def own(d: int) -> bool:  # dim d after the move, as a negative batch dim before it
        return ((d - 1 if d <= axis else d) - batch_dims) in plates

    keep = [0] + [d for d in range(1, batch_dims) if value.shape[d] != 1 or own(d)]
    shape = [value.shape[d] for d in keep] + list(value.shape[batch_dims:])
    return value.reshape(shape)


def _flat(t: Tensor, shared: frozenset[int]) -> Tensor:
    """(S, 1, ..., N, 1) -> (S, N): the draws first, then the plates every site shares."""
    dims = t.dim()
    return t.reshape(
        t.shape[0], *[s for d, s in enumerate(t.shape) if d > 0 and (s != 1 or d - dims in shared)]
    )


@torch.no_grad()
def draw_guide(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 1000,
    max_plate_nesting: float = math.inf,
    **kwargs: Any,
) -> GuideDraws:
    r"""Draw ``num_samples`` latents from ``guide(*args, **kwargs)`` and weigh them by
    ``model(*args, **kwargs)``, in one vectorized run (an outermost ``pyro.plate``).

    Args:
        model, guide: the Pyro programs; the guide's parameters as they are now (no
            gradient is kept).
        num_samples: S.
        max_plate_nesting: plate dimensions of model and guide; at infinity one
            unvectorized run finds it (and checks that the two programs match).

    Raises:
        ValueError: for a guide with implicit sites (no density, so no weights: AVB's
            guides), or ``num_samples < 1``.

    Example:
        >>> import torch
        >>> from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian
        >>> model = ConjugateGaussian(dim=2)
        >>> guide = AmortizedGaussianGuide(dim=2).exact(model)
        >>> draws = draw_guide(model, guide, torch.zeros(3, 2), num_samples=100)
        >>> draws.samples["z"].shape, draws.log_weight.shape
        (torch.Size([100, 3, 2]), torch.Size([100, 3]))
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    nesting = max_plate_nesting
    if nesting == math.inf:
        with poutine.block():
            pair = trace_pair(model, guide, args, kwargs)
        check_traces(*pair)
        nesting = _plate_nesting([pair])
    plate = (PARTICLES, num_samples, -int(nesting) - 1)
    model_trace, guide_trace = trace_pair(
        in_plate(model, *plate), in_plate(guide, *plate), args, kwargs
    )
    sample_sites = [
        (name, site) for name, site in guide_trace.nodes.items() if site["type"] == "sample"
    ]
    auxiliary = any(is_auxiliary(site) for _, site in sample_sites)
    implicit = [name for name, site in sample_sites if is_implicit(site, auxiliary)]
    if implicit:
        raise ValueError(
            f"the guide's sites {implicit} are implicit (no density): its draws have no "
            "importance weights; draw them with poutine.trace(guide) instead"
        )
    weights = log_weights(
        [(model_trace, guide_trace)], int(nesting) + 1, particle_plate=True, want_direct=True
    )
    assert weights.direct_log_q is not None
    sites = [
        site
        for trace in (model_trace, guide_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample" and not is_subsample(site["fn"])
    ]
    shared = frozenset.intersection(*[_plate_dims(site) for site in sites])
    log_q = _flat(weights.direct_log_q, shared)
    log_p = _flat(weights.log_weight, shared) + log_q
    particle_dim = int(nesting) + 1

    def draws_of(site: Any) -> Tensor:
        batch_dims = len(site["fn"].batch_shape)
        return _draws_first(site["value"], batch_dims, particle_dim, _plate_dims(site))

    samples = {
        name: draws_of(site)
        for name, site in sample_sites
        if not site["is_observed"] and not is_subsample(site["fn"]) and not is_auxiliary(site)
    }
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and is_unconditioned_deterministic(site):
            samples[name] = draws_of(site)
    return GuideDraws(samples, log_p, log_q)
