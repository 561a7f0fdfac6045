r"""ChEES: trajectory-length adaptation from many chains at once.

The trajectory length :math:`T` is tuned by stochastic gradient ascent on :math:`\log T` of a
criterion estimated from one transition of all chains, whose lengths are jittered to
:math:`t_m = u T` by a base-2 Halton sequence :math:`u` (so lengths spread evenly). Positions
are whitened by the mass matrix (by :math:`L^{-1}` for a dense one, :math:`\Sigma = L L^\top`);
the derivative of a proposal in :math:`\log T` is the end
velocity times :math:`t_m`, and its pairing with a whitened position difference is the raw
pairing with the end momentum, :math:`(z'_m - \bar z')^\top p'_m`. Chains are weighted by their
acceptance probabilities (divergent chains get none). Two criteria, both per gradient
evaluation (divided by :math:`T`), because the cost of a transition grows with :math:`T`:

``"ess_per_gradient"`` (the default): the effective sample size of the mean per gradient.
The lag-one autocorrelation of the chains, averaged over whitened coordinates (weighted by
their variances), is

.. math:: \rho = 1 + E[a\,(z - \bar z)^\top (z' - z)] \,/\, E\|z - \bar z\|^2,

from each chain's start :math:`z`, proposal :math:`z'` and acceptance probability :math:`a`.
For HMC on a Gaussian (exact dynamics, the momentum refreshed at every transition) the chain
is AR(1) in every direction, and its effective sample size per draw is
:math:`(1 - \rho) / (1 + \rho)`; we ascend its logarithm per gradient, with slope
:math:`-2 \rho_T / (1 - \rho^2) - 1`, where :math:`\rho_T = E[a\,t\,(z - \bar z)^\top p'] /
E\|z - \bar z\|^2` is the derivative of :math:`\rho` in :math:`\log T`. For a standard
Gaussian :math:`\rho(T) = \sin T / T` and the criterion has one maximum, at :math:`T = 3.98`.
This is what the benchmarks score (bulk ESS of the worst parameter per gradient). On the
Bayesian logistic regression of ``benchmarks/chees_efficiency.py`` (64 and 256 chains, 500
warm-up iterations and 500 draws, 3 seeds, target acceptance 0.95) it chose lengths 1.8 times
longer than ChEES per gradient and doubled the minimum bulk ESS per gradient, warm-up included
(64 against 31-33 per 1,000 gradients; ESS per draw 0.6 against 0.2; R-hat 1.004 against
1.012); lengthening its choice by 1.3 or 1.6 did not raise the ESS per gradient of the draws.
On non-centred eight schools (64 chains, 5 seeds of 500 + 500) it raised the minimum bulk ESS
per gradient 1.4 times (45 against 32), with 1 divergent draw in 160,000 against none.

``"chees_per_gradient"``: the change in the estimator of the expected square,
:math:`\mathrm{ChEES} = \tfrac14 E[(\|z' - \bar z'\|^2 - \|z - \bar z\|^2)^2]`, per gradient,
:math:`\mathrm{ChEES}(T) / T`, as TensorFlow Probability's ``fun_mc``
(``chees_per_grad_criterion``). Its derivative for chain :math:`m` is

.. math:: g_m = t_m\,(\|z'_m - \bar z'\|^2 - \|z_m - \bar z\|^2)\,(z'_m - \bar z')^\top p'_m,

and the slope of :math:`\log(\mathrm{ChEES}/T)` is :math:`\bar g / \widehat{\mathrm{ChEES}} - 1`.
ChEES measures how fast second moments mix: for a standard Gaussian its maximum per gradient is
near :math:`T = 1.6`, where the autocorrelation of the mean is still :math:`\sin(1.6)/1.6 =
0.62` and the ESS of the mean per gradient is 40 % of its best. Plain ChEES (Hoffman et al.,
BlackJAX) is not offered: jittered ChEES has a local maximum near every half period of the
slowest direction, and plain ascent drifted to T = 22-237 on the logistic regression above
(ChEES per gradient: 1.6-2.7), where it had 2-5 effective draws per 1,000 gradients.

Both criteria use slope and value as running means over about 20 iterations (one iteration's
value is near zero whenever its jittered length is close to a full period, and a ratio of
single estimates explodes there). The step uses Adam without momentum (learning rate 0.025,
:math:`\beta_2 = 0.95`), the update is clipped, and the returned length is a moving average of
:math:`\log T` with weight :math:`t^{-1/2}`.

An Adaptive MCMC Scheme for Setting Trajectory Lengths in Hamiltonian Monte Carlo
(Hoffman, Radul & Sountsov, 2021), https://proceedings.mlr.press/v130/hoffman21a.html.
"""

