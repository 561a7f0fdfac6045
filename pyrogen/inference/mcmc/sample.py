r"""Run many chains with warm-up adaptation and collect draws shaped ``(chain, draw, ...)``.

Warm-up adapts, for all chains together: the step size by dual averaging (one shared step
size, or one per chain), a diagonal mass matrix from draws pooled over chains in Stan's
windows, and, for HMC without a fixed ``num_steps``, the trajectory length by ChEES with
jittered trajectories (Hoffman et al., 2021). Sampling then runs the kernel with the adapted
values fixed, so the draws come from a time-homogeneous Markov chain.

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
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyrogen.inference.mcmc import hmc, langevin
from pyrogen.inference.mcmc.adaptation import (
    dual_averaging_init,
    dual_averaging_update,
    mass_window_step,
    warmup_windows,
    welford_init,
)
from pyrogen.inference.mcmc.chees import chees_init, chees_rescale, chees_update, halton
from pyrogen.inference.mcmc.potential import ModelPotential
from pyrogen.inference.mcmc.state import (
    GradientState,
    PotentialFn,
    check_jitter,
    check_positive_int,
    check_step_size,
    init,
)
from pyrogen.warnings import PyrogenWarning

__all__ = ["KERNELS", "MCMCResult", "find_step_size", "sample"]

KERNELS = ("hmc", "mala", "ula")
# Optimal acceptance rates: HMC 0.651 (Beskos et al., 2013), MALA 0.574 (Roberts & Rosenthal,
# 1998).
_TARGET = {"hmc": 0.651, "mala": 0.574}


@dataclass
class MCMCResult:
    """Draws and per-draw statistics of a batched run.

    Attributes:
        samples: ``name -> (num_chains, num_samples, *shape)``; constrained site values for a
            Pyro model, ``{"z": positions}`` for a potential function.
        stats: ``acceptance_rate``, ``diverging``, ``energy``, ``lp`` (minus the potential),
            ``step_size`` and ``num_steps``, each ``(num_chains, num_samples)``.
        step_size: adapted step size (scalar or one per chain).
        inverse_mass: adapted diagonal inverse mass matrix.
        trajectory_length: adapted trajectory length (ChEES), if any.
        final_state: the chains' last state, to continue sampling.
        warmup_divergences: divergent transitions during warm-up, per chain.
        wall_time: seconds for warm-up and sampling.
    """

    samples: dict[str, Tensor]
    stats: dict[str, Tensor]
    step_size: Tensor
    inverse_mass: Tensor
    trajectory_length: float | None
    final_state: GradientState
    warmup_divergences: Tensor
    wall_time: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_samples(self) -> int:
        return next(iter(self.samples.values())).shape[1]

    def to_arviz(self) -> Any:
        """An ``arviz.InferenceData`` with posterior and sample_stats groups."""
        from pyrogen.metrics.arviz import to_arviz

        return to_arviz(self)


def _step_fn(
    kernel: str,
) -> Callable[..., tuple[GradientState, Any]]:
    return {"mala": langevin.mala_step, "ula": langevin.ula_step}[kernel]


@torch.no_grad()
def find_step_size(
    state: GradientState,
    potential_fn: PotentialFn,
    kernel: str = "hmc",
    inverse_mass: Tensor | float = 1.0,
    initial: float = 1.0,
    generator: torch.Generator | None = None,
) -> float:
    """Double or halve a shared step size until one step's median acceptance crosses 1/2.

    The batched form of the heuristic in Hoffman & Gelman (2014, Algorithm 4); the chains do
    not move.
    """
    step_size, direction = initial, 0
    info: hmc.HMCInfo | langevin.LangevinInfo
    for _ in range(60):
        if kernel == "hmc":
            _, info = hmc.step(state, potential_fn, step_size, 1, inverse_mass, generator=generator)
        else:
            _, info = langevin.mala_step(state, potential_fn, step_size, inverse_mass, generator)
        good = bool(info.acceptance_prob.median() > 0.5)
        new_direction = 1 if good else -1
        if direction and new_direction != direction:
            return step_size if good else step_size * 2.0
        direction = new_direction
        step_size = step_size * 2.0**direction
    return step_size


def sample(
    potential_fn: PotentialFn | None = None,
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
    shared_step_size: bool = True,
    target_accept: float | None = None,
    max_steps: int = 1000,
    step_size_jitter: float = 0.2,
    divergence_threshold: float = 1000.0,
    thin: int = 1,
    max_plate_nesting: int | None = None,
    init_radius: float = 2.0,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> MCMCResult:
    r"""Sample ``exp(-U)`` with many chains at once.

    Give either ``potential_fn`` (``U``: ``(num_chains, *event_shape) -> (num_chains,)``)
    with ``initial_position``, or a Pyro ``model`` with its arguments and ``num_chains``
    (positions start uniform in ``(-init_radius, init_radius)`` in unconstrained space). A
    :class:`ModelPotential` passed as ``potential_fn`` is treated like a model.

    Args:
        kernel: ``"hmc"``, ``"mala"`` or ``"ula"`` (unadjusted Langevin: no accept, so no
            step-size adaptation; give ``step_size``).
        step_size: initial step size; found by a doubling search when omitted.
        num_steps: leapfrog steps per HMC transition; when omitted the trajectory length is
            adapted by ChEES and jittered.
        adapt_step_size: dual averaging towards ``target_accept`` (HMC 0.651, MALA 0.574).
        adapt_mass_matrix: diagonal inverse mass from pooled Welford estimates.
        shared_step_size: one step size for all chains (from their mean acceptance) or one
            per chain.
        max_steps: cap on leapfrog steps per transition.
        step_size_jitter: with a fixed ``num_steps``, each chain's step size is multiplied by
            a uniform factor in ``[1 - j, 1 + j]`` at every transition
            (:func:`hmc.jitter_step_size`). ChEES already jitters the length.
        thin: keep every ``thin``-th draw.
        generator: ``torch.Generator`` for every random number (default: torch's global one).
        progress: a tqdm bar.

    Returns:
        :class:`MCMCResult`.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    if not isinstance(num_warmup, int) or isinstance(num_warmup, bool) or num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative integer, got {num_warmup!r}")
    check_positive_int("num_samples", num_samples)
    check_positive_int("thin", thin)
    check_positive_int("max_steps", max_steps)
    check_jitter(step_size_jitter)
    if num_steps is not None:
        check_positive_int("num_steps", num_steps)
    if step_size is not None:
        check_step_size(step_size)
    if kernel == "ula" and (step_size is None or adapt_step_size):
        raise ValueError(
            "unadjusted Langevin has no accept step to adapt on: give step_size and "
            "adapt_step_size=False"
        )
    if target_accept is None:
        target_accept = _TARGET.get(kernel, 0.0)
    elif not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")

    potential: ModelPotential | None = None
    if model is not None:
        if potential_fn is not None:
            raise ValueError("give either potential_fn or model, not both")
        potential = ModelPotential(model, model_args, model_kwargs, max_plate_nesting)
    elif isinstance(potential_fn, ModelPotential):
        potential = potential_fn
    elif potential_fn is None:
        raise ValueError("give a potential_fn with initial_position, or a Pyro model")
    if potential is not None:
        potential_fn = potential
        if initial_position is None:
            if num_chains is None:
                raise ValueError("give num_chains (or an initial_position) to sample a model")
            check_positive_int("num_chains", num_chains)
            initial_position = potential.initial_position(num_chains, init_radius, generator)
    if initial_position is None:
        raise ValueError("initial_position, (num_chains, *event_shape), is required")
    if num_chains is not None and initial_position.shape[0] != num_chains:
        raise ValueError(
            f"num_chains={num_chains} but initial_position has {initial_position.shape[0]} rows"
        )
    assert potential_fn is not None

    start_time = time.perf_counter()
    state = init(initial_position, potential_fn)
    position = state.position
    n_chains = position.shape[0]
    dtype, device = position.dtype, position.device
    inverse_mass = torch.ones(position.shape[1:], dtype=dtype, device=device)

    if step_size is None:
        step_size = find_step_size(state, potential_fn, kernel, inverse_mass, generator=generator)
    # Each chain adapts its own step size during the initial buffer, so that a chain started
    # far out in a steep region still moves; a shared step size then starts from their median.
    windows = warmup_windows(num_warmup) if adapt_mass_matrix else []
    own_buffer = (windows[0][0] if windows else num_warmup // 5) if shared_step_size else 0
    eps = torch.full(
        () if shared_step_size and not own_buffer else (n_chains,),
        step_size,
        dtype=dtype,
        device=device,
    )
    averaging = dual_averaging_init(eps)
    welford = welford_init(position)
    use_chees = kernel == "hmc" and num_steps is None
    trajectory = chees_init(float(step_size))
    halton_index = 0

    total = num_warmup + num_samples * thin
    draws = torch.empty((n_chains, num_samples) + position.shape[1:], dtype=dtype, device=device)
    names = ("acceptance_rate", "diverging", "energy", "lp", "step_size", "num_steps")
    stats = {
        k: torch.empty(
            (n_chains, num_samples), dtype=torch.bool if k == "diverging" else dtype, device=device
        )
        for k in names
    }
    warmup_divergences = torch.zeros(n_chains, dtype=torch.long, device=device)
    kept = 0
    bar = tqdm(total=total, disable=not progress, desc="warm-up", leave=False)
    try:
        for it in range(total):
            warm = it < num_warmup
            jitter = 1.0
            steps = 1
            if kernel == "hmc":
                if use_chees:
                    halton_index += 1
                    jitter = halton(halton_index)
                    length = math.exp(trajectory.log_length if warm else trajectory.log_length_avg)
                    steps = math.ceil(jitter * length / float(eps.mean()))
                    steps = max(1, min(max_steps, steps))
                    used = eps
                else:
                    steps = num_steps or 1
                    used = hmc.jitter_step_size(eps, n_chains, step_size_jitter, generator)
                start = state.position
                state, info = hmc.step(
                    state, potential_fn, used, steps, inverse_mass, divergence_threshold, generator
                )
            else:
                state, info = _step_fn(kernel)(state, potential_fn, eps, inverse_mass, generator)
            if warm:
                warmup_divergences += info.is_divergent
                if adapt_step_size:
                    accept = info.acceptance_prob
                    averaging = dual_averaging_update(
                        averaging, accept if eps.dim() else accept.mean(), target_accept
                    )
                    eps = averaging.log_step_size.exp()
                    if it == own_buffer - 1:
                        eps = eps.log().median().exp()
                        averaging = dual_averaging_init(eps)
                if use_chees:
                    trajectory = chees_update(
                        trajectory,
                        start,
                        info.proposal,
                        info.proposal_momentum,
                        info.acceptance_prob,
                        info.is_divergent,
                        jitter,
                        inverse_mass,
                        float(eps.mean()),
                        max_steps,
                    )
                old_inverse_mass = inverse_mass
                welford, inverse_mass, closed = mass_window_step(
                    welford, inverse_mass, windows, it, state.position
                )
                if closed:
                    if use_chees:
                        trajectory = chees_rescale(trajectory, old_inverse_mass, inverse_mass)
                    if adapt_step_size:
                        averaging = dual_averaging_init(eps)
                if it == num_warmup - 1:
                    if adapt_step_size:
                        eps = averaging.log_step_size_avg.exp()
                    bar.set_description("sampling")
            elif (it - num_warmup) % thin == thin - 1:
                draws[:, kept] = state.position
                stats["acceptance_rate"][:, kept] = info.acceptance_prob
                stats["diverging"][:, kept] = info.is_divergent
                stats["energy"][:, kept] = info.energy
                stats["lp"][:, kept] = -state.potential_energy
                stats["step_size"][:, kept] = info.step_size
                stats["num_steps"][:, kept] = steps
                kept += 1
            bar.update()
            if progress and it % 50 == 0:
                bar.set_postfix(
                    step_size=f"{float(eps.mean()):.3g}",
                    steps=steps,
                    accept=f"{float(info.acceptance_prob.mean()):.2f}",
                )
    except KeyboardInterrupt:
        if kept == 0:
            raise
        warnings.warn(
            f"sampling interrupted: returning the {kept} draws per chain taken so far",
            PyrogenWarning,
            stacklevel=2,
        )
    finally:
        bar.close()

    draws = draws[:, :kept]
    stats = {k: v[:, :kept] for k, v in stats.items()}
    if potential is not None:
        flat = draws.reshape(n_chains * kept, -1)
        samples = {
            k: v.reshape((n_chains, kept) + v.shape[1:])
            for k, v in potential.constrain(flat).items()
        }
    else:
        samples = {"z": draws}
    return MCMCResult(
        samples=samples,
        stats=stats,
        step_size=eps,
        inverse_mass=inverse_mass,
        trajectory_length=math.exp(trajectory.log_length_avg) if use_chees else None,
        final_state=state,
        warmup_divergences=warmup_divergences,
        wall_time=time.perf_counter() - start_time,
    )
