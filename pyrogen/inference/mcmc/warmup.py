r"""Window adaptation: the one warm-up schedule behind :func:`sample` and :class:`PyroKernel`.

Warm-up tunes, from the transitions of all chains together:

* the step size, by dual averaging towards the kernel's target acceptance, from a start found
  by a doubling search (:func:`find_step_size`). With many chains and a shared step size, each
  chain first tunes its own during the initial buffer (a chain started in a steep corner would
  otherwise never accept), then the shared one starts from their median;
* a diagonal inverse mass matrix from draws pooled over chains in Stan's doubling windows,
  or with ``full_mass`` a dense one (the covariance of the flattened position, a
  :class:`~pyrogen.inference.mcmc.mass.DenseInverseMass`, starting from the identity);
  when a window closes, dual averaging restarts from the current step size;
* for HMC without a fixed ``num_steps``, the trajectory length with Halton-jittered lengths,
  by the ESS of the mean per gradient or by ChEES per gradient
  (:mod:`~pyrogen.inference.mcmc.chees`), rescaled and restarted at each new mass matrix.

At the last warm-up iteration the step size becomes its dual-averaging average and the
trajectory length its running average; both then stay fixed, so the draws come from a
time-homogeneous chain. Everything is functional: :func:`warmup_init` and
:func:`warmup_update` map a :class:`WarmupState` to the next.

Stan Reference Manual, "HMC algorithm parameters" (windowed adaptation); The No-U-Turn
Sampler (Hoffman & Gelman, 2014), https://arxiv.org/abs/1111.4246.
"""

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pyrogen.inference.mcmc.adaptation import (
    DualAveragingState,
    WelfordState,
    dual_averaging_init,
    dual_averaging_update,
    mass_window_step,
    warmup_windows,
    welford_init,
)
from pyrogen.inference.mcmc.chees import (
    CRITERIA,
    ChEESState,
    check_criterion,
    chees_init,
    chees_rescale,
    chees_update,
    halton,
)
from pyrogen.inference.mcmc.kernels import get_kernel
from pyrogen.inference.mcmc.mass import DenseInverseMass

__all__ = [
    "WarmupState",
    "WindowAdaptation",
    "find_step_size",
    "trajectory_steps",
    "warmup_init",
    "warmup_update",
    "window_adaptation",
]


class WindowAdaptation(NamedTuple):
    """What warm-up adapts and when; fixed for a run.

    Attributes:
        num_warmup: warm-up iterations.
        windows: mass-matrix windows ``(first, last)``, empty when the matrix stays fixed.
        own_buffer: first iterations in which each chain tunes its own step size (0: none).
        shared_step_size: one step size for all chains after the buffer, or one per chain.
        target_accept: acceptance rate dual averaging aims for; ``None``: step size fixed.
        chees: adapt the trajectory length.
        max_steps: cap on leapfrog steps per transition.
        criterion: what the trajectory length maximises, one of
            :data:`~pyrogen.inference.mcmc.chees.CRITERIA`.
        full_mass: the inverse mass matrix is dense over the flattened position.
    """

    num_warmup: int
    windows: list[tuple[int, int]]
    own_buffer: int
    shared_step_size: bool
    target_accept: float | None
    chees: bool
    max_steps: int
    criterion: str = CRITERIA[0]
    full_mass: bool = False


class WarmupState(NamedTuple):
    """The adapted values and the estimators behind them."""

    step_size: Tensor
    inverse_mass: Tensor | DenseInverseMass
    averaging: DualAveragingState
    welford: WelfordState
    trajectory: ChEESState


def window_adaptation(
    num_warmup: int,
    *,
    target_accept: float | None,
    adapt_mass_matrix: bool = True,
    shared_step_size: bool = True,
    per_chain_buffer: bool = False,
    chees: bool = False,
    max_steps: int = 1000,
    criterion: str = CRITERIA[0],
    full_mass: bool = False,
) -> WindowAdaptation:
    """The schedule: Stan's windows, and a per-chain step-size buffer as long as Stan's
    initial buffer (a fifth of the warm-up without mass windows) when ``per_chain_buffer``.
    ``full_mass`` estimates a dense inverse mass matrix in the windows; it needs
    ``adapt_mass_matrix`` (a dense identity would only cost more than the diagonal one)."""
    check_criterion(criterion)
    if full_mass and not adapt_mass_matrix:
        raise ValueError(
            "full_mass=True estimates a dense mass matrix during warm-up: it needs "
            "adapt_mass_matrix=True"
        )
    windows = warmup_windows(num_warmup) if adapt_mass_matrix else []
    own_buffer = 0
    if per_chain_buffer and shared_step_size:
        own_buffer = windows[0][0] if windows else num_warmup // 5
    return WindowAdaptation(
        num_warmup,
        windows,
        own_buffer,
        shared_step_size,
        target_accept,
        chees,
        max_steps,
        criterion,
        full_mass,
    )


