r"""Annealed importance sampling of :math:`\log p(x)` for Pyro models with local latents.

Annealed Importance Sampling (Neal, 2001), https://arxiv.org/abs/physics/9803008, as the
evaluation of latent-variable models in On the Quantitative Analysis of Decoder-Based
Generative Models (Wu et al., 2017), https://arxiv.org/abs/1611.04273, and in the AVB
paper's code. For each data point :math:`x_n` the chains move from the prior
:math:`p(z)` (or a Gaussian :math:`r(z)`, ``start``) to the posterior through
:math:`f_\beta(z) = p(z)\,p(x_n \mid z)^\beta` (or :math:`r^{1-\beta} p(x_n, z)^\beta`),
:math:`0 = \beta_0 < \dots < \beta_T = 1`, with HMC transitions that leave each
:math:`f_{\beta_t}` invariant; the log-weight is
:math:`\sum_t (\beta_t - \beta_{t-1}) \log p(x_n \mid z_{t-1})`. Its exponential is unbiased
for :math:`p(x_n)`, so the log of the mean weight is a stochastic *lower* bound.
Run backwards from exact posterior draws (``reverse_from``, bidirectional Monte Carlo,
Grosse et al. 2015, https://arxiv.org/abs/1511.02543) it bounds :math:`\log p(x_n)` from
*above*. The two bracket the truth and meet as the schedule lengthens.

Chains and data points are tensor dimensions: every (chain, point) pair is one HMC chain of
the kernel in :mod:`pyrogen.inference.mcmc.hmc`, each with its own step size, adapted
towards an acceptance of 0.65 as the AVB evaluation code does. The latent sites sit inside
one data plate (dim -1); constrained ones (a positive scale, a simplex) are annealed in
unconstrained coordinates, Pyro's ``biject_to(support)`` as its HMC does, with the prior's
density there (times ``|det J|``), which leaves :math:`p(x_n)` unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import Tensor
from torch.distributions import Transform, biject_to
from tqdm.auto import tqdm

from pyrogen.compat import is_subsample
from pyrogen.inference.mcmc import hmc

__all__ = ["LatentAIS", "ais_log_likelihood"]


class LatentAIS(NamedTuple):
    """Per-point estimates of :math:`\\log p(x_n)` and their spread.

    Attributes:
        per_point: the estimate for each data point, ``(n,)``.
        mc_stderr: its Monte Carlo standard error (delta method over the chains), ``(n,)``.
        mean: the mean over data points.
        stderr: the standard error of that mean over data points (``nan`` for one point).
        log_weights: ``(num_chains, n)`` (of the reverse runs, whose weights estimate
            :math:`1/p(x_n)`, when ``reverse``).
        acceptance: the mean HMC acceptance over all transitions.
        reverse: whether this is the reverse (upper) estimate.
        step_sizes: the step-size schedule used, ``(num_steps, n)`` (pass it to the other
            direction so that both run the same kernels).
    """

    per_point: Tensor
    mc_stderr: Tensor
    mean: float
    stderr: float
    log_weights: Tensor
    acceptance: float
    reverse: bool
    step_sizes: Tensor


class _Site(NamedTuple):
    name: str
    shape: torch.Size  # the site's event shape, constrained
    transform: Transform  # unconstrained -> the site's support (Pyro's biject_to)
    size: int  # length of the flattened unconstrained event


def _latent_layout(model: Callable[..., Any], data: Tensor) -> list[_Site]:
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(model).get_trace(data)
    layout = []
    n = data.shape[0]
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or is_subsample(site["fn"]):
            continue
        fn: Any = site["fn"]
        if fn.support.is_discrete:
            raise ValueError(f"latent site '{name}' is discrete: AIS here takes continuous ones")
        if not any(f.dim == -1 and f.size == n for f in site["cond_indep_stack"]):
            raise ValueError(
                f"latent site '{name}' must sit in the data plate of size {n} (dim -1)"
            )
        transform = biject_to(fn.support)
        size = max(1, math.prod(transform.inv.forward_shape(fn.event_shape)))
        layout.append(_Site(name, fn.event_shape, transform, size))
    if not layout:
        raise ValueError("the model has no latent site: its log p(x) needs no AIS")
    return layout


class _Target:
    """``log p(z)`` and ``log p(x | z)`` per (chain, point) for latents ``(C, n, d)``."""

    def __init__(
        self,
        model: Callable[..., Any],
        data: Tensor,
        num_chains: int,
        start: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.model, self.data, self.c, self.n = model, data, num_chains, data.shape[0]
        self.layout = _latent_layout(model, data)
        self.sizes = [site.size for site in self.layout]
        self.dim = sum(self.sizes)
        self.start = None
        if start is not None:
            loc, scale = (torch.as_tensor(t, dtype=data.dtype, device=data.device) for t in start)
            if loc.shape != (self.n, self.dim) or scale.shape != (self.n, self.dim):
                raise ValueError(
                    f"start must be (loc, scale), each of shape {(self.n, self.dim)}: a "
                    "diagonal Gaussian per data point over its flattened latents"
                )
            if not bool((scale > 0).all()):
                raise ValueError("start's scale must be positive")
            self.start = dist.Normal(loc, scale).to_event(1)

    def log_parts(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(log of the start density, log p(x, z))``, each ``(C, n)``; the start is the
        prior unless a Gaussian was given."""
        prior, lik = self.log_densities(z)
        if self.start is None:
            return prior, prior + lik
        return self.start.log_prob(z.reshape(self.c, self.n, self.dim)), prior + lik

    def draw_start(self) -> Tensor:
        if self.start is None:
            return self.draw_prior()
        draws = self.start.sample(torch.Size([self.c]))
        return draws.reshape(self.c * self.n, self.dim)

    def _values(self, z: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The sites' values from unconstrained latents, and ``log |det J|`` ``(C, n)``."""
        parts = z.reshape(self.c, self.n, self.dim).split(self.sizes, -1)
        values = {}
        log_det = z.new_zeros(self.c, self.n)
        for site, part in zip(self.layout, parts, strict=True):
            u = part.reshape(self.c, self.n, *site.transform.inv.forward_shape(site.shape))
            value = site.transform(u)
            values[site.name] = value
            jac = site.transform.log_abs_det_jacobian(u, value)
            log_det = log_det + jac.reshape(self.c, self.n, -1).sum(-1)
        return values, log_det

    def log_densities(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(log prior, log likelihood)``, each ``(C, n)``; the prior is the density of the
        unconstrained latents (the sites' densities times ``|det J|``)."""
        values, log_det = self._values(z)
        conditioned = poutine.condition(self.model, data=values)
        with pyro.plate("ais_chains", self.c, dim=-2), poutine.block():
            trace = poutine.trace(conditioned).get_trace(self.data)
        prior = log_det
        lik = torch.zeros_like(prior)
        latent = {site.name for site in self.layout}
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or is_subsample(site["fn"]):
                continue
            fn: Any = site["fn"]
            lp = torch.broadcast_to(fn.log_prob(site["value"]), (self.c, self.n))
            if name in latent:
                prior = prior + lp
            else:
                lik = lik + lp
        return prior, lik

    def draw_prior(self) -> Tensor:
        with torch.no_grad(), pyro.plate("ais_chains", self.c, dim=-2), poutine.block():
            trace = poutine.trace(self.model).get_trace(self.data)
        parts = []
        for site in self.layout:
            value: Any = trace.nodes[site.name]["value"]
            value = torch.broadcast_to(value, (self.c, self.n, *site.shape))
            parts.append(site.transform.inv(value).reshape(self.c, self.n, -1))
        return torch.cat(parts, -1).reshape(self.c * self.n, self.dim)


def ais_log_likelihood(
    model: Callable[..., Any],
    data: Tensor,
    *,
    num_chains: int = 8,
    num_steps: int = 1000,
    num_leapfrog: int = 10,
    step_size: float = 0.05,
    target_accept: float | None = 0.65,
    start: tuple[Tensor, Tensor] | None = None,
    reverse_from: Tensor | None = None,
    step_sizes: Tensor | None = None,
    pilot_chains: int | None = None,
    progress: bool = False,
) -> LatentAIS:
    r"""AIS estimate of :math:`\log p(x_n)` for every row of ``data``.

    Args:
        model: a Pyro program ``model(x)`` whose latent sites (continuous) and observed
            sites sit in a data plate over the rows of ``x`` at dim -1.
        data: rows ``(n, ...)``.
        num_chains: AIS runs per data point (the AVB evaluation code uses 5 to 8).
        num_steps: temperatures of the linear schedule (AVB's code: 1000 to 2000).
        num_leapfrog: leapfrog steps per HMC transition (10, as there).
        step_size: the initial step size of the pilot run, which adapts it per chain
            towards ``target_accept`` (times 1.02 after an acceptance above it, divided
            otherwise) along the schedule; the estimate then runs with that schedule fixed
            (a kernel that adapted as it went would bias the estimate, the reverse one most:
            5 standard errors below the truth in our Gaussian test). ``target_accept=None``
            keeps ``step_size`` throughout.
        step_sizes: a schedule ``(num_steps, n)`` to use instead (from another run's
            result), forward order.
        pilot_chains: chains per data point in the pilot run (default ``num_chains``);
            fewer make the pilot cheaper, and any fixed schedule keeps the estimate valid.
        start: ``(loc, scale)``, each ``(n, d)``: anneal from this diagonal Gaussian per data
            point over the unconstrained latents (e.g. fitted to guide samples) instead of
            the prior; the closer to the
            posterior, the fewer temperatures are needed (at the exact posterior one is
            exact).
        reverse_from: exact posterior draws ``(num_chains, n, d)`` (the latents of a row in
            unconstrained coordinates, e.g. the log of a scale, flattened and concatenated
            in the model's order): run the schedule backwards from them, for the upper side.
        progress: show a progress bar over the temperatures.

    Returns:
        :class:`LatentAIS`.
    """
    if pilot_chains is None:
        pilot_chains = num_chains
    checks = (("num_chains", num_chains), ("num_steps", num_steps), ("pilot_chains", pilot_chains))
    for name, value in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(data, Tensor) or data.dim() < 1 or data.shape[0] == 0:
        raise ValueError("data must be a tensor of rows (n, ...) with n >= 1")
    target = _Target(model, data, num_chains, start)
    n = data.shape[0]
    betas = torch.linspace(0.0, 1.0, num_steps + 1, dtype=data.dtype, device=data.device)
    if step_sizes is None:
        if target_accept is None:
            step_sizes = torch.full((num_steps, n), step_size, dtype=data.dtype)
        else:  # a pilot forward run tunes the schedule, which the real runs then keep fixed
            pilot_target = _Target(model, data, pilot_chains, start)
            pilot = _anneal(
                pilot_target,
                pilot_target.draw_start().to(data),
                betas,
                step_size,
                num_leapfrog,
                target_accept,
                None,
                progress,
            )
            step_sizes = pilot[2]
    if tuple(step_sizes.shape) != (num_steps, n):
        raise ValueError(
            f"step_sizes must have shape {(num_steps, n)}, got {tuple(step_sizes.shape)}"
        )
    reverse = reverse_from is not None
    if reverse_from is not None:
        expected = (num_chains, n, target.dim)
        if tuple(reverse_from.shape) != expected:
            raise ValueError(
                f"reverse_from must have shape {expected}, got {tuple(reverse_from.shape)}"
            )
        exact = reverse_from.reshape(-1, target.dim).to(data)
        log_w, accepted, _ = _anneal(
            target,
            exact,
            betas.flip(0),
            step_size,
            num_leapfrog,
            None,
            step_sizes.flip(0),
            progress,
        )
    else:
        log_w, accepted, _ = _anneal(
            target,
            target.draw_start().to(data),
            betas,
            step_size,
            num_leapfrog,
            None,
            step_sizes,
            progress,
        )
    log_w = log_w.reshape(num_chains, data.shape[0])
    # forward: log w, unbiased for p(x); reverse: unbiased for 1 / p(x), so minus the log
    # of its mean bounds log p(x) from above.
    log_mean = torch.logsumexp(log_w, 0) - math.log(num_chains)
    ratio = torch.softmax(log_w, 0) * num_chains  # each weight over their mean
    mc = (
        (ratio.var(0) / num_chains).sqrt()
        if num_chains > 1
        else torch.full_like(log_mean, math.nan)
    )
    per_point = -log_mean if reverse else log_mean
    n = per_point.numel()
    return LatentAIS(
        per_point,
        mc,
        float(per_point.mean()),
        float(per_point.std() / math.sqrt(n)) if n > 1 else math.nan,
        log_w,
        accepted,
        reverse,
        step_sizes,
    )


def _anneal(
    target: _Target,
    z: Tensor,
    betas: Tensor,
    step_size: float,
    num_leapfrog: int,
    target_accept: float | None,
    step_sizes: Tensor | None,
    progress: bool,
) -> tuple[Tensor, float, Tensor]:
    """One annealing pass along ``betas``: (log-weights, mean acceptance, the step sizes
    used per temperature and data point ``(T, n)``, each the median over that point's
    chains). With ``target_accept`` the step sizes adapt as they go; else they follow
    ``step_sizes``."""
    c, n = target.c, target.n
    log_w = torch.zeros(c * n, dtype=z.dtype, device=z.device)
    eps = torch.full_like(log_w, step_size)
    used = []
    accepted = 0.0
    num_steps = betas.numel() - 1
    for t in tqdm(range(1, num_steps + 1), disable=not progress, desc="AIS"):
        with torch.no_grad():
            log_base, log_joint = target.log_parts(z)
        log_w = log_w + (betas[t] - betas[t - 1]) * (log_joint - log_base).reshape(-1)
        beta = betas[t]

        def potential(flat: Tensor, beta: Tensor = beta) -> Tensor:
            log_base, log_joint = target.log_parts(flat)
            return -((1 - beta) * log_base + beta * log_joint).reshape(-1)

        if step_sizes is not None:
            eps = step_sizes[t - 1].to(z).expand(c, n).reshape(-1)
        used.append(eps.reshape(c, n).median(0).values)
        state, info = hmc.step(hmc.init(z, potential), potential, eps, num_leapfrog)
        z = state.position.detach()
        if target_accept is not None:
            eps = torch.where(info.acceptance_prob > target_accept, eps * 1.02, eps / 1.02)
        accepted += float(info.acceptance_prob.mean())
    return log_w, accepted / num_steps, torch.stack(used)
