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

**Self-contrastive estimation.** On distinguishability criteria for estimating generative
models (Goodfellow, 2014), https://arxiv.org/abs/1412.6515: with :math:`\nu = 1` and the
noise a frozen copy of the model being trained, the expected NCE gradient is half the
log-likelihood gradient at the moment of the copy; refreshing the copy every few epochs
makes the fixed point the maximum-likelihood estimate (for exact densities).
:class:`SelfContrastive` does this: :meth:`SelfContrastive.refresh` deep-copies the model
(and its guide), freezes the copy, and makes it the noise; its samples come from running
the copy with its data site unobserved, its log-density is the copy's own (exact, or the
same bound as the model's). For a VAE the normalizer is known (:math:`Z = 1`), so no log Z
is learned there unless ``learn_log_normalizer=True`` is asked.

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

import copy
import math
import numbers
import types
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.elbo import ELBOModule
from pyro.params import param_with_module_name
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn

from pyrogen.inference import critic
from pyrogen.inference.gan import generate
from pyrogen.inference.objective import Objective, empty_guide, frozen
from pyrogen.inference.renyi import RenyiBound, renyi_reduce

__all__ = ["NCE", "NCELogits", "SelfContrastive"]

Bound = Literal["iwae", "elbo"]
GuideObjective = Literal["nce", "bound"]
_ALPHA: dict[str, float] = {"iwae": 0.0, "elbo": 1.0}


class NCELogits(NamedTuple):
    r"""The classifier's logits :math:`G` and the noise samples they were computed on.

    Attributes:
        data: :math:`G(x_n)` on the data points, shape ``(n,)``.
        noise: :math:`G(y_m)` on the noise samples, shape ``(m,)``, :math:`m = \nu n`
            (rounded, at least 1).
        samples: the noise samples :math:`y_m`, shape ``(m, *point)``.
    """

    data: Tensor
    noise: Tensor
    samples: Tensor


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


def _has_guide(guide: Callable[..., Any] | None) -> bool:
    return guide is not None and guide is not empty_guide


# Per-point log-densities.
def _data_frame_dim(name: str, site: Any, n: int) -> int:
    frames = [
        f for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None and f.size == n
    ]
    if not frames:
        raise ValueError(
            f"site '{name}' is not inside a pyro.plate over the {n} data rows: NCE needs "
            "log p~(x) per data point, so every factor and observed site must sit in the "
            "data plate"
        )
    if len(frames) > 1:
        raise ValueError(
            f"site '{name}' sits in {len(frames)} plates of size {n} "
            f"({[f.name for f in frames]}): which one holds the data rows is ambiguous"
        )
    return int(frames[0].dim)


def _exact_log_density(trace: Trace, n: int) -> Tensor:
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
        fn: Any = site["fn"]
        lp = fn.log_prob(site["value"], *site["args"], **site["kwargs"])
        if not isinstance(lp, Tensor):
            lp = torch.as_tensor(lp)
        if site["mask"] is not None:
            mask = torch.as_tensor(site["mask"], device=lp.device)
            lp = torch.where(mask, lp, lp.new_zeros(()))
        dim = _data_frame_dim(name, site, n)
        if lp.dim() < -dim:
            lp = lp.reshape((1,) * (-dim - lp.dim()) + tuple(lp.shape))
        lp = lp.movedim(dim, 0)
        lp = lp.reshape(lp.shape[0], -1).sum(1).expand(n)
        total = lp if total is None else total + lp
    if total is None:
        raise ValueError("the model has no factor or observed site: it scores nothing")
    return total


def _log_density(
    model: Callable[..., Any],
    guide: Callable[..., Any] | None,
    x: Tensor,
    bound: RenyiBound,
) -> Tensor:
    r""":math:`\log \tilde p(x_n)` per row, ``(n,)``: exact from the model's trace without a
    guide, else the bound (IWAE or ELBO) with the guide's particles."""
    n = x.shape[0]
    if not _has_guide(guide):
        return _exact_log_density(poutine.trace(model).get_trace(x), n)
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