def warmup_init(config: WindowAdaptation, position: Tensor, step_size: float) -> WarmupState:
    """Start from ``step_size`` and a unit mass matrix for chains at ``position`` (dense
    with ``config.full_mass``)."""
    per_chain = not config.shared_step_size or config.own_buffer > 0
    shape = position.shape[:1] if per_chain else ()
    eps = torch.full(shape, step_size, dtype=position.dtype, device=position.device)
    inverse_mass: Tensor | DenseInverseMass
    if config.full_mass:
        eye = torch.eye(position[0].numel(), dtype=position.dtype, device=position.device)
        inverse_mass = DenseInverseMass(eye, eye.clone())
    else:
        inverse_mass = torch.ones(position.shape[1:], dtype=position.dtype, device=position.device)
    welford = welford_init(position, config.full_mass)
    return WarmupState(eps, inverse_mass, dual_averaging_init(eps), welford, chees_init(step_size))


def trajectory_steps(
    config: WindowAdaptation, state: WarmupState, iteration: int
) -> tuple[int, float]:
    """Leapfrog steps of iteration ``iteration`` under ChEES, and the Halton jitter used."""
    jitter = halton(iteration + 1)
    length = math.exp(state.trajectory.log_length)
    steps = math.ceil(jitter * length / float(state.step_size.mean()))
    return max(1, min(config.max_steps, steps)), jitter


def warmup_update(
    config: WindowAdaptation,
    state: WarmupState,
    iteration: int,
    start: Tensor,
    position: Tensor,
    info: Any,
    jitter: float = 1.0,
) -> WarmupState:
    """Adapt after warm-up transition ``iteration`` from ``start`` to ``position``.

    ``info`` carries ``acceptance_prob`` (and, for ChEES, HMC's proposal, its momentum and
    ``is_divergent``); ``jitter`` is the trajectory jitter the transition used.
    """
    eps, averaging, trajectory = state.step_size, state.averaging, state.trajectory
    if config.target_accept is not None:
        accept = info.acceptance_prob
        statistic = accept if eps.dim() else accept.mean()
        averaging = dual_averaging_update(averaging, statistic, config.target_accept)
        eps = averaging.log_step_size.exp()
        if iteration == config.own_buffer - 1:
            eps = eps.log().median().exp()
            averaging = dual_averaging_init(eps)
    if config.chees:
        trajectory = chees_update(
            trajectory,
            start,
            info.proposal,
            info.proposal_momentum,
            info.acceptance_prob,
            info.is_divergent,
            jitter,
            state.inverse_mass,
            float(eps.mean()),
            config.max_steps,
            config.criterion,
        )
    welford, inverse_mass, closed = mass_window_step(
        state.welford, state.inverse_mass, config.windows, iteration, position
    )
    if closed:
        if config.chees:
            trajectory = chees_rescale(trajectory, state.inverse_mass, inverse_mass)
        if config.target_accept is not None:
            averaging = dual_averaging_init(eps)
    if iteration == config.num_warmup - 1:  # freeze the averages for sampling
        if config.target_accept is not None:
            eps = averaging.log_step_size_avg.exp()
        trajectory = trajectory._replace(log_length=trajectory.log_length_avg)
    return WarmupState(eps, inverse_mass, averaging, welford, trajectory)


@torch.no_grad()
def find_step_size(
    state: Any,
    potential_fn: Any,
    kernel: str = "hmc",
    inverse_mass: Tensor | float | DenseInverseMass = 1.0,
    initial: float = 1.0,
    generator: torch.Generator | None = None,
) -> float:
    """Double or halve a shared step size until one step's median acceptance crosses 1/2.

    The batched form of the heuristic in Hoffman & Gelman (2014, Algorithm 4), for a kernel
    with an accept step (HMC takes one leapfrog step); the chains do not move.
    """
    spec = get_kernel(kernel)
    if spec.target_accept is None or not spec.takes("step_size"):
        raise ValueError(f"kernel {kernel!r} has no accept step to search a step size on")
    step_size, direction = initial, 0
    for _ in range(60):
        step = spec.build_from(
            {"step_size": step_size, "num_steps": 1, "inverse_mass": inverse_mass}
        )
        _, info = step(state, potential_fn, generator)
        good = bool(info.acceptance_prob.median() > 0.5)
        new_direction = 1 if good else -1
        if direction and new_direction != direction:
            return step_size if good else step_size * 2.0
        direction = new_direction
        step_size = step_size * 2.0**direction
    return step_size
