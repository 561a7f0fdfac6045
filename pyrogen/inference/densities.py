r"""Per-row log-densities of a Pyro program: :math:`\log \tilde p(x_n)` for each row.

Exact from the model's trace (the sum of its log-factors and observed log-densities at
index :math:`n` of the data plate) when the guide has no latents; else a :math:`K`-particle
bound (IWAE or ELBO) from :func:`~pyrogen.inference.importance.draw_log_weights`. NCE and
self-contrastive estimation score data and noise with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyrogen.inference.importance import LogWeights, ParticlePath, draw_log_weights
from pyrogen.inference.objective import empty_guide
from pyrogen.inference.renyi import renyi_reduce

__all__ = ["Bound", "exact_log_density", "log_density"]


class Bound:
    r"""Settings of the bound that stands for :math:`\\log \tilde p(x)` with a guide: the
    order (``alpha`` 0 for IWAE, 1 for the ELBO), particles, and the plate nesting (found
    on the first call and kept)."""

    def __init__(
        self,
        alpha: float,
        num_particles: int,
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
    ) -> None:
        self.alpha = alpha
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting
        self.vectorize_particles = vectorize_particles
        self.particle_path = ParticlePath()

    def log_weights(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> LogWeights:
        w, self.max_plate_nesting = draw_log_weights(
            model,
            guide,
            args,
            kwargs,
            self.num_particles,
            self.max_plate_nesting,
            self.vectorize_particles,
            batching=self.particle_path.get(model, guide),
        )
        if self.vectorize_particles and self.num_particles > 1:
            self.particle_path.keep(model, guide, w.batching)
        return w


def has_guide(guide: Callable[..., Any] | None) -> bool:
    return guide is not None and guide is not empty_guide


# Per-point log-densities.
def _data_frame_dim(name: str, site: Any, n: int) -> int:
    frames = [
        f for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None and f.size == n
    ]
    if not frames:
        raise ValueError(
            f"site '{name}' is not inside a pyro.plate over the {n} data rows: the "
            "objective needs its log-density per data point, so every factor, observed and "
            "latent site must sit in the data plate"
        )
    if len(frames) > 1:
        raise ValueError(
            f"site '{name}' sits in {len(frames)} plates of size {n} "
            f"({[f.name for f in frames]}): which one holds the data rows is ambiguous"
        )
    return int(frames[0].dim)


def per_row(name: str, site: Any, value: Tensor, n: int, event_dim: int = 0) -> Tensor:
    """A site's ``value`` with the data plate's dimension first and everything else of one
    row flattened, ``(n, -1)``; ``event_dim`` trailing dimensions are the row's own."""
    dim = _data_frame_dim(name, site, n) - event_dim
    if value.dim() < -dim:
        value = value.reshape((1,) * (-dim - value.dim()) + tuple(value.shape))
    value = value.movedim(dim, 0)
    return value.reshape(value.shape[0], -1).expand(n, -1)


def site_log_prob_per_row(name: str, site: Any, n: int) -> Tensor:
    """A sample site's log-density (masked) summed per index of the data plate, ``(n,)``."""
    fn: Any = site["fn"]
    lp = fn.log_prob(site["value"], *site["args"], **site["kwargs"])
    if not isinstance(lp, Tensor):
        lp = torch.as_tensor(lp)
    if site["mask"] is not None:
        mask = torch.as_tensor(site["mask"], device=lp.device)
        lp = torch.where(mask, lp, lp.new_zeros(()))
    return per_row(name, site, lp, n).sum(1)


def exact_log_density(trace: Trace, n: int) -> Tensor:
    """Sum of log-factors and observed log-densities per index of the data plate, ``(n,)``."""
    total: Tensor | None = None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if not site["is_observed"]:
            raise ValueError(
                f"the model samples the latent site '{name}', but the guide has none: give a "
                "guide for the latent variables (the density is then a bound), or integrate "
                "them out in the energy"
            )
        lp = site_log_prob_per_row(name, site, n)
        total = lp if total is None else total + lp
    if total is None:
        raise ValueError("the model has no factor or observed site: it scores nothing")
    return total


def log_density(
    model: Callable[..., Any],
    guide: Callable[..., Any] | None,
    x: Tensor,
    bound: Bound,
) -> Tensor:
    r""":math:`\log \tilde p(x_n)` per row, ``(n,)``: exact from the model's trace without a
    guide, else the bound (IWAE or ELBO) with the guide's particles."""
    n = x.shape[0]
    if not has_guide(guide):
        return exact_log_density(poutine.trace(model).get_trace(x), n)
    assert guide is not None
    w = bound.log_weights(model, guide, (x,), {})
    if w.score is not None:
        raise ValueError(
            "NCE with a latent-variable model needs reparameterized guide sites (the bound's "
            "gradient goes through the sampled latents); the guide has sites without rsample"
        )
    per_point = renyi_reduce(w.log_weight, bound.alpha)
    if per_point.numel() != n:
        raise ValueError(
            f"expected one bound per data row ({n}), got shape {tuple(per_point.shape)}: put "
            "every latent site inside the data plate"
        )
    return per_point.reshape(n)


def held_fixed(guide: Callable[..., Any]) -> Callable[..., Any]:
    """The guide run without autograd: its draws and densities carry no gradient."""

    def fixed(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return guide(*args, **kwargs)

    return fixed


def model_parameters(model: Callable[..., Any], data: Tensor) -> list[Tensor]:
    """The unconstrained leaves of the Pyro parameters the model reads (one run on a row,
    latents from the prior, without autograd, leaving the random streams as they were)."""
    devices = [data.device] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices), torch.no_grad(), poutine.block():
        trace = poutine.trace(model, param_only=True).get_trace(data[:1])
    store = dict(pyro.get_param_store().named_parameters())
    return [store[name] for name, site in trace.nodes.items() if name in store]
