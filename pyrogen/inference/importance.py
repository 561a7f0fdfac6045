r"""Importance log-weights of a model/guide pair, one per particle and data point.

Every bound in the Rényi family, and the importance-sampled log-likelihood, reduces the same
quantity: for particles :math:`z_k \sim q(z \mid x)`,

.. math:: \log w_k = \log p(x, z_k) - \log q(z_k \mid x).

:func:`log_weights` computes it from Pyro traces with the particle dimension first and, after
it, the dimensions of the plates that *every* sample site shares (the data points). Plates
that not every site shares are summed out. So a model whose sites all sit in one data plate
gets one weight per particle and data point (a bound per data point, as Pyro does), while a
model with a global latent outside that plate gets one weight per particle for the whole data
set, which is the only correct choice: a global latent couples the data points.


Drawing the particles is a component of its own, :func:`draw_log_weights`: the Rényi
family, NCE's bounds and :func:`pyrogen.metrics.log_likelihood` call it; an objective that
weighs no particles (GANs, CD, AVB's critic) never touches it. It refuses guides with
*implicit* sites, whose value comes from a network and has no usable density (see
:func:`check_traces`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import Delta
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled
from pyro.poutine import Trace
from pyro.util import check_model_guide_match, check_site_shape

from pyrogen.compat import is_subsample
from pyrogen.inference.batching import (
    BatchingError,
    check_batching,
    explain,
    probe_rng,
    same_values,
    saved_rng,
    warn_loop,
)
from pyrogen.inference.log_density import log_prob


class LogWeights(NamedTuple):
    r"""Log importance weights of a batch of particles.

    Attributes:
        log_weight: :math:`\log p(x, z_k) - \log q(z_k \mid x)`, shape ``(K, *plates)``: the
            particle dimension first, then ``max_plate_nesting`` plate dimensions of which
            only those shared by every site may be larger than one. Differentiable along
            the reparameterized path and through every parameter.
        score: the summed :math:`\log q(z_k \mid x)` of the guide sites that are not
            reparameterizable, in the same shape, or ``None`` when there are none. Its
            gradient is the score function those sites need.
        scale: a scale shared by every site (``pyro.plate`` subsampling, ``poutine.scale``);
            the weights are unscaled and a bound is multiplied by it afterwards. When the
            sites carry different scales the weights are built from scaled log-densities
            instead and ``scale`` is 1 (exact for the ELBO, Pyro's convention otherwise).
        guide_traces: the guide traces the weights came from: one when particles are
            vectorized, one per particle otherwise (for gradient hooks on latent values).
        direct_log_q: :math:`\log q_\phi(\bar z_k \mid x)` with the sample values detached,
            so that its gradient is the score term alone; only computed on request (DReG).
        model_traces: the model traces, paired with ``guide_traces``; ``None`` when the
            model ran under ``torch.func.vmap`` (its traces stay inside; replaying the model
            on ``guide_traces`` gives them).
        batching: how the particles were drawn and weighed: ``"plate"`` (one run of each
            program under a particle plate), ``"vmap"`` (the guide once per particle, the
            model under ``torch.func.vmap``) or ``"loop"`` (both once per particle).
    """

    log_weight: torch.Tensor
    score: torch.Tensor | None
    scale: float | torch.Tensor
    guide_traces: list[Trace]
    direct_log_q: torch.Tensor | None
    model_traces: list[Trace] | None = None
    batching: str = "plate"


def _sample_sites(trace: Trace) -> list[tuple[str, Any]]:
    # Sites are Pyro messages (a TypedDict whose "fn" is typed as a plain callable).

    return [
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not is_subsample(site["fn"])
    ]


def is_auxiliary(site: Any) -> bool:
    """Whether a guide site is one of Pyro's auxiliary latents (``infer={"is_auxiliary":
    True}``: the unconstrained draws of ``AutoNormal``, ``AutoMultivariateNormal``...)."""
    return bool(site["infer"].get("is_auxiliary"))


def is_implicit(site: Any, auxiliary: bool = False) -> bool:
    """Whether a guide site has no usable density: marked ``infer={"implicit": True}``, or
    a ``Delta`` (its log-density is 0 or -inf, never log q) in a guide with no auxiliary
    sites. With auxiliary sites (``auxiliary=True``), a ``Delta`` is the value of a
    transform of them and its ``log_density`` the transform's log-Jacobian term, as Pyro's
    autoguides write it: the auxiliary densities and these terms together are log q."""
    if site["infer"].get("implicit"):
        return True
    fn = site["fn"]
    while hasattr(fn, "base_dist"):  # Independent, MaskedDistribution, ...
        fn = fn.base_dist
    return isinstance(fn, Delta) and not auxiliary


def _pad(
    t: torch.Tensor | float, ndim: int, like: torch.Tensor, sum_extra: bool = False
) -> torch.Tensor:
    """Left-pad a site's batch-shaped log-density to ``ndim`` dimensions. Batch dimensions
    left of every plate are summed when ``sum_extra`` (one particle at a time: they
    belong to no data point, and Trace_ELBO sums them too), else refused."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() > ndim and sum_extra:
        t = t.sum(tuple(range(t.dim() - ndim)))
    if t.dim() > ndim:
        raise ValueError(
            f"a log-density of shape {tuple(t.shape)} has more batch dimensions than "
            f"max_plate_nesting={ndim}: declare every batch dimension with pyro.plate"
        )
    return t.reshape((1,) * (ndim - t.dim()) + tuple(t.shape))


