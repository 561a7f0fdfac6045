r"""The kernel registry: every sampler behind one signature.

A kernel is built from its settings and returns a transition over explicit state,

.. code-block:: python

    step = build(**settings)
    state, info = step(state, potential, generator)

as BlackJAX builds a kernel and then steps it. :func:`~pyrogen.inference.mcmc.sample` and
:class:`~pyrogen.inference.mcmc.PyroKernel` look kernels up here by name and never branch on
it: each entry says which settings its ``build`` takes (so warm-up knows what to adapt), how
to start chains, which per-draw statistics it reports, and the acceptance rate its step size
is tuned towards (``None`` for a kernel without an accept step). ``potential`` is what the
kernel needs of the target: a batched potential function for the gradient kernels, an object
with block conditionals (:class:`~pyrogen.inference.mcmc.gibbs.BlockConditionals`) for Gibbs.

Example:
    >>> import torch
    >>> potential = lambda z: 0.5 * (z**2).sum(-1)
    >>> kernel = KERNELS["hmc"]
    >>> state = kernel.init(torch.zeros(4, 2), potential, None)
    >>> step = kernel.build(step_size=0.5, num_steps=3)
    >>> state, info = step(state, potential, None)
    >>> sorted(kernel.draw_stats(state, info))
    ['acceptance_rate', 'diverging', 'energy', 'lp', 'num_steps', 'step_size']
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from pyrogen.inference.mcmc import gibbs, hmc, kinetic, langevin
from pyrogen.inference.mcmc.state import init as gradient_init

__all__ = ["KERNELS", "SETTINGS", "Kernel", "Step", "get_kernel", "register_kernel"]

# The settings sample() and PyroKernel know how to give (and, for the first three, adapt).
SETTINGS = ("step_size", "inverse_mass", "num_steps", "step_size_jitter", "divergence_threshold")

# Acceptance rates to tune the step size towards. MALA: 0.574, optimal for product targets as
# the dimension grows (Roberts & Rosenthal, 1998); its only divergences are non-finite values.
# HMC: 0.651 is the analogous optimum (Beskos et al., 2013), but it is an optimum for smooth
# targets. On the non-centred eight-schools posterior (64 chains, 500 warm-up, 500 draws, seeds
# 0-4) it left 0.07-0.40 % of draws divergent: a step too long for the tail of tau, where the
# curvature in log tau grows as tau^2. Stan's 0.8 still left 0.03-0.08 %, 0.9 about 0.005 %,
# 0.95 none (0 of 5 x 32,000, and 0 of 6 x 12,800 with 300 warm-up iterations). A divergent
# draw is a region the chain cannot enter, a bias the moments do not show, so the default is
# the target that has none; its price there was about 30 % fewer effective draws per gradient
# than at 0.8 (ESS of the worst parameter per 1000 gradients 68-87 against 112-123). For a
# smooth, well-scaled target pass target_accept=0.8 (or 0.651); sample() warns whenever a
# transition after warm-up diverges. (Those runs chose trajectory lengths by ChEES per
# gradient. With the ESS-per-gradient lengths that are the default since, 0.95 left 1 of
# 5 x 32,000 draws divergent and 0 of 6 x 12,800, and it is the more efficient target there:
# min bulk ESS per 1000 gradients, warm-up included, 32-43 at 300 + 200 iterations against
# 24-32 at 0.8, which left 33 of 3 x 12,800 divergent. On the logistic regression of
# benchmarks/chees_efficiency.py, 0.8 gives 1.25-1.3 times the min bulk ESS per gradient of
# 0.95, warm-up included, and 1.4-1.5 times in the draws alone.)
HMC_TARGET_ACCEPT = 0.95
MALA_TARGET_ACCEPT = 0.574


class Step(Protocol):
    """One transition of every chain: ``(state, potential, generator) -> (state, info)``."""

    def __call__(
        self, state: Any, potential: Any, generator: torch.Generator | None = None, /
    ) -> tuple[Any, Any]: ...


def _no_stats(state: Any, info: Any) -> dict[str, Tensor]:
    return {}


def _init_gradient(position: Tensor, potential: Any, generator: torch.Generator | None) -> Any:
    return gradient_init(position, potential)


@dataclass(frozen=True)
class Kernel:
    """A registered kernel.

    Attributes:
        build: ``build(**settings) -> step``, taking the settings named in ``settings``; a
            ``step_size`` is a scalar or one per chain, ``(num_chains,)``.
        init: ``init(position, potential, generator) -> state``; ``state.position`` is what
            :func:`~pyrogen.inference.mcmc.sample` records as a draw.
        draw_stats: ``(state, info) -> {name: (num_chains,) tensor}``, the per-draw statistics
            (ArviZ's names; ``diverging`` if the kernel can diverge, ``energy`` only for a
            Hamiltonian, since ``az.bfmi`` reads it as one).
        settings: the names from :data:`SETTINGS` that ``build`` takes.
        target_accept: default acceptance rate for step-size adaptation; ``None`` when the
            kernel has no accept step (the step size, if any, must then be given). A kernel
            with one reports ``info.acceptance_prob``, ``(num_chains,)``, which warm-up reads.
        full_mass: ``build`` also takes a dense ``inverse_mass``, a
            :class:`~pyrogen.inference.mcmc.mass.DenseInverseMass` (``sample(full_mass=True)``
            refuses a kernel without it).
    """

    build: Callable[..., Step]
    init: Callable[[Tensor, Any, torch.Generator | None], Any] = _init_gradient
    draw_stats: Callable[[Any, Any], dict[str, Tensor]] = _no_stats
    settings: tuple[str, ...] = ()
    target_accept: float | None = None
    full_mass: bool = False

    def takes(self, setting: str) -> bool:
        return setting in self.settings

    def build_from(self, settings: Mapping[str, Any]) -> Step:
        """``build`` with the settings this kernel takes, the others left out."""
        return self.build(**{k: v for k, v in settings.items() if k in self.settings})


KERNELS: dict[str, Kernel] = {}


def register_kernel(
    name: str,
    build: Callable[..., Step],
    *,
    init: Callable[[Tensor, Any, torch.Generator | None], Any] = _init_gradient,
    draw_stats: Callable[[Any, Any], dict[str, Tensor]] = _no_stats,
    settings: tuple[str, ...] = (),
    target_accept: float | None = None,
    full_mass: bool = False,
) -> Kernel:
    """Make ``build`` available to :func:`~pyrogen.inference.mcmc.sample` as ``kernel=name``.

    The default ``init`` starts a :class:`~pyrogen.inference.mcmc.GradientState`.
    ``full_mass``: ``build`` understands a dense ``inverse_mass``
    (:class:`~pyrogen.inference.mcmc.mass.DenseInverseMass`), as the gradient kernels here do.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; a kernel takes some of {SETTINGS}")
    if target_accept is not None and not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    if full_mass and "inverse_mass" not in settings:
        raise ValueError("full_mass=True needs a kernel that takes inverse_mass")
    kernel = Kernel(build, init, draw_stats, tuple(settings), target_accept, full_mass)
    KERNELS[name] = kernel
    return kernel


def get_kernel(name: str) -> Kernel:
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; choose one of {tuple(KERNELS)}")
    return KERNELS[name]


def _gibbs_init(position: Tensor, potential: Any, generator: torch.Generator | None) -> Any:
    return gibbs.init(position, potential, generator)


register_kernel(
    "hmc",
    hmc.build,
    draw_stats=hmc.draw_stats,
    settings=SETTINGS,
    target_accept=HMC_TARGET_ACCEPT,
    full_mass=True,
)
register_kernel(
    "mala",
    langevin.build_mala,
    draw_stats=langevin.draw_stats,
    settings=("step_size", "inverse_mass"),
    target_accept=MALA_TARGET_ACCEPT,
    full_mass=True,
)
register_kernel(
    "ula",
    langevin.build_ula,
    draw_stats=langevin.draw_stats,
    settings=("step_size", "inverse_mass"),
    full_mass=True,
)
register_kernel("gibbs", gibbs.build, init=_gibbs_init)
register_kernel(
    "kinetic_langevin",
    kinetic.build,
    init=kinetic.init,
    draw_stats=langevin.draw_stats,  # no Hamiltonian to report: the momentum is not resampled
    settings=("step_size", "inverse_mass"),
    full_mass=True,
)