def _held_fixed(guide: Callable[..., Any]) -> Callable[..., Any]:
    """The guide run without autograd: its draws and densities carry no gradient."""

    def fixed(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return guide(*args, **kwargs)

    return fixed


def _model_parameters(model: Callable[..., Any], data: Tensor) -> list[Tensor]:
    """The unconstrained leaves of the Pyro parameters the model reads (one run on a row,
    latents from the prior, without autograd, leaving the random streams as they were)."""
    devices = [data.device] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices), torch.no_grad(), poutine.block():
        trace = poutine.trace(model, param_only=True).get_trace(data[:1])
    store = dict(pyro.get_param_store().named_parameters())
    return [store[name] for name, site in trace.nodes.items() if name in store]


# Noise sources: a distribution, or a Pyro model (with a guide: scored by a bound).
class _FrozenParams(Messenger):
    """Parameter reads inside a frozen snapshot: the copy's own parameters are returned as
    they are (the param store never sees them, so it cannot make them trainable again), and
    a read that would return a tensor being trained is refused. A model that closes over a
    live module (a plain function calling ``pyro.module``) is not copied by
    ``copy.deepcopy``; its snapshot would silently follow training."""

    def __init__(self, own: frozenset[int]) -> None:
        super().__init__()
        self.own = own

    def _pyro_param(self, msg: Any) -> None:
        init = msg["args"][1] if len(msg["args"]) > 1 else None
        if not isinstance(init, Tensor):
            return
        if id(init) in self.own:
            msg["value"] = init
            msg["done"] = True
        elif init.requires_grad:
            raise ValueError(
                f"the frozen noise model reads the trainable parameter '{msg['name']}': the model "
                "(and guide) must be nn.Modules, or methods of one, so that a deep copy freezes "
                "them; a plain function closing over a module cannot be copied"
            )


class _FrozenStore(NamedTuple):
    """A copy of Pyro's param store (its three tables), for a frozen snapshot to read."""

    params: dict[str, Tensor]
    param_to_name: dict[Tensor, str]
    constraints: dict[str, Any]

    @classmethod
    def copy_of_global(cls) -> _FrozenStore:
        store = pyro.get_param_store()
        params = {k: v.detach().clone() for k, v in store.named_parameters()}
        return cls(params, {v: k for k, v in params.items()}, dict(store._constraints))


class _Snapshot(NamedTuple):
    """What a frozen copy runs against: the param store's copy, and its own modules."""

    store: _FrozenStore
    modules: tuple[nn.Module, ...]

    @property
    def own(self) -> frozenset[int]:
        return frozenset(id(p) for module in self.modules for p in module.parameters())

    def freeze(self) -> None:
        # Also after every run: a parameter read hidden from the handlers (an inner
        # poutine.block) reaches the store, which marks a new entry trainable.
        for module in self.modules:
            module.requires_grad_(False)


@contextmanager
def _swapped_param_store(frozen: _FrozenStore) -> Iterator[None]:
    """Run against ``frozen`` instead of the global param store. ``ParamStoreDict.scope``
    would do it, but its ``get_state`` strips the ``unconstrained`` references that
    :class:`pyro.infer.SVI` reads from the live parameters; this swaps the tables only.
    (``PyroModule`` parameters read the store's tables directly, so a handler is not enough.)
    """
    store = pyro.get_param_store()
    saved = store._params, store._param_to_name, store._constraints
    store._params, store._param_to_name, store._constraints = frozen
    try:
        yield
    finally:
        store._params, store._param_to_name, store._constraints = saved


class _Noise:
    """Draws noise samples and scores rows; no gradient flows into it."""

    def sample(self, num: int, data: Tensor) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class _DistributionNoise(_Noise):
    def __init__(self, distribution: torch.distributions.Distribution) -> None:
        self.distribution = distribution

    def _check(self, data: Tensor) -> None:
        d = self.distribution
        shape = tuple(d.batch_shape) + tuple(d.event_shape)
        if shape != tuple(data.shape[1:]):
            raise ValueError(
                f"the noise distribution draws points of shape {shape} (batch_shape "
                f"{tuple(d.batch_shape)} + event_shape {tuple(d.event_shape)}), the data points "
                f"have shape {tuple(data.shape[1:])}: give the noise the data's point shape "
                "(e.g. dist.Normal(loc, scale).to_event(1) for rows)"
            )

    def sample(self, num: int, data: Tensor) -> Tensor:
        self._check(data)
        return self.distribution.sample(torch.Size([num]))

    def log_prob(self, x: Tensor) -> Tensor:
        self._check(x)
        lp = self.distribution.log_prob(x)
        return lp.reshape(x.shape[0], -1).sum(1)


