"""What a batched run returns: draws shaped ``(chain, draw, ...)`` and per-draw statistics.

A leaf module: the ArviZ export (:mod:`pyrogen.metrics.arviz`) imports this record, and the
record reaches the export only when :meth:`MCMCResult.to_arviz` is called.
"""

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from pyrogen.inference.mcmc.gibbs import GibbsState
from pyrogen.inference.mcmc.state import GradientState

__all__ = ["MCMCResult"]


@dataclass
class MCMCResult:
    """Draws and per-draw statistics of a batched run.

    Attributes:
        samples: ``name -> (num_chains, num_samples, *shape)``; constrained site values and
            ``pyro.deterministic`` sites for a Pyro model, ``{"z": positions}`` otherwise.
        stats: the kernel's per-draw statistics, each ``(num_chains, num_samples)``: for HMC
            ``acceptance_rate``, ``diverging``, ``energy`` (the Hamiltonian), ``lp`` (minus
            the potential), ``step_size`` and ``num_steps``; Langevin kernels have no
            ``energy`` and no ``num_steps``; Gibbs has none.
        step_size: adapted step size (scalar or one per chain); ``None`` for Gibbs.
        inverse_mass: adapted inverse mass matrix: its diagonal, shaped like one chain's
            position, or with ``full_mass`` the ``(D, D)`` matrix over the flattened position;
            ``None`` for Gibbs.
        trajectory_length: adapted trajectory length (ChEES), if any.
        final_state: the chains' last state, to continue sampling.
        warmup_divergences: divergent transitions during warm-up, per chain.
        wall_time: seconds for warm-up and sampling.
    """

    samples: dict[str, Tensor]
    stats: dict[str, Tensor]
    step_size: Tensor | None
    inverse_mass: Tensor | None
    trajectory_length: float | None
    final_state: GradientState | GibbsState
    warmup_divergences: Tensor
    wall_time: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_samples(self) -> int:
        return next(iter(self.samples.values())).shape[1]

    def to_arviz(self, **kwargs: Any) -> Any:
        """An ``arviz.InferenceData`` with posterior and sample_stats groups."""
        # Imported on call: the export depends on this record, never the other way round.
        from pyrogen.metrics.arviz import to_arviz

        return to_arviz(self, **kwargs)
