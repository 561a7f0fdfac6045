r"""Run many chains with warm-up adaptation and collect draws shaped ``(chain, draw, ...)``.

:func:`sample` looks the kernel up in the registry (:mod:`~pyrogen.inference.mcmc.kernels`),
warms it up with the window adaptation of :mod:`~pyrogen.inference.mcmc.warmup` (step size,
diagonal or, with ``full_mass``, dense mass matrix, ChEES trajectory length, each only if the
kernel takes that setting),
then runs it with the adapted values fixed, so the draws come from a time-homogeneous Markov
chain. After sampling it warns (:class:`~pyrogen.warnings.PyrogenWarning`) when any
transition diverged.

Example:
    >>> import torch
    >>> from pyrogen.inference.mcmc import sample
    >>> potential = lambda z: 0.5 * (z**2).sum(-1)
    >>> result = sample(potential, torch.zeros(4, 2), num_warmup=100, num_samples=50,
    ...                 progress=False)
    >>> result.samples["z"].shape
    torch.Size([4, 50, 2])
"""

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyrogen.inference.mcmc.chees import check_criterion
from pyrogen.inference.mcmc.compiled import CompiledPotential, check_compile_mode
from pyrogen.inference.mcmc.gibbs import BlockConditionals
from pyrogen.inference.mcmc.kernels import KERNELS, Kernel, get_kernel
from pyrogen.inference.mcmc.mass import DenseInverseMass
from pyrogen.inference.mcmc.potential import ModelPotential
from pyrogen.inference.mcmc.result import MCMCResult
from pyrogen.inference.mcmc.state import (
    PotentialFn,
    check_jitter,
    check_positive_int,
    check_step_size,
)
from pyrogen.inference.mcmc.warmup import (
    WarmupState,
    WindowAdaptation,
    find_step_size,
    trajectory_steps,
    warmup_init,
    warmup_update,
    window_adaptation,
)
from pyrogen.warnings import PyrogenWarning

__all__ = ["KERNELS", "ONE_CHAIN_NUM_STEPS", "MCMCResult", "find_step_size", "sample"]

# ChEES tunes the trajectory length from the spread between chains, which one chain does not
# have (its criterion is identically zero, so the length would stay wherever the step-size
# search left it). One chain therefore runs HMC with this many leapfrog steps, as PyroKernel
# does by default, with the step size jittered per transition.
ONE_CHAIN_NUM_STEPS = 10


