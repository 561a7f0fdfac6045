r"""The variational Rényi bound family: ELBO, IWAE, alpha-bounds, VR-max, and CUBO.

Variational Inference with Rényi Divergence (Li & Turner, 2016),
https://arxiv.org/abs/1602.02311:

.. math::
    \mathcal{L}_\alpha(x) = \frac{1}{1-\alpha} \log \mathbb{E}_{q(z \mid x)}
        \left[\left(\frac{p(x, z)}{q(z \mid x)}\right)^{1-\alpha}\right],

estimated with :math:`K` particles by
:math:`\hat{\mathcal{L}}_{\alpha,K} = \frac{1}{1-\alpha}\log\frac{1}{K}\sum_k w_k^{1-\alpha}`.
Special orders: :math:`\alpha \to 1` is the ELBO (taken as the limit, the mean log-weight);
:math:`\alpha = 0` is the importance-weighted bound of Importance Weighted Autoencoders
(Burda et al., 2015), https://arxiv.org/abs/1509.00519; :math:`\alpha = -\infty` is VR-max,
the largest log-weight, whose gradient flows through that particle only;
:math:`\alpha = 1 - n` with :math:`n > 1` is the :math:`\chi^n` upper bound CUBO of
Variational Inference via chi Upper Bound Minimization (Dieng et al., 2017),
https://arxiv.org/abs/1611.00328.

:math:`\mathcal{L}_\alpha` is non-increasing in :math:`\alpha`, a lower bound of
:math:`\log p(x)` for :math:`\alpha > 0` and an upper bound for :math:`\alpha < 0` (in
expectation over :math:`q`; the :math:`K`-particle estimate is biased downwards by Jensen's
inequality and reaches :math:`\log p(x)` as :math:`K \to \infty` for :math:`\alpha < 1`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_identically_zero
from pyro.poutine.util import prune_subsample_sites

from pyrogen.compat import plate_wise_log_ratio
from pyrogen.inference.importance import (
    LogWeights,
    ParticlePath,
    _sample_sites,
    draw_log_weights,
)
from pyrogen.inference.objective import Objective

_GRADIENTS = ("reparam", "dreg")


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, torch.Tensor) and alpha.numel() == 1:
        alpha = alpha.item()
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number, got {alpha!r} ({type(alpha).__name__})")
    alpha = float(alpha)
    if math.isnan(alpha) or alpha == math.inf:
        raise ValueError(f"alpha must be a real number or -inf (VR-max), got {alpha}")
    return alpha


def renyi_reduce(log_weight: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""Reduce log-weights over the particle dimension (dim 0) to the Rényi estimate.

    Computes :math:`\frac{1}{1-\alpha}\log\frac{1}{K}\sum_k \exp((1-\alpha)\log w_k)` without
    overflow for log-weights of any magnitude, and without the cancellation the direct
    formula suffers near :math:`\alpha = 1`: the weights are centred on their mean
    :math:`m`, and where :math:`|(1-\alpha)(\log w_k - m)|` is small the log-mean-exp is
    taken as ``log1p(mean(expm1(.)))``, accurate to the last bit.

    Args:
        log_weight: shape ``(K, ...)``.
        alpha: the order; 1 gives the mean, ``-inf`` the maximum.

    Returns:
        The estimate, shape ``log_weight.shape[1:]``, differentiable.
    """
    if alpha == 1.0:
        return log_weight.mean(0)
    if alpha == -math.inf:
        return log_weight.max(0).values
    c = 1.0 - alpha
    num_particles = log_weight.shape[0]
    if abs(c) >= 0.1:
        # Far from the ELBO limit the plain log-sum-exp loses at most a few ulps of
        # log K / |c|: no blend needed (and half the operations on the training path).
        return (torch.logsumexp(c * log_weight, 0) - math.log(num_particles)) / c
    m = log_weight.mean(0)
    d = c * (log_weight - m)
    large = torch.logsumexp(d, 0) - math.log(num_particles)
    small = torch.log1p(torch.expm1(d.clamp(-0.5, 0.5)).mean(0))
    use_small = d.detach().abs().amax(0) < 0.5
    return m + torch.where(use_small, small, large) / c


