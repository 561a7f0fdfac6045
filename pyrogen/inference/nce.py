r"""Noise-contrastive estimation, and self-contrastive estimation (noise = an earlier model).

**NCE.** Noise-contrastive estimation: A new estimation principle for unnormalized
statistical models (Gutmann & Hyvärinen, 2010),
https://proceedings.mlr.press/v9/gutmann10a.html, and Noise-Contrastive Estimation of
Unnormalized Statistical Models, with Applications to Natural Image Statistics (Gutmann &
Hyvärinen, 2012), https://jmlr.org/papers/v13/gutmann12a.html. An unnormalized model
:math:`\tilde p_\theta` is fitted by logistic regression of :math:`n` data points against
:math:`\nu n` samples of a noise distribution :math:`q` that can be sampled and scored:

.. math::
    G(x) = \log \tilde p_\theta(x) - \log Z - \log \nu - \log q(x), \qquad
    \mathcal{L}_{NCE} = \mathbb{E}_{p_d}\,\mathrm{softplus}(-G)
        + \nu\,\mathbb{E}_{q}\,\mathrm{softplus}(G)

(:func:`pyrogen.inference.critic.logistic`). Its minimiser over all functions is
:math:`G = \log p_d / (\nu q)`, so when the family contains the data distribution,
:math:`\tilde p_\theta / Z = p_d`: the shape *and* the log-normalizer are estimated
(consistency and the asymptotic covariance are Theorems 2 and 3 of the 2012 paper).

The model is a Pyro program ``model(x)`` that scores its data inside a ``pyro.plate`` over
the rows of ``x``, with ``pyro.factor("energy", -E(x))`` (and/or observed sample sites):
:math:`\log \tilde p_\theta(x_n)` is the sum of the trace's log-factors and observed
log-densities at index :math:`n` of that plate (every site must sit in it).

**Where log Z lives.** Either the model holds it (a parameter subtracted inside its factor,
``pyro.factor("energy", -E(x) - log_Z)``, or the model is normalized), the default; or
``NCE(..., learn_log_normalizer=True)`` holds one, :attr:`NCE.normalizer`, an
``nn.Module`` with one parameter ``log_Z`` that every call registers with
``pyro.module(name, normalizer)`` (so :class:`pyro.infer.SVI` steps it, as Pyro parameter
``"<name>$$$log_Z"``) and that ``objective(model, guide)`` adds to its module.

**Latent-variable models** (a guide with sample sites) have no tractable density; NCE then
uses the :math:`K`-particle bound of Importance Weighted Autoencoders (Burda et al., 2015,
https://arxiv.org/abs/1509.00519), ``bound="iwae"``, or the ELBO, ``bound="elbo"``, in
place of :math:`\log \tilde p_\theta(x)`, on data and noise alike. The classifier then
compares bounds, not densities: its fixed point is not the maximum-likelihood estimate, and
the guide's gradient (which is the classifier's gradient too) also rewards a *looser* bound
on noise samples. The IWAE bound is the better density estimate (it tightens with K).

Self-contrastive estimation, NCE against a frozen copy of the model, is
:class:`~pyrogen.inference.self_contrastive.SelfContrastive`.

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> from torch import nn
    >>> class Energy(nn.Module):  # unnormalized Gaussian with a free log-normalizer
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.loc = nn.Parameter(torch.tensor(0.0))
    ...         self.log_Z = nn.Parameter(torch.tensor(0.0))
    ...     def forward(self, x):
    ...         pyro.module("energy", self)
    ...         with pyro.plate("data", x.shape[0]):
    ...             pyro.factor("energy", -0.5 * (x - self.loc) ** 2 - self.log_Z)
    >>> nce = NCE(dist.Normal(0.0, 3.0), nu=2)
    >>> svi = pyro.infer.SVI(Energy(), empty_guide, pyro.optim.Adam({"lr": 0.05}), loss=nce)
    >>> loss = svi.step(torch.randn(100) + 1.0)
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from pyrogen.inference import critic
from pyrogen.inference.densities import Bound, has_guide, held_fixed, log_density, model_parameters
from pyrogen.inference.noise import DistributionNoise, ModelNoise, Noise
from pyrogen.inference.objective import Objective, frozen
from pyrogen.warnings import PyrogenWarning

__all__ = ["NCE", "NCELogits"]

BoundKind = Literal["iwae", "elbo"]
GuideObjective = Literal["nce", "bound"]
_ALPHA: dict[str, float] = {"iwae": 0.0, "elbo": 1.0}


class NCELogits(NamedTuple):
    r"""The classifier's logits :math:`G` and the noise samples they were computed on.

    Attributes:
        data: :math:`G(x_n)` on the data points, shape ``(n,)``.
        noise: :math:`G(y_m)` on the noise samples, shape ``(m,)``, :math:`m = \nu n`
            (rounded, at least 1).
        samples: the noise samples :math:`y_m`, shape ``(m, *point)``.
        log_model: :math:`\log \tilde p_\theta(x_n)` on the data points, before
            :math:`\log Z`, :math:`\log \nu` and :math:`\log q` are taken off: the model's
            log-density, or for a latent-variable model the bound standing in for it (a
            stochastic lower bound of its log-likelihood when the model is normalized),
            shape ``(n,)``.
    """

    data: Tensor
    noise: Tensor
    samples: Tensor
    log_model: Tensor


def _check_nu(nu: Any) -> float:
    if isinstance(nu, bool) or not isinstance(nu, numbers.Real):
        raise TypeError(f"nu must be a real number, got {nu!r}")
    nu = float(nu)
    if not (math.isfinite(nu) and nu > 0):
        raise ValueError(f"nu (noise samples per data point) must be positive and finite, got {nu}")
    return nu


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class _LogNormalizer(nn.Module):
    """The log-normalizer NCE learns when the model has none of its own."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.log_Z = nn.Parameter(torch.tensor(float(init)))


