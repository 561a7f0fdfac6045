r"""A thin adapter so ``pyro.infer.MCMC`` can drive pyrogen's kernels, one chain per run.

:class:`PyroKernel` implements Pyro's ``MCMCKernel`` protocol (``setup``, ``initial_params``,
``sample``, ``transforms``, ``diagnostics``) on top of the functional kernels: the state is
the same :class:`GradientState` with a chain dimension of one, the potential is
:class:`ModelPotential` (which, with one chain, runs the model exactly as Pyro's HMC does),
the kernel comes from the registry, and warm-up is the window adaptation :func:`sample` runs
(:mod:`~pyrogen.inference.mcmc.warmup`: dual averaging, Stan's mass-matrix windows) with a
fixed number of leapfrog steps. Per-draw statistics travel back through Pyro's
``diagnostics`` (also from worker processes), so :func:`pyrogen.metrics.to_arviz` can export them.

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro.infer import MCMC
    >>> def model(y):
    ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(loc, 1.0), obs=y)
    >>> mcmc = MCMC(PyroKernel(model, num_steps=5), num_samples=20, warmup_steps=20,
    ...             disable_progbar=True)
    >>> mcmc.run(torch.randn(10))
    >>> mcmc.get_samples()["loc"].shape
    torch.Size([20])
"""

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch import Tensor
from torch.distributions import Transform

from pyrogen.inference.mcmc.kernels import get_kernel
from pyrogen.inference.mcmc.mass import DenseInverseMass
from pyrogen.inference.mcmc.potential import ModelPotential
from pyrogen.inference.mcmc.state import check_jitter, check_positive_int, init
from pyrogen.inference.mcmc.warmup import (
    WarmupState,
    find_step_size,
    warmup_init,
    warmup_update,
    window_adaptation,
)

__all__ = ["PyroKernel"]


class PyroKernel(MCMCKernel):
    """pyrogen HMC or MALA as a ``pyro.infer.MCMC`` kernel.

    Args:
        model: a Pyro model with continuous latent sites.
        kernel: ``"hmc"`` or ``"mala"``.
        step_size: initial step size (found by a doubling search when omitted).
        num_steps: leapfrog steps per HMC transition.
        step_size_jitter: HMC step sizes vary uniformly by this fraction per transition
            (:func:`hmc.jitter_step_size`), as in :func:`sample`.
        adapt_step_size: dual averaging during warm-up.
        adapt_mass_matrix: diagonal mass matrix during warm-up.
        full_mass: a dense mass matrix instead (as Pyro's ``HMC(full_mass=True)`` and
            :func:`sample`); :attr:`inverse_mass` is then ``(D, D)``.
        target_accept: acceptance rate to aim for (default: the kernel's, as in
            :func:`sample`).
        max_plate_nesting: plates the model nests (guessed when omitted).
        init_radius: initial values uniform in ``(-init_radius, init_radius)``, unconstrained.
        divergence_threshold: energy error counted as a divergence.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        kernel: str = "hmc",
        step_size: float | None = None,
        num_steps: int = 10,
        step_size_jitter: float = 0.2,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        full_mass: bool = False,
        target_accept: float | None = None,
        max_plate_nesting: int | None = None,
        init_radius: float = 2.0,
        divergence_threshold: float = 1000.0,
    ) -> None:
        if kernel not in ("hmc", "mala"):
            raise ValueError(f"PyroKernel runs 'hmc' or 'mala', got {kernel!r}")
        check_positive_int("num_steps", num_steps)
        check_jitter(step_size_jitter)
        if full_mass and not adapt_mass_matrix:
            raise ValueError(
                "full_mass=True estimates a dense mass matrix during warm-up: it needs "
                "adapt_mass_matrix=True"
            )
        self.model = model
        self.kernel = kernel
        self.spec = get_kernel(kernel)
        self.initial_step_size = step_size
        self.settings: dict[str, Any] = {
            "num_steps": num_steps,
            "step_size_jitter": step_size_jitter,
            "divergence_threshold": divergence_threshold,
        }
        self.adapt_step_size = adapt_step_size
        self.adapt_mass_matrix = adapt_mass_matrix
        self.full_mass = full_mass
        self.target_accept = self.spec.target_accept if target_accept is None else target_accept
        self.max_plate_nesting = max_plate_nesting
        self.init_radius = init_radius
        self.transforms: dict[str, Transform] | None = None
        self._initial: dict[str, Tensor] | None = None

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self.potential = ModelPotential(self.model, args, kwargs, self.max_plate_nesting)
        # Pyro maps samples back with transforms[name].inv, so it wants constrained -> free.
        self.transforms = {n: t.inv for n, t in self.potential.transforms.items()}
        if self._initial is not None:
            position = self._position(self._initial)
        else:
            position = self.potential.initial_position(1, self.init_radius)
        self.state = init(position, self.potential)
        step = self.initial_step_size or find_step_size(self.state, self.potential, self.kernel)
        self.config = window_adaptation(
            warmup_steps,
            target_accept=self.target_accept if self.adapt_step_size else None,
            adapt_mass_matrix=self.adapt_mass_matrix,
            full_mass=self.full_mass,
        )
        self.warmup: WarmupState = warmup_init(self.config, position, float(step))
        self.t = 0
        self.draw_stats: dict[str, list[float]] = {}
        self._last_accept = 0.0

    @property
    def step_size(self) -> Tensor:
        return self.warmup.step_size

    @property
    def inverse_mass(self) -> Tensor:
        """The diagonal, or the ``(D, D)`` matrix with ``full_mass``."""
        inverse_mass = self.warmup.inverse_mass
        if isinstance(inverse_mass, DenseInverseMass):
            return inverse_mass.matrix
        return inverse_mass

    @property
    def initial_params(self) -> dict[str, Tensor]:
        if self._initial is not None:
            return self._initial
        return {n: v[0] for n, v in self.potential.unflatten(self.state.position).items()}

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor]) -> None:
        self._initial = params

    def _position(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[n].reshape(1, -1) for n in self.potential.names], 1)

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        position = self._position(params)
        if not torch.equal(position, self.state.position):
            self.state = init(position, self.potential)
        start = self.state.position
        settings = {
            **self.settings,
            "step_size": self.step_size,
            "inverse_mass": self.warmup.inverse_mass,
        }
        self.state, info = self.spec.build_from(settings)(self.state, self.potential, None)
        it = self.t
        self.t += 1
        self._last_accept = float(info.acceptance_prob[0])
        if it < self.config.num_warmup:
            self.warmup = warmup_update(
                self.config, self.warmup, it, start, self.state.position, info
            )
        else:
            for key, value in self.spec.draw_stats(self.state, info).items():
                self.draw_stats.setdefault(key, []).append(float(value[0]))
        return {n: v[0] for n, v in self.potential.unflatten(self.state.position).items()}

    def logging(self) -> OrderedDict:
        return OrderedDict(
            [
                ("step size", f"{float(self.step_size):.2e}"),
                ("acc. prob", f"{self._last_accept:.3f}"),
            ]
        )

    def diagnostics(self) -> dict[str, Any]:
        diverging = self.draw_stats.get("diverging", [])
        accept = self.draw_stats.get("acceptance_rate", [])
        return {
            "divergences": [i for i, d in enumerate(diverging) if d],
            "acceptance rate": sum(accept) / max(len(accept), 1),
            "pyrogen_stats": {k: torch.tensor(v) for k, v in self.draw_stats.items()},
        }