def sample(
    potential_fn: PotentialFn | BlockConditionals | None = None,
    initial_position: Tensor | None = None,
    *,
    model: Callable[..., Any] | None = None,
    model_args: tuple = (),
    model_kwargs: dict[str, Any] | None = None,
    num_chains: int | None = None,
    num_warmup: int = 500,
    num_samples: int = 500,
    kernel: str = "hmc",
    step_size: float | None = None,
    num_steps: int | None = None,
    adapt_step_size: bool = True,
    adapt_mass_matrix: bool = True,
    full_mass: bool = False,
    shared_step_size: bool = True,
    target_accept: float | None = None,
    max_steps: int = 1000,
    trajectory_criterion: str = "ess_per_gradient",
    step_size_jitter: float = 0.2,
    divergence_threshold: float = 1000.0,
    thin: int = 1,
    max_plate_nesting: int | None = None,
    batching: str = "auto",
    init_radius: float = 2.0,
    compile_potential: str = "none",
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> MCMCResult:
    r"""Sample ``exp(-U)`` with many chains at once.

    Give ``potential_fn`` (``U``: ``(num_chains, *event_shape) -> (num_chains,)``; for
    ``kernel="gibbs"`` a model with block conditionals) and ``initial_position``, or a Pyro
    ``model`` (or a :class:`ModelPotential`) with ``num_chains``: chains start uniform in
    ``(-init_radius, init_radius)``, unconstrained; ``pyro.deterministic`` sites are drawn too.

    Args:
        kernel: a name in :data:`KERNELS`; warm-up adapts the settings it takes. ``"ula"`` has
            no accept step: give ``step_size`` and ``adapt_step_size=False``.
        step_size: initial step size; found by a doubling search when omitted.
        num_steps: leapfrog steps per HMC transition; omitted, ChEES adapts the trajectory
            length (it needs two chains: one takes :data:`ONE_CHAIN_NUM_STEPS`, and a warning).
        adapt_step_size: dual averaging towards ``target_accept`` (default: the kernel's,
            HMC 0.95, MALA 0.574; :mod:`~pyrogen.inference.mcmc.kernels` says why).
        adapt_mass_matrix: diagonal inverse mass from pooled Welford estimates.
        full_mass: a dense inverse mass matrix instead (Pyro's ``HMC(full_mass=True)``, Stan's
            ``dense_e``): the covariance of the flattened position pooled over chains in the
            same windows, regularised to ``n/(n+5) cov + 1e-3 * 5/(n+5) I``
            (:mod:`~pyrogen.inference.mcmc.mass`). It whitens correlated targets, which a
            diagonal matrix cannot, at the price of a ``D x D`` product per gradient. HMC
            (fixed ``num_steps`` or ChEES), MALA, ULA and kinetic Langevin take it; it needs
            ``adapt_mass_matrix``. ``result.inverse_mass`` is then ``(D, D)``. A well
            whitened Gaussian has one period in every direction, so a fixed ``num_steps``
            whose length lands near half of it (:math:`\pi`) flips every chain to its
            mirror image and mixes badly; ChEES (no ``num_steps``) tunes the length instead.
            On the logistic regression of ``benchmarks/mcmc_logistic.py`` (64 chains, 500 +
            500, seeds 0-2, not timed) it raised the minimum bulk ESS per gradient of the
            draws 2.3-2.6 times at the default target acceptance; at ``target_accept=0.8``
            ChEES settled on lengths 2-3 times longer than with a diagonal matrix in 4 runs
            of 5, and the gain was lost (0.7-0.95 times).
        shared_step_size: one step size for all chains, or one per chain.
        max_steps: cap on leapfrog steps per transition.
        trajectory_criterion: what the adapted trajectory length maximises (without
            ``num_steps``): ``"ess_per_gradient"``, the effective sample size of the mean per
            gradient evaluation, or ``"chees_per_gradient"``, ChEES per gradient (TensorFlow
            Probability's criterion, which mixes second moments and picks lengths about half
            as long; the default before). :mod:`~pyrogen.inference.mcmc.chees` derives
            both and gives the measurements behind the default.
        step_size_jitter: with a fixed ``num_steps``, each chain's step size is multiplied by
            a uniform factor in ``[1 - j, 1 + j]`` at every transition.
        thin: keep every ``thin``-th draw.
        batching: how a ``model`` is evaluated for many chains (:class:`ModelPotential`):
            ``"auto"`` keeps one plate of chains when the model broadcasts over it and
            otherwise runs it under ``torch.func.vmap`` (a model written with ``X @ w``).
        compile_potential: ``"none"`` (the default) evaluates the potential and its gradient
            eagerly at every step; ``"trace"`` records one evaluation's torch operations and
            replays them (bit for bit the same values, without Pyro's or autograd's Python per
            step); ``"inductor"`` also fuses them with ``torch.compile`` (within rounding;
            seconds to compile). Either falls back to eager evaluation, with a warning, for a
            potential whose Python control flow depends on the position
            (:class:`~pyrogen.inference.mcmc.compiled.CompiledPotential` says what a record
            cannot see).
        generator: ``torch.Generator`` for every random number (default: torch's global one).
        progress: a tqdm bar.

    Returns:
        :class:`MCMCResult`; transitions after warm-up that diverged raise a PyrogenWarning.
    """
    spec = get_kernel(kernel)
    _check_arguments(num_warmup, num_samples, thin, max_steps, step_size_jitter)
    _check_full_mass(spec, kernel, full_mass, adapt_mass_matrix)
    check_criterion(trajectory_criterion)
    check_compile_mode(compile_potential)
    target = _target_accept(spec, kernel, step_size, num_steps, adapt_step_size, target_accept)
    if model is not None:
        if potential_fn is not None:
            raise ValueError("give either potential_fn or model, not both")
        potential_fn = ModelPotential(model, model_args, model_kwargs, max_plate_nesting, batching)
    start = _initial_position(potential_fn, initial_position, num_chains, init_radius, generator)
    clock = time.perf_counter()
    evaluated = potential_fn  # what the kernels evaluate; the result reads potential_fn
    if compile_potential != "none":
        if not spec.takes("step_size"):
            raise ValueError(
                f"compile_potential applies to the gradient kernels, not to {kernel!r}"
            )
        evaluated = CompiledPotential(cast(PotentialFn, potential_fn), compile_potential)
    state = spec.init(start, evaluated, generator)
    config, num_steps = _schedule(
        spec,
        num_warmup,
        start,
        num_steps,
        target,
        adapt_mass_matrix,
        shared_step_size,
        max_steps,
        trajectory_criterion,
        full_mass,
    )
    if step_size is None and spec.takes("step_size"):
        step_size = find_step_size(state, evaluated, kernel, 1.0, generator=generator)
    fixed = {"step_size_jitter": step_size_jitter, "divergence_threshold": divergence_threshold}
    run = _Run(spec, config, warmup_init(config, start, step_size or 1.0), fixed)
    state = run.loop(state, evaluated, num_steps, num_samples, thin, generator, progress)
    run.warn_divergences(target)
    return run.result(state, potential_fn, time.perf_counter() - clock)


def _schedule(
    spec: Kernel,
    num_warmup: int,
    start: Tensor,
    num_steps: int | None,
    target_accept: float | None,
    adapt_mass_matrix: bool,
    shared_step_size: bool,
    max_steps: int,
    criterion: str = "ess_per_gradient",
    full_mass: bool = False,
) -> tuple[WindowAdaptation, int | None]:
    """The warm-up schedule for this kernel, and the leapfrog steps (``None``: ChEES)."""
    num_chains = start.shape[0]
    chees = spec.takes("num_steps") and num_steps is None
    if chees and num_chains == 1:
        chees, num_steps = False, ONE_CHAIN_NUM_STEPS
        _warn(f"ChEES needs two chains or more: one chain runs {num_steps} leapfrog steps", 4)
    config = window_adaptation(
        num_warmup,
        target_accept=target_accept if spec.takes("step_size") else None,
        adapt_mass_matrix=adapt_mass_matrix and spec.takes("inverse_mass"),
        shared_step_size=shared_step_size,
        per_chain_buffer=num_chains > 1,  # with one chain, a restart and nothing else
        chees=chees,
        max_steps=max_steps,
        criterion=criterion,
        full_mass=full_mass,
    )
    return config, num_steps


def _warn(message: str, stacklevel: int = 3) -> None:
    """A PyrogenWarning pointing at the caller of :func:`sample` (``stacklevel`` frames up)."""
    warnings.warn(message, PyrogenWarning, stacklevel=stacklevel)


def _check_arguments(
    num_warmup: int,
    num_samples: int,
    thin: int,
    max_steps: int,
    step_size_jitter: float,
) -> None:
    if not isinstance(num_warmup, int) or isinstance(num_warmup, bool) or num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative integer, got {num_warmup!r}")
    check_positive_int("num_samples", num_samples)
    check_positive_int("thin", thin)
    check_positive_int("max_steps", max_steps)
    check_jitter(step_size_jitter)


def _check_full_mass(spec: Kernel, kernel: str, full_mass: bool, adapt_mass_matrix: bool) -> None:
    """A ValueError for ``full_mass=True`` where it cannot apply."""
    if not isinstance(full_mass, bool):
        raise ValueError(f"full_mass must be True or False, got {full_mass!r}")
    if not full_mass:
        return
    if not spec.takes("inverse_mass"):
        raise ValueError(f"full_mass=True needs a kernel with a mass matrix; {kernel!r} has none")
    if not spec.full_mass:
        raise ValueError(
            f"kernel {kernel!r} takes a diagonal inverse_mass only: full_mass=True needs one "
            "registered with full_mass=True"
        )
    if not adapt_mass_matrix:
        raise ValueError(
            "full_mass=True estimates a dense mass matrix during warm-up: it needs "
            "adapt_mass_matrix=True"
        )


def _target_accept(
    spec: Kernel,
    kernel: str,
    step_size: float | None,
    num_steps: int | None,
    adapt_step_size: bool,
    target_accept: float | None,
) -> float | None:
    """The acceptance rate to adapt the step size to (``None``: no adaptation), checked."""
    if num_steps is not None:
        check_positive_int("num_steps", num_steps)
    if step_size is not None:
        check_step_size(step_size)
    if spec.takes("step_size") and spec.target_accept is None:
        if step_size is None or adapt_step_size:
            raise ValueError(
                f"{kernel!r} has no accept step to adapt on: give step_size and "
                "adapt_step_size=False"
            )
    if target_accept is not None and not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    return (target_accept or spec.target_accept) if adapt_step_size else None


def _initial_position(
    potential_fn: Any,
    initial_position: Tensor | None,
    num_chains: int | None,
    init_radius: float,
    generator: torch.Generator | None,
) -> Tensor:
    """The chains' start: given, or drawn for a model."""
    if potential_fn is None:
        raise ValueError("give a potential_fn with initial_position, or a Pyro model")
    if isinstance(potential_fn, ModelPotential) and initial_position is None:
        if num_chains is None:
            raise ValueError("give num_chains (or an initial_position) to sample a model")
        check_positive_int("num_chains", num_chains)
        initial_position = potential_fn.initial_position(num_chains, init_radius, generator)
    if initial_position is None:
        raise ValueError("initial_position, (num_chains, *event_shape), is required")
    if num_chains is not None and initial_position.shape[0] != num_chains:
        raise ValueError(
            f"num_chains={num_chains} but initial_position has {initial_position.shape[0]} rows"
        )
    return initial_position


@dataclass
class _Run:
    """One run's adaptation and its records: draws, statistics and divergence counts."""

    spec: Kernel
    config: WindowAdaptation
    warmup: WarmupState
    fixed: dict[str, Any]

    def __post_init__(self) -> None:
        self.draws: list[Tensor] = []
        self.stats: dict[str, list[Tensor]] = {}
        self.warmup_divergent: Tensor | None = None
        self.divergent = torch.zeros(0, dtype=torch.long)
        self.transitions = 0  # after warm-up, per chain

    def settings(self, iteration: int, num_steps: int | None) -> tuple[dict[str, Any], float]:
        """The kernel's settings for one iteration, and the ChEES jitter (1 without ChEES)."""
        jitter = 1.0
        if self.config.chees:
            num_steps, jitter = trajectory_steps(self.config, self.warmup, iteration)
        settings: dict[str, Any] = {
            "step_size": self.warmup.step_size,
            "inverse_mass": self.warmup.inverse_mass,
            "num_steps": num_steps or 1,
        }
        settings.update(self.fixed)
        if self.config.chees:  # ChEES jitters the length, not the step size
            settings["step_size_jitter"] = 0.0
        return settings, jitter

    def loop(
        self,
        state: Any,
        target: Any,
        num_steps: int | None,
        num_samples: int,
        thin: int,
        generator: torch.Generator | None,
        progress: bool,
    ) -> Any:
        """Warm-up, then ``num_samples * thin`` transitions; stops early on Ctrl-C."""
        num_warmup = self.config.num_warmup
        num_chains = state.position.shape[0]
        device = state.position.device
        self.warmup_divergent = torch.zeros(num_chains, dtype=torch.long, device=device)
        self.divergent = torch.zeros(num_chains, dtype=torch.long, device=device)
        total = num_warmup + num_samples * thin
        bar = tqdm(total=total, disable=not progress, desc="warm-up", leave=False)
        try:
            for it in range(total):
                settings, jitter = self.settings(it, num_steps)
                start = state.position
                state, info = self.spec.build_from(settings)(state, target, generator)
                stats = self.spec.draw_stats(state, info)
                diverging = stats.get("diverging")
                if it < num_warmup:
                    if diverging is not None:
                        self.warmup_divergent += diverging
                    self.warmup = warmup_update(
                        self.config, self.warmup, it, start, state.position, info, jitter
                    )
                    if it == num_warmup - 1:
                        bar.set_description("sampling")
                else:
                    self.transitions += 1
                    if diverging is not None:
                        self.divergent += diverging
                    if (it - num_warmup) % thin == thin - 1:
                        self.draws.append(state.position)
                        for k, v in stats.items():
                            self.stats.setdefault(k, []).append(v)
                bar.update()
                if progress and it % 50 == 0 and "acceptance_rate" in stats:
                    bar.set_postfix(
                        step_size=f"{float(self.warmup.step_size.mean()):.3g}",
                        steps=settings["num_steps"],
                        accept=f"{float(stats['acceptance_rate'].mean()):.2f}",
                    )
        except KeyboardInterrupt:
            if not self.draws:
                raise
            _warn(
                f"sampling interrupted: returning the {len(self.draws)} draws per chain so far", 4
            )
        finally:
            bar.close()
        return state

    def warn_divergences(self, target_accept: float | None) -> None:
        """A PyrogenWarning when any transition after warm-up diverged."""
        if not self.divergent.any():
            return
        hint = "take smaller steps"
        if self.config.target_accept is not None:
            hint = f"raise target_accept (now {target_accept})"
        _warn(
            f"{int(self.divergent.sum())} of {self.transitions * self.divergent.numel()} "
            f"transitions after warm-up diverged, so the draws may be biased: {hint}, or "
            "reparameterize",
            4,
        )

    def result(self, state: Any, potential: Any, wall: float) -> MCMCResult:
        draws = torch.stack(self.draws, 1)
        if isinstance(potential, ModelPotential):
            samples = potential.draws(draws)
        else:
            samples = {"z": draws}
        stats = {k: torch.stack(v, 1) for k, v in self.stats.items()}
        assert self.warmup_divergent is not None
        return MCMCResult(
            samples=samples,
            stats=stats,
            step_size=self.warmup.step_size if self.spec.takes("step_size") else None,
            inverse_mass=self._inverse_mass(),
            trajectory_length=self._trajectory_length(),
            final_state=state,
            warmup_divergences=self.warmup_divergent,
            wall_time=wall,
        )

    def _inverse_mass(self) -> Tensor | None:
        """The adapted inverse mass: its diagonal, or the ``(D, D)`` matrix when dense."""
        if not self.spec.takes("inverse_mass"):
            return None
        inverse_mass = self.warmup.inverse_mass
        if isinstance(inverse_mass, DenseInverseMass):
            return inverse_mass.matrix
        return inverse_mass

    def _trajectory_length(self) -> float | None:
        if not self.config.chees:
            return None
        return math.exp(self.warmup.trajectory.log_length_avg)