class NCE(Objective):
    r"""Noise-contrastive estimation of an unnormalized Pyro model.

    Noise-Contrastive Estimation of Unnormalized Statistical Models, with Applications to
    Natural Image Statistics (Gutmann & Hyvärinen, 2012),
    https://jmlr.org/papers/v13/gutmann12a.html. The loss is the logistic loss of
    :func:`~pyrogen.inference.critic.logistic` on the logits
    :math:`G(x) = \log \tilde p_\theta(x) - \log Z - \log \nu - \log q(x)` of the
    :math:`n` data rows (label 1) and :math:`m = \mathrm{round}(\nu n)` fresh noise samples
    (label 0), each call; its minimiser is :math:`G = \log p_d/(\nu q)`. The value is the loss
    itself (it is no bound); :attr:`stats` holds the classification accuracy, the mean
    logits and the mean :math:`\log \tilde p_\theta` of the data rows (``log_model_data``;
    for a latent-variable model the bound on the batch, which a bound would report as its
    value) of the last call.

    ``model(x)`` scores rows ``x`` (data and noise samples together, one call) inside a
    ``pyro.plate`` over them; the guide is ignored unless it has sample sites, when the
    density is a bound (see the module notes). Pass :func:`~pyrogen.inference.cd.empty_guide`
    to SVI for a model without latents. The model's own parameters (and NCE's log Z) get
    the gradient; the noise gets none.

    Args:
        noise: :math:`q`: a ``pyro.distributions`` (or torch) distribution whose
            ``batch_shape + event_shape`` is the shape of one data point; or a Pyro model
            ``noise(x)`` whose site ``data_site`` draws the data (sampled by running it with
            that site unobserved; scored by tracing it on the points, so it must have no
            latent sites); or a ``(model, guide)`` pair, scored by the bound.
        nu: noise samples per data point, :math:`\nu > 0`.
        num_particles: :math:`K` of the bound, for latent-variable models and noises.
        bound: ``"iwae"`` (the :math:`K`-particle importance-weighted bound) or ``"elbo"``.
        learn_log_normalizer: hold a learned :math:`\log Z` here (see the module notes);
            leave it off when the model has its own or is normalized.
        log_normalizer_init: its initial value.
        data_site: the name of a Pyro-model noise's data site.
        max_plate_nesting: plates of the model (for the bound); 1 for the VAEs here,
            guessed by one extra run when left at infinity.
        vectorize_particles: draw the bound's particles as a ``pyro.plate``.
        name: the ``pyro.module`` name of the learned log-normalizer.
        guide_objective: for latent-variable models, what trains the guide: ``"nce"`` (the
            classifier's loss through the bound, which also rewards a looser bound on noise
            samples) or ``"bound"`` (the guide maximises the bound on the data rows, as in
            ordinary variational training, and the NCE loss reaches the model's parameters
            only: the loss is then NCE with the guide's draws held fixed plus the negative
            mean bound on the data with the model's parameters held fixed).
        noise_rows_alpha: for latent-variable models, the Rényi order of the bound that
            stands for the model's density on the *noise* rows; None (the default) uses
            ``bound`` there as on the data rows. A negative order is an upper bound on
            :math:`\log \tilde p(x)` in the limit of many particles (-1: the chi-square
            upper bound CUBO of Dieng et al. 2017, :math:`\frac12 \log E_q w^2`): the
            noise term then pushes the model's likelihood of noise samples down through a
            bound above it, where a lower bound can be pushed down by loosening it (the flaw
            the self-contrastive VAE experiment's source points out). The data rows keep
            ``bound``.
    """

    def __init__(
        self,
        noise: torch.distributions.Distribution
        | Callable[..., Any]
        | tuple[Callable[..., Any], Callable[..., Any]]
        | None,
        nu: float = 1.0,
        *,
        num_particles: int = 1,
        bound: BoundKind = "iwae",
        learn_log_normalizer: bool = False,
        log_normalizer_init: float = 0.0,
        data_site: str = "x",
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
        name: str = "nce",
        guide_objective: GuideObjective = "nce",
        noise_rows_alpha: float | None = None,
    ) -> None:
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
        )
        self.nu = _check_nu(nu)
        if bound not in _ALPHA:
            raise ValueError(f"bound must be one of {tuple(_ALPHA)}, got {bound!r}")
        self.bound = bound
        if guide_objective not in ("nce", "bound"):
            raise ValueError(f"guide_objective must be 'nce' or 'bound', got {guide_objective!r}")
        self.guide_objective = guide_objective
        self.data_site = data_site
        self.name = name

        def make_bound() -> Bound:
            return Bound(_ALPHA[bound], num_particles, max_plate_nesting, vectorize_particles)

        self._model_bound = make_bound()
        self._noise_bound = make_bound()
        self._noise_rows_bound: Bound | None = None
        if noise_rows_alpha is not None:
            if not isinstance(noise_rows_alpha, numbers.Real) or not noise_rows_alpha < 0:
                raise ValueError(
                    f"noise_rows_alpha must be a negative Rényi order (an upper bound), got "
                    f"{noise_rows_alpha!r}"
                )
            self._noise_rows_bound = Bound(
                float(noise_rows_alpha), num_particles, max_plate_nesting, vectorize_particles
            )
        self.noise_rows_alpha = noise_rows_alpha
        self._warned_one_particle = False
        self.normalizer: _LogNormalizer | None = None
        """The learned log-normalizer's module (``learn_log_normalizer=True``), else None: a
        player of role "model", Pyro name ``"<name>$$$log_Z"``."""
        if learn_log_normalizer:
            self.normalizer = _LogNormalizer(log_normalizer_init)
            self.add_player("normalizer", self.normalizer, role="model", name=name)
        self.stats: dict[str, float] = {}
        self._noise: Noise | None = self._as_noise(noise)

    def _as_noise(self, noise: Any) -> Noise | None:
        if isinstance(noise, torch.distributions.Distribution):
            return DistributionNoise(noise)
        if isinstance(noise, tuple) and len(noise) == 2 and all(callable(f) for f in noise):
            return ModelNoise(noise[0], noise[1], self.data_site, self._noise_bound)
        if callable(noise):
            return ModelNoise(noise, None, self.data_site, self._noise_bound)
        raise TypeError(
            "noise must be a distribution, a Pyro model, or a (model, guide) pair; got "
            f"{type(noise).__name__}"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(nu={self.nu}, num_particles={self.num_particles}, "
            f"bound={self.bound!r}, learn_log_normalizer={self.normalizer is not None}"
            + (
                ""
                if self.noise_rows_alpha is None
                else f", noise_rows_alpha={self.noise_rows_alpha}"
            )
            + ")"
        )

    @property
    def log_normalizer(self) -> Tensor | None:
        """The learned :math:`\\log Z` (a parameter), or None when the model holds its own."""
        return None if self.normalizer is None else self.normalizer.log_Z

    def num_noise(self, num_data: int) -> int:
        r""":math:`m = \mathrm{round}(\nu n)`, at least 1."""
        return max(1, round(self.nu * num_data))

    # Plumbing.
    def _check_data(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
        if len(args) != 1 or kwargs:
            raise TypeError(
                f"{type(self).__name__} takes one argument after model and guide: the data"
            )
        data = args[0]
        if not isinstance(data, Tensor) or data.dim() < 1 or data.shape[0] == 0:
            shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
            raise ValueError(f"data must be a tensor of points (n, ...) with n >= 1, got {shape}")
        if data.is_floating_point() and not bool(torch.isfinite(data).all()):
            bad = int((~torch.isfinite(data)).sum())
            raise ValueError(
                f"the data contain NaN or infinite values ({bad} of {data.numel()} entries): "
                "drop or impute them first"
            )
        return data

    def _noise_source(self, model: Callable[..., Any], guide: Callable[..., Any]) -> Noise:
        assert self._noise is not None
        return self._noise

    # The objective.
    def logits(
        self, model: Callable[..., Any], guide: Callable[..., Any], data: Tensor
    ) -> NCELogits:
        r"""Draws :math:`m = \mathrm{round}(\nu n)` noise samples and returns the classifier's
        logits on the data and on them (differentiable in the model's parameters, and in
        the guide's unless ``guide_objective="bound"``)."""
        data = self._check_data((data,), {})
        noise = self._noise_source(model, guide)
        n, m = data.shape[0], self.num_noise(data.shape[0])
        with torch.no_grad():
            samples = noise.sample(m, data)
        if tuple(samples.shape) != (m, *data.shape[1:]):
            raise ValueError(
                f"the noise drew samples of shape {tuple(samples.shape)}, expected "
                f"{(m, *data.shape[1:])} (m = round(nu * n) points shaped like the data's)"
            )
        samples = samples.to(device=data.device, dtype=data.dtype)
        x = torch.cat([data, samples])
        scorer = guide
        if self.guide_objective == "bound" and has_guide(guide):
            scorer = held_fixed(guide)
        if self._noise_rows_bound is not None and has_guide(scorer):
            if self.num_particles == 1 and not self._warned_one_particle:
                self._warned_one_particle = True
                warnings.warn(
                    "noise_rows_alpha has no effect with num_particles=1: with one particle "
                    "every Rényi order gives the same estimate, log w; use num_particles > 1",
                    PyrogenWarning,
                    stacklevel=3,
                )
            # data rows by the lower bound, noise rows by the upper one
            log_model = torch.cat(
                [
                    log_density(model, scorer, data, self._model_bound),
                    log_density(model, scorer, samples, self._noise_rows_bound),
                ]
            )
        else:
            log_model = log_density(model, scorer, x, self._model_bound)
        with torch.no_grad():
            log_noise = noise.log_prob(x)
        logit = log_model - log_noise.to(log_model) - math.log(self.nu)
        if self.normalizer is not None:
            logit = logit - self.normalizer.log_Z.to(logit)
        return NCELogits(logit[:n], logit[n:], samples, log_model[:n])

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        r""":math:`n\,(\mathbb{E}_{p_d}\,\mathrm{softplus}(-G) + \nu\,\mathbb{E}_q\,
        \mathrm{softplus}(G))` on one batch of :math:`n` data rows (the only argument): a sum
        over the data points, as every objective's loss."""
        data = self._check_data(args, kwargs)
        out = self.logits(model, guide, data)
        # a sum over the data rows, as Pyro's losses are
        loss = data.shape[0] * critic.logistic(out.data, out.noise, self.nu)
        if self.guide_objective == "bound" and has_guide(guide):
            with frozen(model_parameters(model, data)):
                bound = log_density(model, guide, data, self._model_bound)
            loss = loss - bound.sum()
        with torch.no_grad():
            right = float((out.data > 0).sum() + (out.noise < 0).sum())
            self.stats = {
                "accuracy": right / (out.data.numel() + out.noise.numel()),
                "logit_data": float(out.data.mean()),
                "logit_noise": float(out.noise.mean()),
                "log_model_data": float(out.log_model.mean()),
            }
        return loss