import math
from typing import NamedTuple, cast

import torch
from torch import Tensor

from pyrogen.inference.mcmc import mass
from pyrogen.inference.mcmc.mass import DenseInverseMass

__all__ = ["CRITERIA", "ChEESState", "chees_init", "chees_rescale", "chees_update", "halton"]

# What the trajectory length maximises; the first is the default (the module says why).
CRITERIA = ("ess_per_gradient", "chees_per_gradient")

_LEARNING_RATE = 0.025
_BETA2 = 0.95
_CLIP = 0.35  # largest change of log T per iteration
_AVG = 0.95  # running means of the slope and of the criterion (about 20 iterations)
_RHO = (-0.9, 0.999)  # the autocorrelation estimate is clamped into this range


class ChEESState(NamedTuple):
    log_length: float
    log_length_avg: float
    second_moment: float
    iteration: int
    slope_avg: float = 0.0
    value_avg: float = 0.0
    spread_avg: float = 0.0


def halton(index: int, base: int = 2) -> float:
    """The ``index``-th point (1-based) of the van der Corput / Halton sequence, in (0, 1)."""
    result, f, i = 0.0, 1.0 / base, index
    while i > 0:
        result += f * (i % base)
        i //= base
        f /= base
    return result


def chees_init(trajectory_length: float) -> ChEESState:
    log_t = math.log(trajectory_length)
    return ChEESState(log_t, log_t, 0.0, 0)


def chees_rescale(
    state: ChEESState,
    old_inverse_mass: Tensor | DenseInverseMass,
    new_inverse_mass: Tensor | DenseInverseMass,
) -> ChEESState:
    """Restart after the mass matrix changed, with the length carried into the new units.

    Trajectory time is set by the widest whitened direction; whitening by the new matrix
    shrinks it by ``max_i sqrt(new_i / old_i)``. The optimiser and the average restart, so the
    final length reflects the last mass matrix only.

    Dense matrices: the same factor is the square root of the largest generalised eigenvalue
    of the pair, :math:`\\max_v v^\\top \\Sigma_{new} v / v^\\top \\Sigma_{old} v` (the
    largest eigenvalue of :math:`L_{old}^{-1} \\Sigma_{new} L_{old}^{-\\top}`), which is
    ``max_i new_i / old_i`` when both are diagonal. If the new matrix is the target's
    covariance, the widest direction in the old whitened coordinates had exactly that
    variance and has 1 in the new ones, so its period, and the length that suits it, shrinks
    by the square root. A trace or determinant ratio would average over directions instead,
    and would keep too long a length when one correlated direction dominated the old one.
    """
    if isinstance(old_inverse_mass, DenseInverseMass) or isinstance(
        new_inverse_mass, DenseInverseMass
    ):
        factor = math.sqrt(_largest_ratio(old_inverse_mass, new_inverse_mass))
    else:
        factor = float((new_inverse_mass / old_inverse_mass).max().sqrt())
    log_t = state.log_length - math.log(factor)
    return ChEESState(log_t, log_t, 0.0, 0)


def _as_matrix(inverse_mass: Tensor | DenseInverseMass, dim: int) -> Tensor:
    """A dense matrix, or a diagonal one as a ``(dim, dim)`` matrix."""
    if isinstance(inverse_mass, DenseInverseMass):
        return inverse_mass.matrix
    return torch.diag(inverse_mass.reshape(-1).expand(dim))


