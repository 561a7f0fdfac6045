r"""Annealed importance sampling (AIS) of the partition function of a Bernoulli RBM.

On the Quantitative Analysis of Deep Belief Networks (Salakhutdinov & Murray, 2008),
https://doi.org/10.1145/1390156.1390266, after Annealed Importance Sampling (Neal, 2001),
https://arxiv.org/abs/physics/9803008. The path runs from a base-rate model
:math:`p_A(v) \propto e^{a^\top v}` (no hidden interactions) to the RBM
:math:`(W, b, c)` through

.. math::
    p^*_\beta(v) = e^{(1-\beta) a^\top v + \beta b^\top v}
        \prod_j \left(1 + e^{\beta (c_j + v^\top W_{:j})}\right),
    \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_K = 1,

the paper's intermediate distributions with the base model's hidden units summed out (they
contribute the factor :math:`2^H` at :math:`\beta = 0`). Its normalizer at
:math:`\beta = 0` is analytic, :math:`\log Z_0 = \sum_i \operatorname{softplus}(a_i) + H\log 2`.
Each run draws :math:`v_1 \sim p_0` exactly, then alternates the weight update
:math:`\log w \mathrel{+}= \log p^*_{\beta_k}(v_k) - \log p^*_{\beta_{k-1}}(v_k)` with a block
Gibbs sweep :math:`v_{k+1} \sim T_{\beta_k}(\cdot \mid v_k)` that leaves :math:`p_{\beta_k}`
invariant; :math:`\mathbb{E}[w] = Z_K / Z_0` exactly, so
:math:`\hat Z = Z_0 \frac{1}{M}\sum_m w_m`. All runs are rows of one tensor.

**Which side it errs on.** :math:`\hat Z` is unbiased, so by Jensen
:math:`\mathbb{E}[\log \hat Z] \le \log Z`: forward AIS is a stochastic *lower* bound of
:math:`\log Z` and the test log-likelihood :math:`-\overline{F(v)} - \log \hat Z` it gives is
optimistic. Reverse AIS (:func:`reverse_ais_log_partition`; Accurate and Conservative
Estimates of MRF Log-likelihood using Reverse Annealing, Burda, Grosse & Salakhutdinov,
2015, https://arxiv.org/abs/1412.8566) anneals from *exact* samples of the RBM down to the
base, estimates :math:`Z_0/Z_K` without bias, and so gives a stochastic *upper* bound of
:math:`\log Z`; exact samples exist for RBMs with a layer small enough to enumerate
(:func:`exact_samples`), where the two estimates bracket the truth.

Example:
    >>> import torch
    >>> from pyrogen.models import BernoulliRBM
    >>> rbm = BernoulliRBM(10, 6, init_scale=0.5)
    >>> out = ais_log_partition(rbm, betas=torch.linspace(0, 1, 200), num_runs=50)
    >>> bool(abs(out.log_z - rbm.log_partition()) < 0.1)
    True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

if TYPE_CHECKING:  # annotations only: the metrics layer does not import the models
    from pyrogen.models.rbm import BernoulliRBM

__all__ = [
    "AISResult",
    "RBMLogLikelihood",
    "ais_log_partition",
    "base_log_partition",
    "base_rate_bias",
    "default_betas",
    "exact_samples",
    "rbm_log_likelihood",
    "reverse_ais_log_partition",
]


class AISResult(NamedTuple):
    r"""An AIS estimate of :math:`\log Z` at the last temperature.

    Attributes:
        log_z: :math:`\log \hat Z`.
        log_z_lower: the lower end of the spread, :math:`\log(\hat Z - s\hat\sigma)`
            (forward) with :math:`\hat\sigma` the standard error of :math:`\hat Z` over runs
            and :math:`s` = ``num_sd`` (3 in the paper); ``-inf`` when the interval reaches 0.
        log_z_upper: :math:`\log(\hat Z + s\hat\sigma)` (forward). For reverse AIS the
            interval of :math:`\widehat{Z_0/Z}` is mapped through :math:`\log Z_0 - \log(\cdot)`.
        log_weights: per-run log-weights ``(num_runs,)``.
        log_z_base: :math:`\log Z_0`, analytic.
        direction: ``"forward"`` (stochastic lower bound) or ``"reverse"`` (upper bound).
    """

    log_z: Tensor
    log_z_lower: Tensor
    log_z_upper: Tensor
    log_weights: Tensor
    log_z_base: Tensor
    direction: str


class RBMLogLikelihood(NamedTuple):
    r"""Average log-likelihood :math:`-\overline{F(v)} - \log Z` of binary rows.

    Attributes:
        per_point: :math:`-F(v_n) - \log Z`, ``(N,)``.
        mean: their mean.
        stderr: the standard error of ``mean`` over data points.
        lower: ``mean`` with the upper end of the :math:`\log Z` spread (equal to ``mean``
            when an exact :math:`\log Z` is given).
        upper: ``mean`` with the lower end of the spread.
    """

    per_point: Tensor
    mean: float
    stderr: float
    lower: float
    upper: float


def default_betas(dtype: torch.dtype = torch.float64) -> Tensor:
    r"""The schedule of Salakhutdinov & Murray's code: steps of 1e-3 on [0, 0.5], 1e-4 on
    [0.5, 0.9] and 1e-5 on [0.9, 1]: 14,501 temperatures, 14,500 transitions."""
    parts = [
        torch.linspace(0.0, 0.5, 501, dtype=torch.float64),
        torch.linspace(0.5, 0.9, 4001, dtype=torch.float64)[1:],
        torch.linspace(0.9, 1.0, 10001, dtype=torch.float64)[1:],
    ]
    return torch.cat(parts).to(dtype)


def base_rate_bias(data: Tensor, smoothing: float = 0.05) -> Tensor:
    r"""Visible biases of the base-rate model: the logits of the data's smoothed marginals.

    :math:`p_i = (\sum_n v_{ni} + sN) / (N + 2sN)`, :math:`a_i = \log p_i - \log(1 - p_i)`.
    Salakhutdinov & Murray's ``base_rate.m`` adds the pseudo-counts :math:`sN` (5 per 100
    images) to the "on" count only; adding them to both keeps a unit that is always on finite.
    Any values in [0, 1] are accepted (grey levels give the same marginals as their
    Bernoulli draws in expectation).

    Args:
        data: rows ``(N, V)`` with values in [0, 1].
        smoothing: pseudo-counts per data point, :math:`s`.
    """
    if data.dim() != 2 or data.shape[0] == 0:
        raise ValueError(f"data must be rows (N, V) with N >= 1, got shape {tuple(data.shape)}")
    if not bool(((data >= 0) & (data <= 1)).all()):
        raise ValueError("the base rate needs data in [0, 1]")
    if not smoothing > 0:
        raise ValueError(f"smoothing must be positive, got {smoothing}")
    n = data.shape[0]
    p = (data.sum(0) + smoothing * n) / (n + 2 * smoothing * n)
    return torch.log(p) - torch.log1p(-p)


def base_log_partition(base_bias: Tensor, num_hidden: int) -> Tensor:
    r""":math:`\log Z_0 = \sum_i \operatorname{softplus}(a_i) + H \log 2`, in float64."""
    return F.softplus(base_bias.double()).sum() + num_hidden * math.log(2.0)


def _check_betas(betas: Tensor) -> list[float]:
    if betas.dim() != 1 or betas.numel() == 0:
        raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
    values = betas.double()
    if not bool(torch.isfinite(values).all()) or values.min() < 0 or values.max() > 1:
        raise ValueError("betas must lie in [0, 1]")
    if values[0] != 0:
        raise ValueError(f"betas must start at 0 (the base model), got {float(values[0])}")
    if bool((values[1:] < values[:-1]).any()):
        raise ValueError("betas must be non-decreasing")
    return values.tolist()


def _bias(rbm: BernoulliRBM, base_bias: Tensor | None) -> Tensor:
    w = rbm.weight
    if base_bias is None:
        return torch.zeros(rbm.num_visible, dtype=w.dtype, device=w.device)
    if base_bias.shape != (rbm.num_visible,):
        raise ValueError(
            f"base_bias must have shape ({rbm.num_visible},), got {tuple(base_bias.shape)}"
        )
    if not bool(torch.isfinite(base_bias).all()):
        raise ValueError("base_bias must be finite")
    return base_bias.to(w)


@torch.no_grad()
def _anneal(
    rbm: BernoulliRBM,
    base: Tensor,
    betas: list[float],
    visible: Tensor,
    generator: torch.Generator | None,
    progress: bool,
) -> Tensor:
    """Log-weights of runs started at ``visible`` ``(M, V)`` along ``betas`` (either way)."""
    weight, hidden_bias = rbm.weight.detach(), rbm.hidden_bias.detach()
    delta_bias = rbm.visible_bias.detach() - base
    log_w = torch.zeros(visible.shape[0], dtype=torch.float64, device=visible.device)
    v = visible
    last = len(betas) - 1
    for k in tqdm(range(1, last + 1), disable=not progress, desc="AIS", mininterval=1.0):
        before, now = betas[k - 1], betas[k]
        # x serves the weight update at both temperatures and the hidden draw of the sweep.
        x = v @ weight + hidden_bias
        step = (now - before) * (v @ delta_bias) + (
            F.softplus(now * x) - F.softplus(before * x)
        ).sum(-1)
        log_w += step.double()
        if k < last:  # the last sweep would not change the weight
            h = torch.bernoulli(torch.sigmoid(now * x), generator=generator)
            logits = base + now * (h @ weight.T + delta_bias)
            v = torch.bernoulli(torch.sigmoid(logits), generator=generator)
    return log_w


def _spread(
    log_w: Tensor, num_sd: float, reverse: bool, log_z0: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """log Z and the ends of log(mean w +- num_sd * s.e.), scaled by the largest weight."""
    top = log_w.max()
    w = torch.exp(log_w - top)
    mean = w.mean()
    se = w.std() / math.sqrt(len(w)) if len(w) > 1 else torch.zeros_like(mean)
    low_w = mean - num_sd * se
    log_low = top + torch.log(low_w) if low_w > 0 else torch.tensor(-math.inf).to(top)
    log_mid = top + torch.log(mean)
    log_high = top + torch.log(mean + num_sd * se)
    if reverse:
        return log_z0 - log_mid, log_z0 - log_high, log_z0 - log_low
    return log_z0 + log_mid, log_z0 + log_low, log_z0 + log_high


def ais_log_partition(
    rbm: BernoulliRBM,
    base_bias: Tensor | None = None,
    betas: Tensor | None = None,
    num_runs: int = 100,
    num_sd: float = 3.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AISResult:
    r"""Forward AIS estimate of :math:`\log Z` of ``rbm`` (at the last beta).

    Args:
        rbm: the model.
        base_bias: visible biases :math:`a` of the base-rate model, usually
            :func:`base_rate_bias` of the training data; zeros (uniform) by default.
        betas: temperatures from 0, non-decreasing, normally ending at 1; by default
            :func:`default_betas` (14,500 transitions). ``betas = [0]`` returns the base
            model's :math:`\log Z_0` exactly.
        num_runs: independent runs :math:`M`, one tensor row each.
        num_sd: the width of the reported spread in standard errors of :math:`\hat Z`.
        generator: random numbers on the RBM's device, for reproducible runs.
        progress: a tqdm bar over temperatures.

    Runs in the RBM's dtype (float32 matrix products for a float32 RBM); the log-weights
    are accumulated in float64.
    """
    if isinstance(num_runs, bool) or not isinstance(num_runs, int) or num_runs < 1:
        raise ValueError(f"num_runs must be a positive integer, got {num_runs!r}")
    base = _bias(rbm, base_bias)
    schedule = _check_betas(default_betas() if betas is None else betas)
    start = torch.bernoulli(
        torch.sigmoid(base).expand(num_runs, rbm.num_visible).contiguous(), generator=generator
    )
    log_w = _anneal(rbm, base, schedule, start, generator, progress)
    log_z0 = base_log_partition(base, rbm.num_hidden)
    log_z, low, high = _spread(log_w, num_sd, False, log_z0)
    return AISResult(log_z, low, high, log_w, log_z0, "forward")


def reverse_ais_log_partition(
    rbm: BernoulliRBM,
    samples: Tensor,
    base_bias: Tensor | None = None,
    betas: Tensor | None = None,
    num_sd: float = 3.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AISResult:
    r"""Reverse AIS: anneal from ``samples`` of the RBM down to the base model.

    With exact samples (:func:`exact_samples`), :math:`\frac{1}{M}\sum_m w_m` is unbiased for
    :math:`Z_0/Z`, so :math:`\log Z_0 - \log \frac{1}{M}\sum_m w_m` is a stochastic upper
    bound of :math:`\log Z`. From approximate samples (a long Gibbs chain, data) it is only
    an estimate.

    Args:
        rbm: the model.
        samples: one run per row, ``(M, V)``, binary.
        base_bias, betas, num_sd, generator, progress: as in :func:`ais_log_partition`
            (``betas`` in increasing order; they are walked backwards).
    """
    if samples.dim() != 2 or samples.shape[1] != rbm.num_visible or samples.shape[0] == 0:
        raise ValueError(
            f"samples must be rows (M, {rbm.num_visible}), got shape {tuple(samples.shape)}"
        )
    if not bool(((samples == 0) | (samples == 1)).all()):
        raise ValueError("samples must be binary (0 or 1)")
    base = _bias(rbm, base_bias)
    schedule = _check_betas(default_betas() if betas is None else betas)
    v = samples.to(rbm.weight)
    log_w = _anneal(rbm, base, schedule[::-1], v, generator, progress)
    log_z0 = base_log_partition(base, rbm.num_hidden)
    log_z, low, high = _spread(log_w, num_sd, True, log_z0)
    return AISResult(log_z, low, high, log_w, log_z0, "reverse")


def _states(n: int, like: Tensor) -> Tensor:
    bits = 2 ** torch.arange(n, device=like.device)
    idx = torch.arange(2**n, device=like.device)
    return ((idx.unsqueeze(-1) & bits) > 0).to(like.dtype)


@torch.no_grad()
def exact_samples(
    rbm: BernoulliRBM, num_samples: int, generator: torch.Generator | None = None
) -> Tensor:
    r"""Independent exact draws of :math:`v \sim p(v)` for an RBM with a layer of at most
    20 units, by enumerating that layer (then :math:`v \mid h` if it is the hidden one)."""
    small = min(rbm.num_visible, rbm.num_hidden)
    if small > 20:
        raise ValueError(f"exact sampling enumerates a layer of at most 20 units, not {small}")
    w, b, c = rbm.weight, rbm.visible_bias, rbm.hidden_bias
    if rbm.num_visible <= rbm.num_hidden:
        states = _states(rbm.num_visible, w)
        log_p = -rbm.free_energy(states)
    else:
        states = _states(rbm.num_hidden, w)
        log_p = states @ c + F.softplus(states @ w.T + b).sum(-1)
    probs = torch.softmax(log_p.double(), 0)
    idx = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
    if rbm.num_visible <= rbm.num_hidden:
        return states[idx]
    return torch.bernoulli(torch.sigmoid(rbm.visible_logits(states[idx])), generator=generator)


@torch.no_grad()
def rbm_log_likelihood(
    rbm: BernoulliRBM, data: Tensor, log_partition: AISResult | Tensor | float
) -> RBMLogLikelihood:
    r"""Average log-likelihood :math:`-\overline{F(v)} - \log Z` of binary rows ``data``.

    Args:
        rbm: the model.
        data: binary rows ``(N, V)``.
        log_partition: an :class:`AISResult` (its spread gives ``lower``/``upper``), or an
            exact :math:`\log Z`.
    """
    if data.dim() != 2 or data.shape[0] == 0:
        raise ValueError(f"data must be rows (N, V) with N >= 1, got shape {tuple(data.shape)}")
    if not bool(((data == 0) | (data == 1)).all()):
        raise ValueError("data must be binary (0 or 1)")
    neg_free_energy = -rbm.free_energy(data.to(rbm.weight)).double()
    if isinstance(log_partition, AISResult):
        log_z = float(log_partition.log_z)
        low, high = float(log_partition.log_z_lower), float(log_partition.log_z_upper)
    else:
        log_z = low = high = float(log_partition)
    n = len(neg_free_energy)
    stderr = float(neg_free_energy.std() / math.sqrt(n)) if n > 1 else 0.0
    mean = float(neg_free_energy.mean())
    return RBMLogLikelihood(neg_free_energy - log_z, mean - log_z, stderr, mean - high, mean - low)