def _reduce(t: torch.Tensor, keep: frozenset[int]) -> torch.Tensor:
    """Sum every dimension of ``t`` that is not in ``keep`` (keeping dims)."""
    dims = [d for d in range(t.dim()) if d not in keep and t.shape[d] > 1]
    return t.sum(dims, keepdim=True) if dims else t


def _common_scale(scales: Sequence[Any]) -> float | torch.Tensor | None:
    """The scale every site shares, or None when they differ."""
    first = scales[0]
    for s in scales[1:]:
        if s is first:
            continue
        if isinstance(s, numbers.Number) and isinstance(first, numbers.Number):
            if s != first:
                return None
        elif isinstance(s, torch.Tensor) and isinstance(first, torch.Tensor):
            if s.shape != first.shape or not bool((s == first).all()):
                return None
        else:
            return None
    return first


def check_traces(
    model_trace: Trace,
    guide_trace: Trace,
    max_plate_nesting: float = math.inf,
    point_masses: bool = False,
) -> None:
    """Refuse what the bounds cannot handle, with a message that names the site; then,
    while Pyro's validation is enabled, Pyro's own checks of a model/guide pair
    (``pyro.util.check_model_guide_match``: shapes that disagree at a site, a plate of the
    guide missing from the model, a ``pyro.factor`` in the guide without ``has_rsample``).

    Raises:
        ValueError: a latent site of the model is missing from the guide (it would be drawn
            from the prior and silently left out of the weights), or observed data contain
            NaN (checked while Pyro's validation is enabled, as it is by default).
        NotImplementedError: a guide site is marked for enumeration.
        ValueError: a guide site is implicit (marked ``infer={"implicit": True}``, or a
            ``Delta`` in a guide without auxiliary sites, unless ``point_masses``: the ELBO
            of a point mass is the MAP objective, as Trace_ELBO computes it for AutoDelta),
            or is a noise site the model does not have and not marked auxiliary (Pyro only
            warns there): its log q is not a density of the latent, so every importance
            weight would be wrong.
    """
    guide_sites = _sample_sites(guide_trace)
    auxiliary = point_masses or any(is_auxiliary(site) for _, site in guide_sites)
    for name, site in guide_sites:
        if site["is_observed"] or is_auxiliary(site):
            continue
        implicit = is_implicit(site, auxiliary)
        if implicit or name not in model_trace.nodes:
            what = (
                "is implicit (no usable density)"
                if implicit
                else "is not a site of the model (Pyro's ELBOs only warn here); mark it "
                "infer={'is_auxiliary': True} if its density belongs in log q"
            )
            raise ValueError(
                f"guide site '{name}' {what}: importance-weighted objectives and "
                "log_likelihood need log q(z|x) of every guide site. Train an implicit guide "
                "with pyrogen.inference.AVB, and estimate its model's log p(x) with AIS"
            )
    missing = [
        name
        for name, site in _sample_sites(model_trace)
        if not site["is_observed"] and name not in guide_trace.nodes
    ]
    if missing:
        raise ValueError(
            f"the guide has no site for the model's latent site(s) {missing}: add "
            "pyro.sample statements with the same names to the guide (or condition the "
            "model on them)"
        )
    for name, site in _sample_sites(guide_trace):
        if site["infer"].get("enumerate"):
            raise NotImplementedError(
                f"guide site '{name}' is enumerated; importance-weighted bounds sample every "
                "latent: remove infer={'enumerate': ...} or use pyro.infer.TraceEnum_ELBO"
            )
    if is_validation_enabled():
        check_model_guide_match(model_trace, guide_trace, max_plate_nesting)
        for name, site in _sample_sites(model_trace):
            value = site["value"]
            if (
                site["is_observed"]
                and isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and _any_nan(value)
            ):
                raise ValueError(
                    f"observed site '{name}' contains NaN: drop or impute the missing "
                    "values, or mask them out with poutine.mask / obs_mask"
                )