class _ModelNoise(_Noise):
    """A Pyro model as noise: sampled by running it with its data site unobserved, scored
    by its trace (or, with a guide, by the bound). A frozen snapshot runs against its own
    copy of the param store."""

    def __init__(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any] | None,
        data_site: str,
        bound: RenyiBound,
        snapshot: _Snapshot | None = None,
        log_normalizer: float = 0.0,
    ) -> None:
        self.model = model
        self.guide = guide if _has_guide(guide) else None
        self.data_site = data_site
        self.bound = bound
        self.snapshot = snapshot
        self.log_normalizer = log_normalizer

    @contextmanager
    def _running(self) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(poutine.block())  # hidden from SVI's parameter capture
            if self.snapshot is not None:
                stack.callback(self.snapshot.freeze)
                stack.enter_context(_swapped_param_store(self.snapshot.store))
                stack.enter_context(_FrozenParams(self.snapshot.own))
            yield

    def sample(self, num: int, data: Tensor) -> Tensor:
        # The model is called with data rows (for their shape and sizes); the data site
        # then draws instead of observing.
        rows = torch.arange(num, device=data.device) % data.shape[0]
        with self._running():
            try:
                value, _ = generate(self.model, self.data_site, data[rows])
            except ValueError as exc:
                if "no sample site named" not in str(exc):
                    raise
                raise ValueError(
                    f"the noise model cannot be sampled: {exc}. The noise must draw its data "
                    f"at a sample site named '{self.data_site}' (pass data_site=); an "
                    "unnormalized model (pyro.factor only) cannot serve as noise"
                ) from exc
        return value

    def log_prob(self, x: Tensor) -> Tensor:
        with self._running():
            return _log_density(self.model, self.guide, x, self.bound) - self.log_normalizer


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
    itself (it is no bound); :attr:`stats` holds the classification accuracy and the mean
    logits of the last call.

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
        bound: Bound = "iwae",
        learn_log_normalizer: bool = False,
        log_normalizer_init: float = 0.0,
        data_site: str = "x",
        max_plate_nesting: float = math.inf,
        vectorize_particles: bool = True,
        name: str = "nce",
        guide_objective: GuideObjective = "nce",
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

        def make_bound() -> RenyiBound:
            return RenyiBound(
                _ALPHA[bound],
                num_particles,
                max_plate_nesting=max_plate_nesting,
                vectorize_particles=vectorize_particles,
            )

        self._model_bound = make_bound()
        self._noise_bound = make_bound()
        self.normalizer: _LogNormalizer | None = (
            _LogNormalizer(log_normalizer_init) if learn_log_normalizer else None
        )
        """The learned log-normalizer's module (``learn_log_normalizer=True``), else None."""
        self.stats: dict[str, float] = {}
        self._noise: _Noise | None = self._as_noise(noise)

    def _as_noise(self, noise: Any) -> _Noise | None:
        if isinstance(noise, torch.distributions.Distribution):
            return _DistributionNoise(noise)
        if isinstance(noise, tuple) and len(noise) == 2 and all(callable(f) for f in noise):
            return _ModelNoise(noise[0], noise[1], self.data_site, self._noise_bound)
        if callable(noise):
            return _ModelNoise(noise, None, self.data_site, self._noise_bound)
        raise TypeError(
            "noise must be a distribution, a Pyro model, or a (model, guide) pair; got "
            f"{type(noise).__name__}"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(nu={self.nu}, num_particles={self.num_particles}, "
            f"bound={self.bound!r}, learn_log_normalizer={self.normalizer is not None})"
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

    def _register(self) -> None:
        """``pyro.module(name, normalizer)`` with the normalizer's own tensor, replacing a
        stale entry of that name (as ContrastiveDivergence does for its energy)."""
        if self.normalizer is None:
            return
        store = pyro.get_param_store()
        full = param_with_module_name(self.name, "log_Z")
        if full in store and store.get_param(full) is not self.normalizer.log_Z:
            del store[full]
        pyro.module(self.name, self.normalizer)

    def _noise_source(self, model: Callable[..., Any], guide: Callable[..., Any]) -> _Noise:
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
        if self.guide_objective == "bound" and _has_guide(guide):
            scorer = _held_fixed(guide)
        log_model = _log_density(model, scorer, x, self._model_bound)
        with torch.no_grad():
            log_noise = noise.log_prob(x)
        logit = log_model - log_noise.to(log_model) - math.log(self.nu)
        if self.normalizer is not None:
            logit = logit - self.normalizer.log_Z.to(logit)
        return NCELogits(logit[:n], logit[n:], samples)

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        r""":math:`\mathbb{E}_{p_d}\,\mathrm{softplus}(-G) + \nu\,\mathbb{E}_q\,
        \mathrm{softplus}(G)` on one batch of data rows (the only argument)."""
        data = self._check_data(args, kwargs)
        self._register()
        out = self.logits(model, guide, data)
        loss = critic.logistic(out.data, out.noise, self.nu)
        if self.guide_objective == "bound" and _has_guide(guide):
            with frozen(_model_parameters(model, data)):
                bound = _log_density(model, guide, data, self._model_bound)
            loss = loss - bound.mean()
        with torch.no_grad():
            right = float((out.data > 0).sum() + (out.noise < 0).sum())
            self.stats = {
                "accuracy": right / (out.data.numel() + out.noise.numel()),
                "logit_data": float(out.data.mean()),
                "logit_noise": float(out.noise.mean()),
            }
        return loss

    def role_parameters(
        self,
        role: str,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, Tensor]:
        """The model's (and guide's) Pyro parameters, and the learned log Z if any."""
        params = super().role_parameters(role, model, guide, *args, **kwargs)
        if self.normalizer is not None:
            params[param_with_module_name(self.name, "log_Z")] = self.normalizer.log_Z
        return params

    def __call__(self, model: Callable[..., Any], guide: Callable[..., Any]) -> ELBOModule:
        """``objective(model, guide)`` as a module; with a learned log Z, it is a parameter."""
        module = ELBOModule(model, guide, self)  # type: ignore[arg-type]
        if self.normalizer is not None:
            module.add_module("normalizer", self.normalizer)
        return module


def _modules_of(objs: tuple[Any, ...]) -> list[nn.Module]:
    found: list[nn.Module] = []
    for obj in objs:
        owner = obj.__self__ if isinstance(obj, types.MethodType) else obj
        if isinstance(owner, nn.Module) and all(owner is not m for m in found):
            found.append(owner)
    return found


class SelfContrastive(NCE):
    r"""NCE whose noise is a frozen copy of the model being trained, renewed every few epochs.

    On distinguishability criteria for estimating generative models (Goodfellow, 2014),
    https://arxiv.org/abs/1412.6515. At the moment of a copy, model and noise agree, every
    logit is :math:`-\log\nu`, and the gradient of the NCE loss is
    :math:`\frac{\nu}{1+\nu}(\overline{\nabla \log p(y)} - \overline{\nabla \log p(x)})`
    over noise draws :math:`y` and data :math:`x`, whose expectation for a normalized model
    with exact densities is :math:`\frac{\nu}{1+\nu}` times the gradient of the negative
    mean log-likelihood; refreshing the copy makes maximum likelihood the fixed point.

    When the noise changes:

    - :meth:`refresh` ``(model, guide)`` makes the noise a deep copy of them, now. The copy's
      modules are frozen (``requires_grad=False``, eval mode) and it reads a copy of Pyro's
      param store taken at the same moment, so ``pyro.param`` values freeze too.
    - The first :meth:`differentiable_loss` call refreshes if nothing has been copied yet: the
      first noise is the model as training starts (its initial weights).
    - The training loop refreshes when :meth:`refresh_due` ``(epoch)`` says so, after the
      epochs ``refresh_every, 2 refresh_every, ...`` (``epoch`` counts finished epochs);
      with :class:`~pyrogen.inference.trainer.Trainer`, pass
      :meth:`trainer_callback` as its ``callback``.

    The noise's samples come from running the copy with its data site unobserved (the model
    must be a sampler there: ``pyro.factor`` sites are ignored when sampling, so they may
    only hold terms constant in ``x``, such as a log Z); its log-density is the copy's own:
    exact without a guide, else the same bound (``bound``, ``num_particles``) as the model's,
    computed with the copy's guide. The model (and guide) must be ``nn.Module`` s or methods
    of one (``vae.model``, ``vae.guide``), so that ``copy.deepcopy`` copies their weights.

    With an unnormalized model the copy carries the same log-normalizer error as the model
    (:math:`G` compares the two), so self-contrastive estimation learns the shape but cannot
    correct log Z: use it with normalized models (a VAE: :math:`Z = 1`).

    Args:
        nu: noise samples per data point.
        refresh_every: epochs between refreshes, :math:`\geq 1`.
        num_particles, bound, learn_log_normalizer, log_normalizer_init, data_site,
            max_plate_nesting, vectorize_particles, name: as for :class:`NCE`; the copy of
            a learned log Z is frozen with the model.

    Example:
        >>> import pyro, torch
        >>> from pyrogen.models import build_vae
        >>> vae = build_vae("burda", data_shape=(64,), z_dim=8)
        >>> sc = SelfContrastive(nu=1, refresh_every=5, num_particles=5, max_plate_nesting=1)
        >>> x = torch.bernoulli(torch.full((10, 64), 0.3))
        >>> loss = sc.differentiable_loss(vae.model, vae.guide, x)  # first noise: this VAE
        >>> sc.refresh_due(5), sc.refresh_due(6)
        (True, False)
    """

    def __init__(self, nu: float = 1.0, refresh_every: int = 5, **options: Any) -> None:
        super().__init__(None, nu, **options)  # no noise until the first refresh
        self.refresh_every = _check_int("refresh_every", refresh_every)
        self.num_refreshes = 0
        """How many copies have been taken."""
        self.noise_model: Callable[..., Any] | None = None
        """The frozen copy of the model (None before the first refresh)."""
        self.noise_guide: Callable[..., Any] | None = None
        """The frozen copy of the guide (None without one)."""

    def _as_noise(self, noise: Any) -> _Noise | None:
        return None if noise is None else super()._as_noise(noise)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", refresh_every={self.refresh_every})"

    def refresh(self, model: Callable[..., Any], guide: Callable[..., Any] | None = None) -> None:
        """Make the noise a frozen deep copy of ``model`` (and ``guide``) as they are now."""
        if not callable(model) or (guide is not None and not callable(guide)):
            raise TypeError("refresh needs the model (and guide) as callables")
        model_copy, guide_copy = copy.deepcopy((model, guide))
        modules = _modules_of((model_copy, guide_copy))
        for module in modules:
            module.eval()
        frozen = _Snapshot(_FrozenStore.copy_of_global(), tuple(modules))
        frozen.freeze()
        log_z = 0.0 if self.normalizer is None else float(self.normalizer.log_Z.detach())
        self.noise_model = model_copy
        self.noise_guide = guide_copy if _has_guide(guide_copy) else None
        self._noise = _ModelNoise(
            model_copy, self.noise_guide, self.data_site, self._noise_bound, frozen, log_z
        )
        self.num_refreshes += 1

    def refresh_due(self, epoch: int) -> bool:
        """Whether the loop should :meth:`refresh` after ``epoch`` finished epochs: every
        ``refresh_every`` epochs (``epoch = refresh_every, 2 refresh_every, ...``)."""
        _check_int("epoch", epoch, minimum=0)
        return epoch > 0 and epoch % self.refresh_every == 0

    def trainer_callback(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any] | None = None,
        iterations_per_epoch: int = 1,
    ) -> Callable[[Any], None]:
        """A :class:`~pyrogen.inference.trainer.Trainer` ``callback`` that refreshes after
        every ``refresh_every * iterations_per_epoch`` iterations (the trainer draws
        ``n // batch_size`` batches per pass over ``n`` rows: pass that)."""
        every = self.refresh_every * _check_int("iterations_per_epoch", iterations_per_epoch)

        def callback(trainer: Any) -> None:
            if trainer.iteration % every == 0:
                self.refresh(model, guide)

        return callback

    def _noise_source(self, model: Callable[..., Any], guide: Callable[..., Any]) -> _Noise:
        if self._noise is None:
            self.refresh(model, guide)
        assert self._noise is not None
        return self._noise
