r"""Contrastive divergence: CD-k, persistent CD and replay-buffer CD for energy-based models.

For :math:`p_\theta(x) = e^{-E_\theta(x)}/Z_\theta` the gradient of the mean negative
log-likelihood of data :math:`x_{1:N}` is
:math:`\frac{1}{N}\sum_n \nabla E_\theta(x_n) - \mathbb{E}_{p_\theta}[\nabla E_\theta(x)]`.
Contrastive divergence replaces the intractable expectation by an average over negatives
:math:`\tilde x_{1:M}` from :math:`k` MCMC transitions that leave :math:`p_\theta` invariant:

.. math::
    \mathcal{L}_{CD} = \frac{1}{N}\sum_n E_\theta(x_n)
        - \frac{1}{M}\sum_m E_\theta(\operatorname{stop\_grad}(\tilde x_m)),

whose gradient is the CD-k (or PCD) estimate of the gradient of the negative
log-likelihood. For a Bernoulli RBM :math:`E` is the free energy :math:`F(v)` (the hidden
layer summed out analytically) and the transitions are block Gibbs sweeps; for a continuous
energy (any ``nn.Module`` mapping ``(N, D)`` to ``(N,)``) they are Langevin steps (ULA or
MALA).

* CD-k, Training Products of Experts by Minimizing Contrastive Divergence (Hinton, 2002),
  https://doi.org/10.1162/089976602760128018: one chain starts at each data row, afresh on
  every call.
* Persistent CD, Training Restricted Boltzmann Machines using Approximations to the
  Likelihood Gradient (Tieleman, 2008), https://doi.org/10.1145/1390156.1390290: a fixed
  number of chains continue from where the previous call left them.
* Replay buffer, Implicit Generation and Generalization in Energy-Based Models (Du &
  Mordatch, 2019), https://arxiv.org/abs/1903.08689: persistent states kept in a buffer
  larger than a batch; each call continues ``num_chains`` of them, each restarted from noise
  with probability ``reinit_prob``.

The value of the loss is the free-energy gap between data and negatives (summed over the
data rows, the one reduction of every pyrogen objective), the number people
watch while training RBMs; it is **not** the negative log-likelihood, which needs
:math:`\log Z` (see :func:`pyrogen.metrics.ais_log_partition`). It goes to zero when the
negatives look like the data.

Example:
    >>> import pyro, torch
    >>> from pyrogen.models import BernoulliRBM
    >>> rbm = BernoulliRBM(6, 4)
    >>> cd = ContrastiveDivergence(rbm, k=1)
    >>> svi = pyro.infer.SVI(rbm.model, empty_guide, pyro.optim.SGD({"lr": 0.1}), loss=cd)
    >>> data = torch.bernoulli(torch.full((20, 6), 0.3))
    >>> isinstance(svi.step(data), float)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pyro.poutine as poutine
import torch
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn

from pyrogen.inference.mcmc import gibbs, langevin
from pyrogen.inference.objective import Objective, empty_guide

__all__ = ["ContrastiveDivergence", "empty_guide"]

Sampler = Literal["gibbs", "ula", "mala"]
InitFn = Callable[[int, Tensor], Tensor]
"""``init_fn(num, data)``: ``num`` fresh chain states for a batch ``data`` of shape ``(N, D)``."""

# Rows of the batch on which, under Pyro validation, the model is checked to score the data
# by the objective's energy: enough to catch a mismatch, cheap enough to do on every call.
_CHECK_ROWS = 8


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _has_block_conditionals(energy: nn.Module) -> bool:
    """An energy sampled by block Gibbs: a free energy and the two block conditionals
    (:class:`~pyrogen.inference.mcmc.gibbs.BlockConditionals`; a BernoulliRBM has them)."""
    names = ("free_energy", "check_visible", "sample_hidden", "sample_visible")
    return all(callable(getattr(energy, name, None)) for name in names)


def _uniform_in_range(num: int, data: Tensor, generator: torch.Generator | None) -> Tensor:
    low, high = data.min(0).values, data.max(0).values
    u = torch.rand((num, data.shape[1]), generator=generator, dtype=data.dtype, device=data.device)
    return low + (high - low) * u


def _bernoulli_marginals(num: int, data: Tensor, generator: torch.Generator | None) -> Tensor:
    probs = data.mean(0).clamp(0.05, 0.95).expand(num, data.shape[1])
    u = torch.rand(probs.shape, generator=generator, dtype=data.dtype, device=data.device)
    return (u < probs).to(data.dtype)


class ContrastiveDivergence(Objective):
    r"""CD-k and persistent CD for a Bernoulli RBM or a continuous energy.

    The objective holds the energy module: it scores data and negatives with it, draws the
    negatives with the matching sampler (block Gibbs for :class:`~pyrogen.models.BernoulliRBM`,
    Langevin otherwise); it is the objective's player, registered with
    ``pyro.module(name, energy)`` on every call, so ``pyro.infer.SVI`` optimizes them
    whatever the model does. The model is the same density as a Pyro program (for an RBM,
    ``rbm.model``); with Pyro validation on, its log-factors on the first rows of each batch
    are checked against ``-energy``. The guide is never run (pass
    :func:`~pyrogen.inference.objective.empty_guide`).
    ``objective(model, guide)`` gives a module whose parameters include the energy's, and
    :meth:`role_parameters` gives them to :class:`~pyrogen.inference.Trainer`; the persistent
    chains are part of :meth:`state_dict`, so the trainer's checkpoints resume them.

    Chains are rows of one tensor. CD-k starts one chain at each data row. Persistent chains
    (``persistent=True``) are kept by the objective in :attr:`chains` and advance on every
    call, :meth:`loss` included; :meth:`reset` drops them. With ``buffer_size`` they form a
    replay buffer of which each call continues ``num_chains`` rows drawn at random.

    Args:
        energy: a :class:`~pyrogen.models.BernoulliRBM`, or an ``nn.Module`` mapping
            ``(N, D)`` to energies ``(N,)``.
        k: MCMC transitions per call (Gibbs sweeps or Langevin steps).
        persistent: keep the chains across calls (PCD) instead of starting at the data.
        num_chains: number of persistent chains; by default the size of the first batch.
            CD-k always runs one chain per data row.
        sampler: ``"gibbs"`` (the default and only choice for an RBM), ``"ula"`` (the default
            for a continuous energy) or ``"mala"``.
        step_size: Langevin step size (needed for a continuous energy).
        buffer_size: persistent states kept (at least ``num_chains``); ``None`` keeps exactly
            ``num_chains`` chains that all move on every call.
        reinit_prob: probability that a chain drawn from the buffer restarts from
            ``init_fn`` (Du & Mordatch use 0.05).
        init_fn: ``init_fn(num, data)`` gives fresh states for the buffer. By default: for an
            RBM, Bernoulli draws with the batch's per-unit means (clamped to [0.05, 0.95]);
            for a continuous energy, uniform in the batch's per-dimension range. Plain
            persistent chains start at rows of the first batch.
        generator: random numbers for the chains (the global generator if ``None``).
        name: the ``pyro.module`` name of the energy's parameters.

    Example:
        >>> import torch
        >>> energy = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(),
        ...                              torch.nn.Linear(16, 1), torch.nn.Flatten(0))
        >>> def model(x):  # the same density as a Pyro program
        ...     with pyro.plate("data", len(x)):
        ...         pyro.factor("energy", -energy(x))
        >>> cd = ContrastiveDivergence(energy, k=10, persistent=True, num_chains=64,
        ...                            step_size=0.01, buffer_size=1000, reinit_prob=0.05)
        >>> cd.differentiable_loss(model, empty_guide, torch.randn(128, 2)).backward()
        >>> cd.chains.shape
        torch.Size([1000, 2])
    """

    def __init__(
        self,
        energy: nn.Module,
        k: int = 1,
        persistent: bool = False,
        num_chains: int | None = None,
        sampler: Sampler | None = None,
        step_size: float | None = None,
        buffer_size: int | None = None,
        reinit_prob: float = 0.0,
        init_fn: InitFn | None = None,
        generator: torch.Generator | None = None,
        name: str = "energy",
    ) -> None:
        super().__init__(num_particles=1, max_plate_nesting=1)
        self.energy = self.add_player("energy", energy, role="model", name=name)
        self.block_gibbs = _has_block_conditionals(energy)
        self.k = _check_int("k", k)
        if num_chains is not None:
            _check_int("num_chains", num_chains)
            if not persistent:
                raise ValueError(
                    "num_chains is for persistent chains; CD-k runs one chain per data row "
                    "(repeat the rows for more)"
                )
        if buffer_size is not None:
            _check_int("buffer_size", buffer_size)
            if not persistent:
                raise ValueError("a replay buffer (buffer_size) needs persistent=True")
            if num_chains is not None and buffer_size < num_chains:
                raise ValueError(
                    f"buffer_size ({buffer_size}) must be at least num_chains ({num_chains})"
                )
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
        if reinit_prob > 0 and buffer_size is None:
            raise ValueError("reinit_prob applies to a replay buffer: give buffer_size too")
        if self.block_gibbs:
            if sampler not in (None, "gibbs"):
                raise ValueError(f"an RBM is sampled by block Gibbs, not {sampler!r}")
            if step_size is not None:
                raise ValueError("step_size is for Langevin samplers; an RBM uses block Gibbs")
            sampler = "gibbs"
        else:
            if sampler not in (None, "ula", "mala"):
                raise ValueError(
                    f"a continuous energy is sampled by 'ula' or 'mala', got {sampler!r}"
                )
            if step_size is None:
                raise ValueError("a continuous energy needs a Langevin step_size")
            if not step_size > 0:
                raise ValueError(f"step_size must be positive, got {step_size}")
            sampler = sampler or "ula"
        self.sampler: Sampler = sampler
        self.step_size = step_size
        self.persistent = persistent
        self.num_chains = num_chains
        self.buffer_size = buffer_size
        self.reinit_prob = reinit_prob
        self.init_fn = init_fn
        self.generator = generator
        self.name = name
        self.chains: Tensor | None = None
        """Persistent states, ``(num_chains, D)`` or ``(buffer_size, D)``; ``None`` before
        the first call (and always for CD-k)."""

    #: the energy is the only player; the model's Pyro program registers nothing to train.
    model_role = None

    def state_dict(self) -> dict[str, Any]:
        """The energy's weights, the persistent chains and the chains' generator state."""
        state = super().state_dict()
        state["chains"] = None if self.chains is None else self.chains.detach().clone()
        state["generator"] = None if self.generator is None else self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        chains = state.get("chains")
        self.chains = None if chains is None else chains.clone()
        if state.get("generator") is not None:
            if self.generator is None:
                raise ValueError("the state holds a chain generator; build CD with generator=")
            self.generator.set_state(state["generator"])

    def reset(self) -> None:
        """Forget the persistent chains; the next call starts them again."""
        self.chains = None

    # The energy, the data check, the sampler.
    def energy_of(self, x: Tensor) -> Tensor:
        """Energies ``(N,)`` of rows ``x`` (the free energy for an RBM)."""
        if self.block_gibbs:
            return self.energy.free_energy(x)  # type: ignore[operator]
        out = self.energy(x)
        if not isinstance(out, Tensor) or out.shape != x.shape[:1]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the energy must map (N, D) rows to (N,) energies; for input "
                f"{tuple(x.shape)} it returned {shape}"
            )
        return out

    def _check_data(self, data: Any) -> Tensor:
        if not isinstance(data, Tensor) or not data.is_floating_point():
            raise ValueError("data must be a floating-point tensor of rows (N, D)")
        if data.dim() != 2 or data.shape[0] == 0:
            raise ValueError(f"data must be rows (N, D) with N >= 1, got shape {tuple(data.shape)}")
        if self.block_gibbs:
            num_visible = getattr(self.energy, "num_visible", data.shape[1])
            if data.shape[1] != num_visible:
                raise ValueError(
                    f"the model has {num_visible} visible units, the data rows have {data.shape[1]}"
                )
            try:
                return self.energy.check_visible(data)  # type: ignore[operator]
            except ValueError as exc:
                raise ValueError(
                    f"the data do not fit the block-Gibbs model ({exc}): a Bernoulli RBM needs "
                    "binary data (0 or 1); binarize it first "
                    "(pyrogen.data.binarize_bernoulli_fixed or binarize_static)"
                ) from exc
        if not bool(torch.isfinite(data).all()):
            raise ValueError("data contain NaN or infinite values")
        if self.chains is not None and data.shape[1] != self.chains.shape[1]:
            raise ValueError(
                f"the persistent chains have {self.chains.shape[1]} dimensions, the data rows "
                f"have {data.shape[1]}"
            )
        return data

    def _fresh(self, num: int, data: Tensor) -> Tensor:
        if self.init_fn is not None:
            out = self.init_fn(num, data)
            if out.shape != (num, data.shape[1]):
                raise ValueError(
                    f"init_fn must return ({num}, {data.shape[1]}) states, got {tuple(out.shape)}"
                )
            return out.to(data)
        if self.block_gibbs:
            return _bernoulli_marginals(num, data, self.generator)
        return _uniform_in_range(num, data, self.generator)

    def _start_chains(self, data: Tensor) -> Tensor:
        num = self.num_chains if self.num_chains is not None else data.shape[0]
        if self.buffer_size is not None:
            return self._fresh(max(self.buffer_size, num), data)
        rows = torch.randint(data.shape[0], (num,), generator=self.generator, device=data.device)
        return data[rows].clone()

    def _run(self, start: Tensor) -> Tensor:
        """``k`` transitions from ``start`` (``(num_chains, D)``), every chain at once."""
        if self.block_gibbs:
            model: Any = self.energy
            # step() draws h from v: the hidden block of the starting state is never read.
            state = gibbs.GibbsState(start, start.new_empty(0))
            for _ in range(self.k):
                state, _ = gibbs.step(state, model, self.generator)
            return state.visible
        kernel = langevin.ula_step if self.sampler == "ula" else langevin.mala_step
        assert self.step_size is not None
        lstate = langevin.init(start, self.energy_of)
        for _ in range(self.k):
            lstate, _ = kernel(lstate, self.energy_of, self.step_size, generator=self.generator)
        return lstate.position

    @torch.no_grad()
    def sample_negatives(self, data: Tensor) -> Tensor:
        """Negatives for a batch ``data``: ``k`` transitions from the data (CD-k) or from the
        persistent chains (which then move on). Shape ``(num_chains, D)``."""
        data = self._check_data(data)
        if not self.persistent:
            return self._run(data)
        if self.chains is None:
            self.chains = self._start_chains(data)
        if self.buffer_size is None:
            self.chains = self._run(self.chains)
            return self.chains
        num = self.num_chains if self.num_chains is not None else data.shape[0]
        size = self.chains.shape[0]
        if num > size:
            raise ValueError(f"{num} chains asked of a buffer of {size} states")
        rows = torch.randperm(size, generator=self.generator, device=data.device)[:num]
        start = self.chains[rows]
        restart = (
            torch.rand(num, generator=self.generator, dtype=data.dtype, device=data.device)
            < self.reinit_prob
        )
        start = torch.where(restart[:, None], self._fresh(num, data), start)
        negatives = self._run(start)
        self.chains[rows] = negatives
        return negatives

    def _check_model(self, model: Callable[..., Any], data: Tensor) -> None:
        rows = data[:_CHECK_ROWS]
        with poutine.block(hide_types=["param"]):
            trace = poutine.trace(model).get_trace(rows)
        latent = [
            name
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        ]
        if latent:
            raise ValueError(
                f"contrastive divergence needs an unnormalized model without latent sites; "
                f"the model samples {latent}"
            )
        with torch.no_grad():
            from_model = torch.as_tensor(trace.log_prob_sum(), dtype=rows.dtype)
            from_energy = -self.energy_of(rows).sum()
        if not torch.allclose(from_model, from_energy, rtol=1e-4, atol=1e-4 * len(rows)):
            raise ValueError(
                "the model must score its data as -energy (pyro.factor('energy', -E(x)) in a "
                f"plate, as BernoulliRBM.model does): on {len(rows)} rows its log-factors sum to "
                f"{float(from_model):.6g}, the objective's energy gives {float(from_energy):.6g}"
            )

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        r"""Mean energy of the data minus mean energy of the (detached) negatives, times the
        number of data rows (every objective's loss is a sum over data points, as Pyro's).

        Args:
            model: the energy's Pyro program (checked under Pyro validation, not otherwise run).
            guide: ignored.
            data: rows ``(N, D)``, the only argument.
        """
        if len(args) != 1 or kwargs:
            raise TypeError("ContrastiveDivergence takes one argument after model and guide: data")
        data = self._check_data(args[0])
        if is_validation_enabled():
            self._check_model(model, data)
        negatives = self.sample_negatives(data)
        energies = self.energy_of(torch.cat([data, negatives.to(data)]))
        n = data.shape[0]  # a sum over the data rows, as Pyro's losses are
        return n * (energies[:n].mean() - energies[n:].mean())