def _largest_ratio(old: Tensor | DenseInverseMass, new: Tensor | DenseInverseMass) -> float:
    """The largest generalised eigenvalue of ``new`` against ``old`` (at least one dense)."""
    dim = old.dim if isinstance(old, DenseInverseMass) else cast(DenseInverseMass, new).dim
    old_chol = torch.linalg.cholesky(_as_matrix(old, dim))
    half = torch.linalg.solve_triangular(old_chol, _as_matrix(new, dim), upper=False)
    whitened = torch.linalg.solve_triangular(old_chol, half.T, upper=False)
    return float(torch.linalg.eigvalsh(0.5 * (whitened + whitened.T)).max())


def check_criterion(criterion: str) -> None:
    """A ValueError naming the choices unless ``criterion`` is one of :data:`CRITERIA`."""
    if criterion not in CRITERIA:
        raise ValueError(f"trajectory_criterion must be one of {CRITERIA}, got {criterion!r}")


def chees_update(
    state: ChEESState,
    start: Tensor,
    proposal: Tensor,
    momentum: Tensor,
    acceptance_prob: Tensor,
    is_divergent: Tensor,
    jitter: float,
    inverse_mass: Tensor | float | DenseInverseMass,
    step_size: float,
    max_steps: int = 1000,
    criterion: str = "ess_per_gradient",
) -> ChEESState:
    """One gradient step on :math:`\\log T` from the transition of all chains.

    ``criterion`` is one of :data:`CRITERIA` (the module describes them).
    """
    check_criterion(criterion)
    weight = torch.where(is_divergent, 0.0, acceptance_prob)
    finite = torch.isfinite(proposal.flatten(1)).all(1) & torch.isfinite(momentum.flatten(1)).all(1)
    weight = torch.where(finite, weight, 0.0)
    total = weight.sum()
    if total <= 0:
        return state
    shape = (-1,) + (1,) * (start.dim() - 1)
    safe_proposal = torch.where(finite.reshape(shape), proposal, 0.0)
    safe_momentum = torch.where(finite.reshape(shape), momentum, 0.0)
    trajectory = jitter * math.exp(state.log_length)
    if isinstance(inverse_mass, DenseInverseMass):
        return _dense_step(
            state,
            start,
            safe_proposal,
            safe_momentum,
            weight,
            inverse_mass.to(start),
            trajectory,
            step_size,
            max_steps,
            criterion,
        )
    scale = torch.as_tensor(inverse_mass, dtype=start.dtype, device=start.device).rsqrt()
    start_c = (start - start.mean(0)) * scale  # whitened
    if criterion == "ess_per_gradient":
        return _ess_step(
            state,
            start_c,
            (safe_proposal - start) * scale,
            safe_momentum / scale,
            weight,
            trajectory,
            step_size,
            max_steps,
        )
    w = weight.reshape(shape)
    prop_c = (safe_proposal - (w * safe_proposal).sum(0) / total) * scale
    diff_sq = _sum_event(prop_c.pow(2)) - _sum_event(start_c.pow(2))
    dot = _sum_event((prop_c / scale) * safe_momentum)
    return _chees_step(state, weight, diff_sq, dot, trajectory, step_size, max_steps)


def _dense_step(
    state: ChEESState,
    start: Tensor,
    proposal: Tensor,
    momentum: Tensor,
    weight: Tensor,
    inverse_mass: DenseInverseMass,
    trajectory: float,
    step_size: float,
    max_steps: int,
    criterion: str,
) -> ChEESState:
    """:func:`chees_update` whitened by a dense matrix: offsets :math:`L^{-1}(z - \\bar z)`,
    velocities :math:`L^\\top p`, so that their pairing is the raw :math:`(z - \\bar z)^\\top
    p`, as with a diagonal matrix."""
    start_c = mass.whiten(start - start.mean(0), inverse_mass)
    if criterion == "ess_per_gradient":
        velocity = (momentum.reshape(momentum.shape[0], -1) @ inverse_mass.cholesky).reshape(
            momentum.shape
        )
        jump = mass.whiten(proposal - start, inverse_mass)
        return _ess_step(state, start_c, jump, velocity, weight, trajectory, step_size, max_steps)
    total = weight.sum()
    w = weight.reshape((-1,) + (1,) * (start.dim() - 1))
    prop_raw = proposal - (w * proposal).sum(0) / total
    prop_c = mass.whiten(prop_raw, inverse_mass)
    diff_sq = _sum_event(prop_c.pow(2)) - _sum_event(start_c.pow(2))
    dot = _sum_event(prop_raw * momentum)
    return _chees_step(state, weight, diff_sq, dot, trajectory, step_size, max_steps)