def _leave_one_out(log_weight: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""Baselines for the score function: the estimate with particle :math:`k` replaced by
    the mean log-weight of the others (VIMCO, Mnih & Rezende, 2016,
    https://arxiv.org/abs/1602.06725), shape ``(K, ...)``; independent of particle k.

    Memory and time are linear in K: the sum over the others is the total minus particle
    k, taken relative to the largest term, which keeps every such difference at least 1;
    for the largest term itself the sum over the others is formed directly."""
    k = log_weight.shape[0]
    lw = log_weight.detach()
    others = (lw.sum(0, keepdim=True) - lw) / (k - 1)
    if alpha == 1.0:
        return (lw.sum(0, keepdim=True) - lw + others) / k
    if alpha == -math.inf:
        top = torch.zeros_like(lw, dtype=torch.bool).scatter_(0, lw.argmax(0, keepdim=True), True)
        second = lw.masked_fill(top, -math.inf).amax(0, keepdim=True)
        rest = torch.where(top, second, lw.amax(0, keepdim=True))
        return torch.maximum(rest, others)
    c = 1.0 - alpha
    a = c * lw
    top = torch.zeros_like(a, dtype=torch.bool).scatter_(0, a.argmax(0, keepdim=True), True)
    m = a.amax(0, keepdim=True)
    shifted = (a - m).exp()
    total = shifted.sum(0, keepdim=True)  # at least 1: the largest term is exp(0)
    rest_of_top = a.masked_fill(top, -math.inf).logsumexp(0, keepdim=True)
    rest = torch.where(top, rest_of_top, m + (total - shifted).clamp_min(1.0).log())
    return (torch.logaddexp(rest, c * others) - math.log(k)) / c


def _trace_elbo_surrogate(
    w: LogWeights, num_particles: int, model_traces: list[Any]
) -> torch.Tensor:
    r"""Trace_ELBO's gradient at :math:`\alpha = 1`, as a zero-valued surrogate: the model's
    log-density and the reparameterized sites' entropy terms through the sampled values,
    and for each non-reparameterized site its score times the log-ratio of the terms in its
    own plates (Pyro's plate-wise Rao-Blackwellization: a local latent is credited with its
    data point's terms only). The zero-mean gradient of :math:`-\log q` through the
    parameters of those sites is left out, as Trace_ELBO leaves it out."""
    surrogate: torch.Tensor | float = 0.0
    for traced_model, traced_guide in zip(model_traces, w.guide_traces, strict=True):
        model_trace = prune_subsample_sites(traced_model)  # plates' own sites, as Pyro does
        guide_trace = prune_subsample_sites(traced_guide)
        for trace in (model_trace, guide_trace):  # Pyro's scaled, masked densities afresh
            for _, site in _sample_sites(trace):
                for key in ("log_prob", "log_prob_sum", "unscaled_log_prob", "score_parts"):
                    site.pop(key, None)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        log_r = None
        for _, site in _sample_sites(model_trace):
            surrogate = surrogate + site["log_prob_sum"]
        for _, site in _sample_sites(guide_trace):
            _, score_function, entropy = site["score_parts"]
            if not is_identically_zero(entropy):
                surrogate = surrogate - entropy.sum()
            if not is_identically_zero(score_function):
                if log_r is None:
                    log_r = plate_wise_log_ratio(model_trace, guide_trace)
                try:
                    reward = log_r.sum_to(site["cond_indep_stack"])
                except RuntimeError as exc:  # only without Pyro's validation
                    raise ValueError(
                        f"shape mismatch: the log-densities in the plates of site "
                        f"'{site['name']}' do not broadcast ({exc}); declare every batch "
                        "dimension with pyro.plate"
                    ) from exc
                surrogate = surrogate + (reward * score_function).sum()
    assert isinstance(surrogate, torch.Tensor)
    surrogate = surrogate / num_particles
    return -(surrogate - surrogate.detach())


class RenyiBound(Objective):
    r"""The variational Rényi bound :math:`\mathcal{L}_\alpha`; its negative is the loss.

    Variational Inference with Rényi Divergence (Li & Turner, 2016),
    https://arxiv.org/abs/1602.02311.

    The log-sum-exp over particles is taken separately for each data point of the plates
    that every sample site shares, and the per-point bounds are summed (times the plates'
    subsampling scale). A latent outside those plates (a global latent) couples the data
    points, so the weights then cover the whole data set: one bound for all of it, the
    correct Rényi bound of that model.

    Where Pyro's ELBOs only warn, these refuse with an error that names the site, because
    every importance weight would be wrong: a guide sample site the model lacks and that is
    not marked ``infer={"is_auxiliary": True}`` (its log q is not a density of a model
    latent); a model latent the guide lacks (it would be drawn from the prior and left out
    of the weights); an enumerated guide site (``NotImplementedError``: the weights sample
    every latent; use ``TraceEnum_ELBO``); and, for :math:`\alpha \ne 1`, a ``Delta``
    guide site (a point mass has no density to weigh by; at :math:`\alpha = 1` it gives
    Trace_ELBO's MAP objective, as for ``AutoDelta``).

    Gradients:

    - ``"reparam"``: the gradient of the :math:`K`-particle estimate through the
      reparameterized particles; guide sites without ``rsample`` add a score-function term
      whose reward is the per-point estimate minus a leave-one-out baseline (VIMCO), an
      unbiased gradient of the expected estimate. At :math:`\alpha = 1` (the ELBO) the
      gradient is Trace_ELBO's, draw by draw: each such site is credited with the
      log-ratio of the terms in its own plates (a local latent with its data point's), and
      the zero-mean gradient of :math:`-\log q` through its parameters is left out.
    - ``"dreg"``: doubly-reparameterized gradients (Tucker et al., 2018,
      https://arxiv.org/abs/1810.04152) for the guide: the score term of
      :math:`\log q` is dropped and particle :math:`k`'s path gradient weighted by
      :math:`\alpha\tilde w_k + (1-\alpha)\tilde w_k^2`, with
      :math:`\tilde w = \mathrm{softmax}((1-\alpha)\log w)`; at :math:`\alpha = 0` these are
      the IWAE-DReG weights :math:`\tilde w_k^2`, at :math:`\alpha = 1` "sticking the
      landing". The model's gradient is unchanged. Requires every guide site to be
      reparameterizable, and assumes each guide site's distribution depends on the
      parameters and data but not on other latent sites (mean-field or amortized guides).

    Args:
        alpha: the order, any real number or ``-math.inf``.
        num_particles: :math:`K`.
        gradient: ``"reparam"`` or ``"dreg"``.
        max_plate_nesting: see :class:`~pyrogen.inference.objective.Objective`.
        vectorize_particles: see :class:`~pyrogen.inference.objective.Objective`.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyrogen.inference import RenyiBound
        >>> def model(x):
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     loc = pyro.param("loc", torch.tensor(0.0))
        ...     pyro.sample("z", dist.Normal(loc, 1.0))
        >>> svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}),
        ...                      loss=RenyiBound(alpha=0.5, num_particles=8))
        >>> loss = svi.step(torch.randn(10))
    """

    def __init__(
        self,
        alpha: float = 0.0,
        num_particles: int = 2,
        gradient: str = "reparam",
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
    ) -> None:
        self.alpha = _check_alpha(alpha)
        if gradient not in _GRADIENTS:
            raise ValueError(f"gradient must be one of {_GRADIENTS}, got {gradient!r}")
        if gradient == "dreg" and self.alpha == -math.inf:
            raise ValueError("gradient='dreg' is not defined for VR-max (alpha=-inf)")
        self.gradient = gradient
        self.particle_path = ParticlePath()
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(alpha={self.alpha}, num_particles={self.num_particles}, "
            f"gradient={self.gradient!r})"
        )

    def log_weights(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        want_direct: bool = False,
    ) -> LogWeights:
        r"""Draw ``num_particles`` particles from the guide and weigh them by the model
        (:func:`~pyrogen.inference.importance.draw_log_weights`); ``log_weight`` has shape
        ``(num_particles, *plates)``."""
        # Pyro's convention: max_plate_nesting counts the particle plate when there is one.
        extra = int(self.vectorize_particles and self.num_particles > 1)
        w, nesting = draw_log_weights(
            model,
            guide,
            args,
            kwargs,
            self.num_particles,
            self.max_plate_nesting - extra,
            self.vectorize_particles,
            want_direct,
            point_masses=self.alpha == 1.0,  # the ELBO of a point mass: MAP, as in Pyro
            batching=self.particle_path.get(model, guide),
        )
        self.max_plate_nesting = nesting + extra
        if extra:
            self.particle_path.keep(model, guide, w.batching)
        return w

    def bound(self, w: LogWeights) -> torch.Tensor:
        """The per-point estimate with its gradient (reparameterized path)."""
        lw = w.log_weight
        if w.direct_log_q is not None:
            # Same value; the gradient of log q through its parameters (the score term) is
            # cancelled, leaving the path through the sampled values.
            lw = lw + w.direct_log_q - w.direct_log_q.detach()
        return renyi_reduce(lw, self.alpha)

    @torch.no_grad()
    def pointwise(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """The estimate for each data point (unscaled, no gradient), shape of the shared
        plates, e.g. ``(N,)`` for one data plate; ``(1,)`` when a global latent couples them."""
        w = self.log_weights(model, guide, args, kwargs)
        return renyi_reduce(w.log_weight, self.alpha)

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        dreg = self.gradient == "dreg"
        w = self.log_weights(model, guide, args, kwargs, want_direct=dreg)
        if dreg:
            self._check_reparam(w)
            self._dreg_hooks(w)
        bound = self.bound(w)
        if w.score is not None and self.alpha == 1.0 and not dreg:
            value = -(w.scale * bound).sum()
            model_traces = w.model_traces
            if model_traces is None:  # the model ran under vmap: replay it per particle
                model_traces = [
                    poutine.trace(poutine.replay(model, trace=g)).get_trace(*args, **kwargs)
                    for g in w.guide_traces
                ]
            return value.detach() + _trace_elbo_surrogate(w, self.num_particles, model_traces)
        surrogate = bound
        if w.score is not None:
            if self.num_particles > 1:
                reward = bound.detach().unsqueeze(0) - _leave_one_out(w.log_weight, self.alpha)
            else:
                reward = bound.detach().unsqueeze(0)
            score = (reward * w.score).sum(0)
            surrogate = surrogate + score - score.detach()
        return -(w.scale * surrogate).sum()

    def _check_reparam(self, w: LogWeights) -> None:
        for trace in w.guide_traces[:1]:
            for name, site in _sample_sites(trace):
                if not site["fn"].has_rsample:
                    raise ValueError(
                        f"gradient='dreg' needs reparameterized guide sites, but site "
                        f"'{name}' ({type(site['fn']).__name__}) has no rsample: use "
                        "gradient='reparam', which adds a score-function term for it"
                    )

    def _dreg_hooks(self, w: LogWeights) -> None:
        if self.num_particles == 1 or self.alpha == 1.0:
            return  # every multiplier is 1 (or 1/K already carried by the mean)
        lw = w.log_weight.detach()
        w_tilde = torch.softmax((1.0 - self.alpha) * lw, dim=0)
        mult = self.alpha + (1.0 - self.alpha) * w_tilde  # (K, *plates)
        per_trace = [mult] if len(w.guide_traces) == 1 else list(mult)
        for m, trace in zip(per_trace, w.guide_traces, strict=True):
            for _, site in _sample_sites(trace):
                value = site["value"]
                if not value.requires_grad:
                    continue
                event_dim = site["fn"].event_dim
                batch_dim = value.dim() - event_dim
                mm = m.reshape(m.shape + (1,) * event_dim)
                extra = mm.dim() - value.dim()
                if extra > 0:
                    mm = mm.reshape(mm.shape[extra:])
                elif extra < 0:
                    mm = mm.reshape((1,) * (-extra) + tuple(mm.shape))
                assert mm.dim() == value.dim() and batch_dim >= 0
                value.register_hook(lambda g, mm=mm: g * mm)


class IWAE(RenyiBound):
    r"""The importance-weighted bound, :class:`RenyiBound` with :math:`\alpha = 0`.

    Importance Weighted Autoencoders (Burda et al., 2015), https://arxiv.org/abs/1509.00519:
    :math:`\log\frac{1}{K}\sum_k p(x, z_k)/q(z_k \mid x)`. ``gradient="dreg"`` gives the
    doubly-reparameterized estimator (Tucker et al., 2018).
    """

    def __init__(
        self,
        num_particles: int = 5,
        gradient: str = "reparam",
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
    ) -> None:
        super().__init__(0.0, num_particles, gradient, max_plate_nesting, vectorize_particles)


class VRMax(RenyiBound):
    r"""VR-max, :class:`RenyiBound` with :math:`\alpha = -\infty`: the largest log-weight.

    Li & Turner (2016), section 4: only the particle with the largest weight is
    back-propagated.
    """

    def __init__(
        self,
        num_particles: int = 5,
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
    ) -> None:
        super().__init__(
            -math.inf, num_particles, "reparam", max_plate_nesting, vectorize_particles
        )


class CUBO(RenyiBound):
    r"""The :math:`\chi^n` upper bound :math:`\frac{1}{n}\log\mathbb{E}_q[w^n]`, to minimise.

    Variational Inference via chi Upper Bound Minimization (Dieng et al., 2017),
    https://arxiv.org/abs/1611.00328. It is :class:`RenyiBound` with :math:`\alpha = 1 - n`,
    with the sign turned: the loss is the bound itself. Minimise it with respect to the
    guide only (a model trained to lower an upper bound of its own evidence learns
    nothing useful); with a lower bound it sandwiches :math:`\log p(x)`. The
    :math:`K`-particle estimate is biased downwards, so it is an upper bound only as
    :math:`K` grows.
    """

    def __init__(
        self,
        n: float = 2.0,
        num_particles: int = 10,
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
    ) -> None:
        if _check_alpha(n) <= 1.0:
            raise ValueError(f"CUBO needs n > 1, got {n}")
        self.n = float(n)
        super().__init__(
            1.0 - self.n, num_particles, "reparam", max_plate_nesting, vectorize_particles
        )

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        return -super().differentiable_loss(model, guide, *args, **kwargs)