class _Plan(NamedTuple):
    """What a pair of traces fixes for the weights of every particle: the plate dimensions
    kept, the scale every site shares (None when they differ), the shape-check limit."""

    keep: frozenset[int]
    scale: Any
    shape_nesting: Any


def _plan(
    model_trace: Trace, guide_trace: Trace, max_plate_nesting: int, particle_dim: bool
) -> _Plan:
    model_sites = _sample_sites(model_trace)
    guide_sites = _sample_sites(guide_trace)
    # One particle at a time, Trace_ELBO checks shapes against no plate limit: a batch
    # dimension left of every plate must be of size one (it is then summed, as Pyro sums
    # it); with a particle plate, the plates' nesting is the limit, as in Pyro's
    # vectorized ELBOs.
    shape_nesting: Any = max_plate_nesting if particle_dim else math.inf  # Pyro accepts inf
    # Plates every site shares keep their dimension; the particle plate is one of them.
    stacks = [frozenset(site["cond_indep_stack"]) for _, site in model_sites + guide_sites]
    common = frozenset.intersection(*stacks)
    keep = frozenset(max_plate_nesting + f.dim for f in common if f.dim is not None)
    if particle_dim:
        keep = keep | {0}
    scale = _common_scale([site["scale"] for _, site in model_sites + guide_sites])
    return _Plan(keep, scale, shape_nesting)


def _site_log_prob(site: Any, value: torch.Tensor, shared: bool) -> torch.Tensor:
    try:
        lp = log_prob(site["fn"], value, *site["args"], **site["kwargs"])
    except RuntimeError as exc:  # a value whose shape the distribution cannot take
        raise ValueError(
            f"shape mismatch at site '{site['name']}': its value has shape "
            f"{tuple(value.shape)}, its distribution batch shape "
            f"{tuple(site['fn'].batch_shape)} and event shape "
            f"{tuple(site['fn'].event_shape)} ({exc})"
        ) from exc
    if site["mask"] is not None:  # a tensor, or a Python bool from poutine.mask(mask=...)
        lp = scale_and_mask(lp, mask=site["mask"])
    if not shared:
        lp = lp * site["scale"]
    return lp


def _model_terms(
    model_sites: list[tuple[str, Any]],
    plan: _Plan,
    max_plate_nesting: int,
    particle_dim: bool,
    validate: bool,
) -> tuple[torch.Tensor | float, torch.Tensor]:
    """log p(x, z) summed over the sites, in the plates kept; and a reference tensor."""
    ref = torch.zeros(())
    total: torch.Tensor | float = 0.0
    for _, site in model_sites:
        lp = _site_log_prob(site, site["value"], plan.scale is not None)
        if validate:
            site["log_prob"] = lp
            check_site_shape(site, plan.shape_nesting)
        ref = lp
        total = total + _reduce(_pad(lp, max_plate_nesting, lp, not particle_dim), plan.keep)
    return total, ref


