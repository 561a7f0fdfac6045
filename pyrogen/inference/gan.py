r"""Adversarial objectives for Pyro generators: GAN, WGAN, WGAN-GP and hinge.

A generator is a Pyro model whose data site has no usable density::

    def model(x):
        pyro.module("generator", net)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0, 1).expand([d]).to_event(1))
            pyro.sample("x", dist.Delta(net(z), event_dim=1), obs=x)

(``pyro.deterministic("x", net(z))`` under ``poutine.condition(model, {"x": data})`` works
the same way.) The objective runs the model once with the data site *unobserved*, which
draws ``z`` and everything else from the prior and gives the generated batch; the value
that was observed there is the real batch. A critic module maps a batch ``(n, ...)`` to one
value per sample ``(n,)``. The guide is not used (pass one that does nothing, as
:class:`pyro.infer.SVI` wants one).

Each objective returns ``GANLosses(critic, generator)``. The generator loss sees the critic
through detached parameters, so summing the two (as ``loss_and_grads`` and SVI do) gives
each player the gradient of its own loss only: SVI then runs simultaneous gradient steps,
and :class:`~pyrogen.inference.trainer.Trainer` the usual alternating ones with
``critic_steps`` critic updates per generator update and each paper's optimiser.

References: Goodfellow et al. (2014) "Generative Adversarial Nets" (minimax and
non-saturating generator losses); Arjovsky, Chintala & Bottou (2017) "Wasserstein GAN"
(clip 0.01, RMSProp 5e-5, 5 critic steps); Gulrajani et al. (2017) "Improved Training of
Wasserstein GANs" (penalty 10, Adam 1e-4, betas (0, 0.9), 5 critic steps); Lim & Ye (2017)
"Geometric GAN" (hinge); Lin et al. (2018) "PacGAN" (``pack``: the critic judges ``pack``
samples at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from torch import Tensor, nn

from pyrogen.compat import is_unconditioned_deterministic
from pyrogen.inference import critic as losses
from pyrogen.inference.objective import FromIterable, Objective, check_int
from pyrogen.inference.objective import frozen as freeze  # _score's flag is named frozen

__all__ = ["GAN", "WGAN", "WGANGP", "GANLosses", "HingeGAN", "generate", "unobserved"]


class _Losses(NamedTuple):
    critic: Any
    generator: Any


class GANLosses(FromIterable, _Losses):
    """``(critic, generator)`` losses; also built from one iterable, as Pyro's SVI rebuilds
    tuple losses."""

    __slots__ = ()


class _Unobserve(Messenger):
    """Samples one observed site from its distribution, keeping the observed value aside."""

    def __init__(self, site: str) -> None:
        super().__init__()
        self.site = site
        self.observed: Tensor | None = None
        self.seen = False

    def _pyro_sample(self, msg: Any) -> None:
        if msg["name"] != self.site:
            return
        self.seen = True
        if not msg["is_observed"]:
            return
        if is_unconditioned_deterministic(msg):
            return  # its "observation" is its own value
        self.observed = msg["value"]
        msg["is_observed"] = False
        msg["value"] = None
        msg["done"] = False


def unobserved(model: Callable[..., Any], site: str) -> Callable[..., Any]:
    """``model`` with ``site`` drawn from its distribution even where it was observed (a
    generator's data site then holds the generated batch)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with _Unobserve(site):
            return model(*args, **kwargs)

    return run


def generate(
    model: Callable[..., Any], site: str, *args: Any, **kwargs: Any
) -> tuple[Tensor, Tensor | None]:
    """Runs ``model`` with ``site`` unobserved: ``(generated batch, observed batch or None)``."""
    unobserve = _Unobserve(site)
    with poutine.trace() as tracer, unobserve:
        model(*args, **kwargs)
    if not unobserve.seen:
        raise ValueError(
            f"the model has no sample site named {site!r} "
            f"(its sites: {sorted(tracer.trace.stochastic_nodes)}); pass data_site="
        )
    value = tracer.trace.nodes[site]["value"]
    assert isinstance(value, Tensor)
    return value, unobserve.observed


class Adversarial(Objective):
    """Base of the objectives whose critic learns to tell data from generated samples.

    Subclasses define :meth:`critic_objective` and :meth:`generator_objective` on critic
    values. Roles, their parameters and their default optimisers are what the trainer reads.

    Args:
        critic: module mapping ``(n, *event)`` (or ``(n / pack, pack * event)`` when packing)
            to ``(n,)`` values.
        data_site: name of the generator's data site.
        pack: PacGAN packing degree: the critic sees ``pack`` samples concatenated (the
            batch size must be a multiple of it).
        critic_steps: critic updates per generator update in the trainer.
        r1, r2: weights ``gamma`` of the gradient penalties ``gamma / 2 * E |grad_x r(x)|^2``
            on the critic at the data (R1) and at generated points (R2) (Mescheder, Geiger
            & Nowozin 2018): with either, the GAN converges locally where the unregularised
            one circles its equilibrium. 0 (the default) leaves them out; ``stats`` logs
            each one used.
    """

    roles = ("critic", "generator")
    model_role = "generator"
    #: critic updates per generator update in the trainer.
    critic_steps: int = 1
    #: each role's optimiser and its settings (Radford et al. 2016 unless a paper says else).
    default_optimizers: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
        "critic": (torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)}),
        "generator": (torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)}),
    }

    def __init__(
        self,
        critic: nn.Module,
        data_site: str = "x",
        pack: int = 1,
        critic_steps: int | None = None,
        *,
        r1: float = 0.0,
        r2: float = 0.0,
    ) -> None:
        super().__init__(num_particles=1, max_plate_nesting=1)
        self.critic = self.add_player("critic", critic, role="critic")
        for name, value in (("r1", r1), ("r2", r2)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        self.r1, self.r2 = float(r1), float(r2)
        if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
            raise ValueError(f"pack must be a positive int, got {pack!r}")
        if critic_steps is not None:
            self.critic_steps = check_int("critic_steps", critic_steps, 1)
        self.data_site = data_site
        self.pack = pack
        self.stats: dict[str, float] = {}

    # What subclasses write: losses on critic values.
    def critic_objective(
        self, real: Tensor, fake: Tensor, real_x: Tensor, fake_x: Tensor
    ) -> Tensor:
        raise NotImplementedError

    def generator_objective(self, fake: Tensor) -> Tensor:
        """The generator's loss on critic values; by default ``-E r(G(z))`` (hinge and
        Wasserstein critics, whose values are unbounded scores)."""
        return -fake.mean()

    # Plumbing.
    def _packed(self, x: Tensor) -> Tensor:
        if self.pack == 1:
            return x
        n = x.shape[0]
        if n % self.pack:
            raise ValueError(f"batch of {n} is not a multiple of pack={self.pack}")
        return x.reshape(n // self.pack, -1)

    def _score(self, x: Tensor, frozen: bool = False) -> Tensor:
        if frozen:  # the critic as a fixed function: no gradient reaches its parameters
            with freeze(self.critic.parameters()):
                out = self.critic(x)
        else:
            out = self.critic(x)
        return losses.per_sample(out, x.shape[0])

    def _batches(
        self, model: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Tensor, Tensor]:
        fake, real = generate(model, self.data_site, *args, **kwargs)
        if real is None:
            raise ValueError(
                f"the data site {self.data_site!r} is not observed: call the model with the "
                "data (obs=x), or condition it with poutine.condition(model, {site: data})"
            )
        if real.shape != fake.shape:
            raise ValueError(
                f"generated batch {tuple(fake.shape)} and data batch {tuple(real.shape)} differ "
                "in shape: the data site must draw one sample per data point"
            )
        return self._packed(real), self._packed(fake)

    def _critic_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        fake = fake.detach()
        r_real, r_fake = self._score(real), self._score(fake)
        loss = self.critic_objective(r_real, r_fake, real, fake)
        self.stats.update(
            critic_real=float(r_real.detach().mean()), critic_fake=float(r_fake.detach().mean())
        )
        for name, weight, at in (("r1", self.r1, real), ("r2", self.r2, fake)):
            if weight > 0:
                penalty = losses.squared_gradient_norm(self._critic_values, at)
                self.stats[name] = float(penalty.detach())
                loss = loss + 0.5 * weight * penalty
        return loss * self._rows(real)

    def _critic_values(self, x: Tensor) -> Tensor:
        return losses.per_sample(self.critic(x), x.shape[0])

    def _rows(self, x: Tensor) -> int:
        """Data points in a (packed) batch: the losses are sums over them, as Pyro's."""
        return x.shape[0] * self.pack

    def _generator_loss(self, fake: Tensor) -> Tensor:
        return self.generator_objective(self._score(fake, frozen=True)) * self._rows(fake)

    def critic_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        """The critic's loss on one generated batch (no graph through the generator)."""
        with torch.no_grad():
            real, fake = self._batches(model, args, kwargs)
        return self._critic_loss(real, fake)

    def generator_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        """The generator's loss (the critic enters with detached parameters)."""
        _, fake = self._batches(model, args, kwargs)
        return self._generator_loss(fake)

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> GANLosses:
        real, fake = self._batches(model, args, kwargs)
        critic = self._critic_loss(real, fake)
        return GANLosses(critic=critic, generator=self._generator_loss(fake))

    def role_loss(
        self,
        role: str,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        if role == "critic":
            return self.critic_loss(model, guide, *args, **kwargs)
        if role == "generator":
            return self.generator_loss(model, guide, *args, **kwargs)
        raise ValueError(f"unknown role {role!r}; roles are {self.roles}")

    def steps_per_iteration(self) -> dict[str, int]:
        return {"critic": self.critic_steps, "generator": 1}


class GAN(Adversarial):
    r"""The GAN of Goodfellow et al. (2014): the critic is a logistic classifier.

    The critic's optimum is :math:`\log p_{data}/p_G`. ``generator_loss="nonsaturating"``
    (the default) minimises :math:`-E \log D(G(z))`; ``"minimax"`` minimises
    :math:`E \log(1 - D(G(z)))`, whose gradient vanishes when the critic wins (the paper's
    own remark). Adam 2e-4, betas (0.5, 0.999) (Radford et al. 2016).
    """

    def __init__(
        self,
        critic: nn.Module,
        generator_loss: str = "nonsaturating",
        data_site: str = "x",
        pack: int = 1,
        critic_steps: int | None = None,
        *,
        r1: float = 0.0,
        r2: float = 0.0,
    ) -> None:
        super().__init__(critic, data_site, pack, critic_steps, r1=r1, r2=r2)
        if generator_loss not in ("nonsaturating", "minimax"):
            raise ValueError(
                f"generator_loss must be 'nonsaturating' or 'minimax', got {generator_loss!r}"
            )
        self.generator_loss_kind = generator_loss

    def critic_objective(
        self, real: Tensor, fake: Tensor, real_x: Tensor, fake_x: Tensor
    ) -> Tensor:
        return losses.logistic(real, fake)

    def generator_objective(self, fake: Tensor) -> Tensor:
        if self.generator_loss_kind == "minimax":
            return -torch.nn.functional.softplus(fake).mean()  # E log(1 - sigmoid(r))
        return torch.nn.functional.softplus(-fake).mean()  # -E log sigmoid(r)


class HingeGAN(Adversarial):
    """Hinge critic loss, generator minimises ``-E r(G(z))`` (Lim & Ye 2017)."""

    def critic_objective(
        self, real: Tensor, fake: Tensor, real_x: Tensor, fake_x: Tensor
    ) -> Tensor:
        return losses.hinge(real, fake)


class _Wasserstein(Adversarial):
    """The critic maximises ``E_p r - E_q r``, logged as ``stats["wasserstein"]``; 5 critic
    steps per generator step (both WGAN papers)."""

    critic_steps = 5

    def critic_objective(
        self, real: Tensor, fake: Tensor, real_x: Tensor, fake_x: Tensor
    ) -> Tensor:
        loss = losses.wasserstein(real, fake)
        self.stats["wasserstein"] = -float(loss.detach())
        return loss


class WGAN(_Wasserstein):
    r"""Wasserstein GAN with weight clipping (Arjovsky et al. 2017).

    The critic maximises :math:`E_p r - E_q r` with every weight clipped to
    ``[-clip, clip]`` after each update (and before each evaluation, so SVI keeps the
    constraint too); ``stats["wasserstein"]`` is that estimate, up to the unknown Lipschitz
    constant of the clipped critic. The paper's settings: clip 0.01, RMSProp 5e-5, 5 critic
    steps per generator step.
    """

    default_optimizers = {
        "critic": (torch.optim.RMSprop, {"lr": 5e-5}),
        "generator": (torch.optim.RMSprop, {"lr": 5e-5}),
    }

    def __init__(
        self,
        critic: nn.Module,
        clip: float = 0.01,
        data_site: str = "x",
        pack: int = 1,
        critic_steps: int | None = None,
        *,
        r1: float = 0.0,
        r2: float = 0.0,
    ) -> None:
        super().__init__(critic, data_site, pack, critic_steps, r1=r1, r2=r2)
        if not clip > 0:
            raise ValueError(f"clip must be positive, got {clip}")
        self.clip = float(clip)
        losses.clip_weights(critic, self.clip)

    def _critic_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        losses.clip_weights(self.critic, self.clip)
        return super()._critic_loss(real, fake)

    def after_step(self, role: str) -> None:
        if role == "critic":
            losses.clip_weights(self.critic, self.clip)


class WGANGP(_Wasserstein):
    r"""WGAN with a gradient penalty (Gulrajani et al. 2017).

    Critic loss :math:`E_q r - E_p r + \lambda E (\|\nabla r(\hat x)\| - 1)^2` at random
    interpolates :math:`\hat x`; ``stats["wasserstein"]`` is :math:`E_p r - E_q r`, the
    estimate of :math:`W_1` the paper plots. Defaults: penalty 10, Adam 1e-4 with betas
    (0, 0.9), 5 critic steps per generator step.
    """

    default_optimizers = {
        "critic": (torch.optim.Adam, {"lr": 1e-4, "betas": (0.0, 0.9)}),
        "generator": (torch.optim.Adam, {"lr": 1e-4, "betas": (0.0, 0.9)}),
    }

    def __init__(
        self,
        critic: nn.Module,
        penalty: float = 10.0,
        data_site: str = "x",
        pack: int = 1,
        critic_steps: int | None = None,
        *,
        r1: float = 0.0,
        r2: float = 0.0,
    ) -> None:
        super().__init__(critic, data_site, pack, critic_steps, r1=r1, r2=r2)
        if penalty < 0:
            raise ValueError(f"penalty must be non-negative, got {penalty}")
        self.penalty = float(penalty)

    def critic_objective(
        self, real: Tensor, fake: Tensor, real_x: Tensor, fake_x: Tensor
    ) -> Tensor:
        loss = super().critic_objective(real, fake, real_x, fake_x)
        if self.penalty == 0:
            return loss
        gp = losses.gradient_penalty(self._score, real_x, fake_x)
        self.stats["gradient_penalty"] = float(gp.detach())
        return loss + self.penalty * gp


# Objectives by name, for scripts that take them from the command line.
ADVERSARIAL: dict[str, tuple[type[Adversarial], dict[str, Any]]] = {
    "gan": (GAN, {}),
    "gan-minimax": (GAN, {"generator_loss": "minimax"}),
    "hinge": (HingeGAN, {}),
    "wgan": (WGAN, {}),
    "wgan-gp": (WGANGP, {}),
    "pacgan2": (GAN, {"pack": 2}),
}
"""Each name's objective class and its keyword arguments (PacGAN's ``pack`` among them, so a
script can size the critic's input before building it)."""


def make_adversarial(name: str, critic: nn.Module, **options: Any) -> Adversarial:
    """The objective registered as ``name`` in :data:`ADVERSARIAL`, around ``critic``;
    ``options`` add to (or override) the registered keyword arguments.

    Example:
        >>> critic = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Flatten(0))
        >>> make_adversarial("pacgan2", critic).pack
        2
    """
    if name not in ADVERSARIAL:
        raise ValueError(f"unknown adversarial objective {name!r}; choose from {list(ADVERSARIAL)}")
    cls, kwargs = ADVERSARIAL[name]
    return cls(critic, **(kwargs | options))


RECOMMENDED = "gan+r1=1+ema=0.999"
"""The recipe for a GAN that settles: the non-saturating GAN with an R1 penalty (gamma 1 for
data of unit scale; R1 is ``gamma / 2 * E |grad_x D|^2``, so rescaling the data by ``s``
calls for ``gamma * s**2``: Roth et al. 2017 use 0.1 on mixtures with modes of sd 0.01) and
an exponential moving average of the generator's weights (``Trainer(ema=0.999)``), from
which the trainer's callbacks and everything after ``fit`` sample. Tested on a Gaussian
target (``tests/test_gan_convergence.py``), where the plain GAN keeps swinging."""


def parse_adversarial(spec: str) -> tuple[str, dict[str, float], float | None]:
    """An objective's name with options, as scripts take them: ``"gan+r1=1+ema=0.999"`` ->
    ``("gan", {"r1": 1.0}, 0.999)``: the :data:`ADVERSARIAL` name, the objective's penalty
    weights (``r1``, ``r2``; ``gp``, WGAN-GP's own gradient penalty, as ``penalty``) and the
    trainer's ``ema`` (None when not given).

    Example:
        >>> parse_adversarial(RECOMMENDED)
        ('gan', {'r1': 1.0}, 0.999)
    """
    name, *options = spec.split("+")
    if name not in ADVERSARIAL:
        raise ValueError(f"unknown adversarial objective {name!r}; choose from {list(ADVERSARIAL)}")
    penalties: dict[str, float] = {}
    ema: float | None = None
    for option in options:
        key, _, value = option.partition("=")
        if key not in ("r1", "r2", "ema", "gp") or not value:
            raise ValueError(
                f"{spec!r}: options are +r1=GAMMA, +r2=GAMMA, +gp=LAMBDA (wgan-gp) and "
                f"+ema=DECAY, got {option!r}"
            )
        if key == "gp" and ADVERSARIAL[name][0] is not WGANGP:
            raise ValueError(f"{spec!r}: +gp sets WGAN-GP's penalty; {name!r} has none")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{spec!r}: {key} must be a number, got {value!r}") from None
        if key == "ema":
            ema = number
        elif key == "gp":
            penalties["penalty"] = number
        else:
            penalties[key] = number
    return name, penalties, ema


__all__ += ["ADVERSARIAL", "RECOMMENDED", "make_adversarial", "parse_adversarial"]