def _chees_step(
    state: ChEESState,
    weight: Tensor,
    diff_sq: Tensor,
    dot: Tensor,
    trajectory: float,
    step_size: float,
    max_steps: int,
) -> ChEESState:
    """Ascend log ChEES per gradient from each chain's change of whitened square distance
    ``diff_sq`` and the pairing ``dot`` of its centred proposal with its end momentum."""
    total = weight.sum()
    slope = float((weight * trajectory * diff_sq * dot).sum() / total)
    chees = float((weight * 0.25 * diff_sq**2).sum() / total)
    if not (math.isfinite(slope) and math.isfinite(chees)):
        return state
    # A ratio of running means: one iteration's ChEES is near zero whenever its jittered
    # length is close to a full period, and a ratio of single estimates explodes there.
    slope_avg = _AVG * state.slope_avg + (1 - _AVG) * slope
    chees_avg = _AVG * state.value_avg + (1 - _AVG) * chees
    if chees_avg <= 0:
        return state
    grad = slope_avg / chees_avg - 1.0  # d/dlogT [log ChEES - log T]
    return _ascend(
        state._replace(slope_avg=slope_avg, value_avg=chees_avg), grad, step_size, max_steps
    )


def _sum_event(x: Tensor) -> Tensor:
    return x.flatten(1).sum(1)


def _ess_step(
    state: ChEESState,
    start_c: Tensor,
    jump: Tensor,
    velocity: Tensor,
    weight: Tensor,
    trajectory: float,
    step_size: float,
    max_steps: int,
) -> ChEESState:
    """Ascend log ESS of the mean per gradient, ``log((1 - rho) / (1 + rho)) - log T``, from
    whitened start offsets ``start_c``, jumps to the proposals and end velocities (whitened)."""
    n = start_c.shape[0]
    spread = float(_sum_event(start_c.pow(2)).mean())  # E|z - mean|^2
    lag = float((weight * _sum_event(start_c * jump)).sum() / n)  # E[a (z - mean).(z' - z)]
    slope = float((weight * trajectory * _sum_event(start_c * velocity)).sum() / n)
    if not (math.isfinite(spread) and math.isfinite(lag) and math.isfinite(slope)):
        return state
    slope_avg = _AVG * state.slope_avg + (1 - _AVG) * slope
    lag_avg = _AVG * state.value_avg + (1 - _AVG) * lag
    spread_avg = _AVG * state.spread_avg + (1 - _AVG) * spread
    if spread_avg <= 0:
        return state
    rho = min(_RHO[1], max(_RHO[0], 1.0 + lag_avg / spread_avg))
    grad = -2.0 * (slope_avg / spread_avg) / (1.0 - rho * rho) - 1.0
    averages = state._replace(slope_avg=slope_avg, value_avg=lag_avg, spread_avg=spread_avg)
    return _ascend(averages, grad, step_size, max_steps)


def _ascend(state: ChEESState, grad: float, step_size: float, max_steps: int) -> ChEESState:
    """One clipped Adam step (no momentum) on log T along ``grad``, and the moving average."""
    t = state.iteration + 1
    second = _BETA2 * state.second_moment + (1 - _BETA2) * grad * grad
    second_hat = second / (1 - _BETA2**t)
    update = _LEARNING_RATE * grad / (math.sqrt(second_hat) + 1e-8)
    log_length = state.log_length + max(-_CLIP, min(_CLIP, update))
    log_length = min(log_length, math.log(max_steps * step_size))
    log_length = max(log_length, math.log(step_size))
    avg_weight = t**-0.5
    log_avg = avg_weight * log_length + (1 - avg_weight) * state.log_length_avg
    return state._replace(
        log_length=log_length, log_length_avg=log_avg, second_moment=second, iteration=t
    )