def _guide_terms(
    guide_sites: list[tuple[str, Any]],
    total: torch.Tensor | float,
    ref: torch.Tensor,
    plan: _Plan,
    max_plate_nesting: int,
    particle_dim: bool,
    validate: bool,
    want_direct: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``total`` minus log q(z | x), the score of the sites without rsample, and log q with
    detached values (DReG)."""
    shared = plan.scale is not None
    score: torch.Tensor | float | None = None
    direct: torch.Tensor | float | None = 0.0 if want_direct else None
    for _, site in guide_sites:
        lq = _site_log_prob(site, site["value"], shared)
        if validate:
            site["log_prob"] = lq
            check_site_shape(site, plan.shape_nesting)
        lq = _reduce(_pad(lq, max_plate_nesting, ref, not particle_dim), plan.keep)
        total = total - lq
        if not site["fn"].has_rsample:
            score = lq if score is None else score + lq
        if direct is not None:
            lq_direct = _site_log_prob(site, site["value"].detach(), shared)
            direct = direct + _reduce(
                _pad(lq_direct, max_plate_nesting, ref, not particle_dim), plan.keep
            )
    assert isinstance(total, torch.Tensor)
    score_t = score if isinstance(score, torch.Tensor) else None
    direct_t = direct if isinstance(direct, torch.Tensor) else None
    return total, score_t, direct_t


def _trace_log_weights(
    model_trace: Trace,
    guide_trace: Trace,
    max_plate_nesting: int,
    particle_dim: bool,
    want_direct: bool,
    point_masses: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, float | torch.Tensor, torch.Tensor | None]:
    check_traces(model_trace, guide_trace, max_plate_nesting, point_masses)
    plan = _plan(model_trace, guide_trace, max_plate_nesting, particle_dim)
    validate = is_validation_enabled()
    total, ref = _model_terms(
        _sample_sites(model_trace), plan, max_plate_nesting, particle_dim, validate
    )
    total, score, direct = _guide_terms(
        _sample_sites(guide_trace),
        total,
        ref,
        plan,
        max_plate_nesting,
        particle_dim,
        validate,
        want_direct,
    )
    return total, score, (plan.scale if plan.scale is not None else 1.0), direct


def log_weights(
    traces: Sequence[tuple[Trace, Trace]],
    max_plate_nesting: int,
    particle_plate: bool,
    want_direct: bool = False,
    point_masses: bool = False,
) -> LogWeights:
    r"""Log importance weights from (model trace, guide trace) pairs.

    Args:
        traces: either a single pair whose outermost plate is the particle plate
            (``particle_plate=True``), or one pair per particle (sequential particles, or a
            single particle).
        max_plate_nesting: the number of plate dimensions of each trace, the particle plate
            included when there is one.
        particle_plate: whether the particles are the outermost plate of a single pair.
        want_direct: also return the guide's log-density with detached values (DReG).
        point_masses: accept ``Delta`` guide sites as point masses (the ELBO only).

    Returns:
        :class:`LogWeights` with the particle dimension first.
    """
    parts = [
        _trace_log_weights(m, g, max_plate_nesting, particle_plate, want_direct, point_masses)
        for m, g in traces
    ]
    scale = parts[0][2]
    if particle_plate:
        lw, score, _, direct = parts[0]
    else:
        lw = torch.stack(torch.broadcast_tensors(*[p[0] for p in parts]))
        scores = [p[1] for p in parts]
        score = None
        if all(s is not None for s in scores):
            score = torch.stack(torch.broadcast_tensors(*[s for s in scores if s is not None]))
        directs = [p[3] for p in parts]
        direct = None
        if want_direct:
            direct = torch.stack(torch.broadcast_tensors(*[d for d in directs if d is not None]))
    guides, models = [g for _, g in traces], [m for m, _ in traces]
    path = "plate" if particle_plate else "loop"
    return LogWeights(lw, score, scale, guides, direct, models, path)


def _plate_nesting(traces: Sequence[tuple[Trace, Trace]]) -> int:
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


def _all_finite(value: torch.Tensor) -> bool:
    """Whether every entry of a floating-point tensor is finite, by one reduction where it
    can: a finite sum has no NaN or infinite term (either would make the sum NaN or
    infinite); a sum that is not finite (such a term, or an overflow) is checked entry by
    entry. Several times cheaper than ``isfinite(value).all()``, which writes a mask."""
    return bool(torch.isfinite(value.sum())) or bool(torch.isfinite(value).all())


def _any_nan(value: torch.Tensor) -> bool:
    """Whether a floating-point tensor has a NaN entry, by one reduction where it can (a NaN
    term makes the sum NaN; a NaN sum without one, from inf - inf, is checked entry by
    entry)."""
    return bool(torch.isnan(value.sum())) and bool(torch.isnan(value).any())


def _check_no_nan(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse empty data and data with NaN or infinite values, naming the argument."""
    named = [(f"positional argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument '{k}'", v) for k, v in kwargs.items()]
    for where, value in named:
        if not isinstance(value, torch.Tensor):
            continue
        if value.dim() > 0 and value.numel() == 0:
            raise ValueError(
                f"the data passed as {where} are empty (shape {tuple(value.shape)}): there is "
                "nothing to fit"
            )
        if not value.is_floating_point() or _all_finite(value):
            continue
        nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
        if nan:
            raise ValueError(
                f"the data passed as {where} contain NaN ({nan} of {value.numel()} entries): "
                "drop or impute the missing values, or mask them out with poutine.mask"
            )
        raise ValueError(
            f"the data passed as {where} contain infinite values ({inf} of "
            f"{value.numel()} entries): every weight would be infinite or NaN"
        )


def _describe(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    named = [(f"positional argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument '{k}'", v) for k, v in kwargs.items()]
    parts = [
        f"{where}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
        for where, v in named
        if isinstance(v, torch.Tensor)
    ]
    return "; ".join(parts) if parts else "no tensor arguments"


def _traced(fn: Callable[..., Any], args: Any, kwargs: Any) -> Trace:
    """A trace of ``fn``; torch's errors from running it on the arguments given (a shape or
    dtype that does not fit) become a ValueError that shows the arguments' shapes and
    dtypes, the original chained."""
    try:
        return poutine.trace(fn).get_trace(*args, **kwargs)
    except (RuntimeError, NotImplementedError, ZeroDivisionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shape_or_dtype = ("size of tensor", "must match", "shape", "dtype", "not implemented")
        if isinstance(exc, RuntimeError) and not any(k in first for k in shape_or_dtype):
            raise  # Pyro's own errors (a duplicate site name...) stay what Pyro raises
        raise ValueError(
            f"the model and guide failed on the data given ({type(exc).__name__}: {first}); "
            f"check the data's shape and dtype against the model ({_describe(args, kwargs)})"
        ) from exc


def trace_pair(
    model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any
) -> tuple[Trace, Trace]:
    """Trace the guide, then the model replayed on its draws (errors as :func:`_traced`)."""
    guide_trace = _traced(guide, args, kwargs)
    model_trace = _traced(poutine.replay(model, trace=guide_trace), args, kwargs)
    return model_trace, guide_trace


def _replay_trace(
    values: dict[str, torch.Tensor], infer: dict[str, Any], shared: Trace | None = None
) -> Trace:
    """A trace holding only latent values, for ``poutine.replay``, and the subsampling
    indices of ``shared``'s plates."""
    trace = Trace()
    for name, value in values.items():
        trace.add_node(name, type="sample", value=value, is_observed=False, infer=infer[name])
    if shared is not None:
        for name, site in shared.nodes.items():
            if site["type"] == "sample" and is_subsample(site["fn"]):
                trace.add_node(name, **site)
    return trace


def _guide_traces(
    guide: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], k: int
) -> list[Trace]:
    """``k`` particles of the guide, one at a time: the draws of sequential particles,
    except that a subsampled plate keeps the first particle's indices (as one plate of
    particles does), so that every particle's model run sees the same data."""
    first = _traced(guide, args, kwargs)
    indices = _replay_trace({}, {}, first)
    if not indices.nodes:
        return [first] + [_traced(guide, args, kwargs) for _ in range(k - 1)]
    replayed = poutine.replay(guide, trace=indices)
    return [first] + [_traced(replayed, args, kwargs) for _ in range(k - 1)]


def _value(trace: Trace, name: str) -> torch.Tensor:
    value: Any = trace.nodes[name]["value"]
    return value


def _latents(guide_trace: Trace) -> list[tuple[str, Any]]:
    return [(n, site) for n, site in _sample_sites(guide_trace) if not site["is_observed"]]


def _plate_log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    guide_traces: list[Trace],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    nesting: int,
    point_masses: bool,
) -> torch.Tensor:
    """The plate path's log-weights at the latent values of the given guide traces (the
    probe: no draws)."""
    k = len(guide_traces)
    values, infer = {}, {}
    for name, site in _latents(guide_traces[0]):
        value = torch.stack([_value(g, name) for g in guide_traces])
        batch_dims = value.dim() - 1 - site["fn"].event_dim
        values[name] = value.reshape((k,) + (1,) * (nesting - batch_dims) + value.shape[1:])
        infer[name] = site["infer"]
    plate = ("num_particles_vectorized", k, -nesting - 1)
    indexed = _replay_trace(values, infer, guide_traces[0])
    replayed_guide = poutine.replay(in_plate(guide, *plate), trace=indexed)
    guide_trace = poutine.trace(replayed_guide).get_trace(*args, **kwargs)
    replayed_model = poutine.replay(in_plate(model, *plate), trace=guide_trace)
    model_trace = poutine.trace(replayed_model).get_trace(*args, **kwargs)
    return log_weights([(model_trace, guide_trace)], nesting + 1, True, False, point_masses)[0]


def _vmap_log_weights(
    model: Callable[..., Any],
    guide_traces: list[Trace],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    max_plate_nesting: float,
    want_direct: bool,
    point_masses: bool,
) -> tuple[LogWeights, int]:
    """Weights of particles drawn one at a time (the guide traces), the model run for all
    but the first under ``torch.func.vmap``. The first particle is weighed exactly as the
    sequential path weighs it (with its checks), and fixes the plates kept and the scale;
    every other one takes the same arithmetic in the same order, so values and gradients
    are the sequential path's up to the rounding of sums inside the model."""
    first = guide_traces[0]
    model_trace = _traced(poutine.replay(model, trace=first), args, kwargs)
    nesting = max_plate_nesting
    if nesting == math.inf:
        nesting = _plate_nesting([(model_trace, g) for g in guide_traces])
    n = int(nesting)
    check_traces(model_trace, first, n, point_masses)
    plan = _plan(model_trace, first, n, False)
    validate = is_validation_enabled()
    total, ref = _model_terms(_sample_sites(model_trace), plan, n, False, validate)
    latents = _latents(first)
    infer = {name: site["infer"] for name, site in latents}
    stacked = {
        name: torch.stack([_value(g, name) for g in guide_traces[1:]]) for name, _ in latents
    }

    def one(values: dict[str, torch.Tensor]) -> torch.Tensor:
        # Validation reads tensors' values in Python, which vmap refuses; the first
        # particle's run above was validated.
        with pyro.validation_enabled(False):
            replayed = poutine.replay(model, trace=_replay_trace(values, infer, first))
            trace = poutine.trace(replayed).get_trace(*args, **kwargs)
        log_p, _ = _model_terms(_sample_sites(trace), plan, n, False, False)
        return torch.as_tensor(log_p, dtype=ref.dtype, device=ref.device)

    try:
        rest = torch.func.vmap(one)(stacked)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise BatchingError(explain(exc, "particles")) from exc
    parts = [
        _guide_terms(_sample_sites(g), log_p, ref, plan, n, False, validate, want_direct)
        for g, log_p in zip(guide_traces, [total, *rest], strict=True)
    ]
    lw = torch.stack(torch.broadcast_tensors(*[p[0] for p in parts]))
    scores = [p[1] for p in parts]
    score = None
    if all(s is not None for s in scores):
        score = torch.stack(torch.broadcast_tensors(*[s for s in scores if s is not None]))
    direct = None
    if want_direct:
        direct = torch.stack(torch.broadcast_tensors(*[p[2] for p in parts if p[2] is not None]))
    scale = plan.scale if plan.scale is not None else 1.0
    return LogWeights(lw, score, scale, guide_traces, direct, None, "vmap"), n


def choose_particle_path(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    max_plate_nesting: float = math.inf,
    point_masses: bool = False,
) -> str:
    """``"plate"``, ``"vmap"`` or ``"loop"``: the first path whose log-weights for two
    particles agree with the two weighed one by one (:mod:`~pyrogen.inference.batching`).
    Torch's random generators are left as they were, and Pyro's handlers outside see
    nothing. A model that fails one particle at a time raises its own error here."""
    with probe_rng(*args, *kwargs.values()), poutine.block():
        guides = _guide_traces(guide, args, kwargs, 2)
        pairs = [(_traced(poutine.replay(model, trace=g), args, kwargs), g) for g in guides]
        if not any(_sample_sites(m) or _sample_sites(g) for m, g in pairs):
            return "plate"
        n = int(_plate_nesting(pairs) if max_plate_nesting == math.inf else max_plate_nesting)
        reference = log_weights(pairs, n, False, point_masses=point_masses).log_weight
        try:
            plated = _plate_log_weights(model, guide, guides, args, kwargs, n, point_masses)
            if same_values(plated, reference):
                return "plate"
        except Exception:  # noqa: BLE001, S110 - any failure of the plate path: try vmap
            pass
        try:
            w, _ = _vmap_log_weights(model, guides, args, kwargs, n, False, point_masses)
            if same_values(w.log_weight, reference):
                return "vmap"
            failure = explain(
                "vmap over particles gives weights that differ from a loop", "particles"
            )
        except BatchingError as exc:
            failure = str(exc)
    warn_loop(failure, "particles")
    return "loop"


class ParticlePath:
    """The particle path found for a (model, guide) pair, kept by a caller between calls
    so that the probe runs once."""

    def __init__(self) -> None:
        self._found: tuple[Any, Any, str] | None = None

    def get(self, model: Callable[..., Any], guide: Callable[..., Any]) -> str:
        found = self._found
        if found is not None and found[0] == model and found[1] == guide:
            return found[2]
        return "auto"

    def keep(self, model: Callable[..., Any], guide: Callable[..., Any], path: str) -> None:
        self._found = (model, guide, path)


def in_plate(fn: Callable[..., Any], name: str, size: int, dim: int) -> Callable[..., Any]:
    """``fn`` run inside ``pyro.plate(name, size, dim=dim)``. Entered inside the trace and
    the replay (as Pyro's vectorized ELBOs do), the plate broadcasts the model's replayed
    sites too, so that model and guide agree on every site's shape."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(name, size, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def draw_log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    num_particles: int,
    max_plate_nesting: float = math.inf,
    vectorize_particles: bool = True,
    want_direct: bool = False,
    point_masses: bool = False,
    batching: str = "auto",
) -> tuple[LogWeights, int]:
    r"""Draw ``num_particles`` particles from the guide and weigh them by the model.

    Vectorized particles take one of three paths (:mod:`~pyrogen.inference.batching`):
    ``"plate"``, one run of guide and model under an outermost particle plate (Pyro's
    vectorized ELBOs), for programs that broadcast over it; ``"vmap"``, for a model that
    does not (``X @ w``): the guide runs once per particle, drawing exactly what sequential
    particles draw (``torch.func.vmap`` cannot draw from ``torch.distributions``: their
    in-place ``normal_`` on an unbatched tensor is refused under
    ``randomness="different"``), and the model runs once under ``torch.func.vmap``, so
    weights and gradients equal the sequential path's draw for draw; ``"loop"``, the
    sequential path, with a warning, when vmap cannot run the model either.

    Args:
        model, guide: the Pyro programs, called as ``model(*args, **kwargs)``.
        num_particles: :math:`K`.
        max_plate_nesting: plate dimensions of model and guide, the particle plate not
            counted; at infinity, for vectorized particles (K > 1), one unvectorized run
            finds it, drawing random numbers as Pyro's vectorized ELBOs do; otherwise it is
            read off the particles' own traces (no extra draws, as in Trace_ELBO).
        vectorize_particles: draw the particles as one outermost ``pyro.plate``, or run the
            programs once per particle.
        want_direct: also return the guide's log-density with detached values (DReG).
        point_masses: accept ``Delta`` guide sites as point masses whose log q is their
            ``log_density`` (Pyro's reading; the ELBO of AutoDelta is the MAP objective).
        batching: the path of vectorized particles: ``"auto"`` probes two particles
            (:func:`choose_particle_path`, without moving the random generators) and
            takes the first path that agrees with weighing them one by one; ``"plate"``,
            ``"vmap"`` or ``"loop"`` skip the probe (a caller keeps the path found,
            ``LogWeights.batching``, in a :class:`ParticlePath`).

    Returns:
        :class:`LogWeights` whose ``log_weight`` has shape ``(num_particles, *plates)``, and
        the programs' plate nesting (the particle plate not counted), for the caller to keep
        so that the next call needs no probe.
    """
    if is_validation_enabled():
        _check_no_nan(args, kwargs)
    path = check_batching(batching) if vectorize_particles and num_particles > 1 else "loop"
    if path == "auto" and max_plate_nesting == math.inf:
        path = choose_particle_path(model, guide, args, kwargs, max_plate_nesting, point_masses)
    if path == "auto":
        # The plate nesting is given, so there is no unvectorized run to probe with: the
        # plate path is tried, and if the model fails there the draws are undone and the
        # probe picks the path (a model that fails one particle at a time raises there).
        restore = saved_rng(*args, *kwargs.values())
        try:
            return _draw(
                model,
                guide,
                args,
                kwargs,
                num_particles,
                max_plate_nesting,
                "plate",
                want_direct,
                point_masses,
            )
        except (RuntimeError, ValueError, IndexError, TypeError):
            restore()
            path = choose_particle_path(model, guide, args, kwargs, max_plate_nesting, point_masses)
            if path == "plate":
                raise
    if path == "vmap":
        guides = _guide_traces(guide, args, kwargs, num_particles)
        if any(_sample_sites(g) for g in guides):
            return _vmap_log_weights(
                model, guides, args, kwargs, max_plate_nesting, want_direct, point_masses
            )
        path = "loop"  # nothing to weigh in the guide: the sequential path handles it
    return _draw(
        model,
        guide,
        args,
        kwargs,
        num_particles,
        max_plate_nesting,
        path,
        want_direct,
        point_masses,
    )


def _draw(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    num_particles: int,
    max_plate_nesting: float,
    path: str,
    want_direct: bool,
    point_masses: bool,
) -> tuple[LogWeights, int]:
    """The plate path (``path == "plate"``) or sequential particles."""
    particle_plate = path == "plate"
    nesting = max_plate_nesting
    if nesting == math.inf and particle_plate:
        # One unvectorized run finds the plate nesting (as Pyro's ELBO does, drawing the
        # same random numbers); its traces are checked before any density is computed.
        with poutine.block():
            pair = trace_pair(model, guide, args, kwargs)
        check_traces(*pair, point_masses=point_masses)
        nesting = _plate_nesting([pair])
    if particle_plate:
        plate = ("num_particles_vectorized", num_particles, -int(nesting) - 1)
        traces = [trace_pair(in_plate(model, *plate), in_plate(guide, *plate), args, kwargs)]
    else:
        traces = [trace_pair(model, guide, args, kwargs) for _ in range(num_particles)]
    if nesting == math.inf:  # sequential: read it off the traces
        nesting = _plate_nesting(traces)
    if not any(_sample_sites(m) or _sample_sites(g) for m, g in traces):
        # Nothing random and nothing observed: p(x) = 1, every weight is 0 (Pyro's ELBOs
        # return a loss of 0 for such a pair).
        for m, g in traces:
            check_traces(m, g, int(nesting) + int(particle_plate), point_masses)
        zero = torch.zeros(num_particles)
        direct = zero if want_direct else None
        guides, models = [g for _, g in traces], [m for m, _ in traces]
        return LogWeights(zero, None, 1.0, guides, direct, models, path), int(nesting)
    out = log_weights(
        traces,
        int(nesting) + int(particle_plate),
        particle_plate,
        want_direct=want_direct,
        point_masses=point_masses,
    )
    assert out.log_weight.shape[0] == num_particles, (
        f"expected {num_particles} particles first, got {tuple(out.log_weight.shape)}"
    )
    return out, int(nesting)
