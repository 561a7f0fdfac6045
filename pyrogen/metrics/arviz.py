r"""ArviZ export for pyrogen's batched draws and for ``pyro.infer.MCMC``.

Both go through ``az.from_dict`` (ArviZ 0.2x takes groups as keywords, ArviZ 1.x a dict of
groups and returns a DataTree; :func:`to_arviz` calls whichever is installed), with a
``posterior`` group shaped ``(chain, draw, ...)`` (latent and ``pyro.deterministic`` sites) and
a ``sample_stats`` group named as ArviZ expects: ``acceptance_rate``, ``diverging``,
``energy``, ``lp``, ``step_size``, ``n_steps`` (and ``tree_depth`` for NUTS). ``energy`` is
exported only for Hamiltonian kernels, where it is the Hamiltonian ``az.bfmi`` reads; MALA and
ULA have none. ``az.summary``, ``az.rhat``, ``az.ess``, ``az.bfmi`` and
``az.plot_trace`` then work.

Pyro's own HMC and NUTS kernels keep only the divergent iterations and a running mean of the
acceptance probability, so a plain run exports ``diverging`` alone. Build a
:class:`PyroStatsRecorder` on the kernel and pass it as ``hook_fn`` to record the rest; the
records travel back through Pyro's ``diagnostics()`` (from worker processes too), as those of
:class:`~pyrogen.inference.mcmc.PyroKernel` do.

Example:
    >>> import torch
    >>> from pyrogen.inference.mcmc import sample
    >>> result = sample(lambda z: 0.5 * (z**2).sum(-1), torch.zeros(4, 2), num_warmup=50,
    ...                 num_samples=20, progress=False)
    >>> idata = to_arviz(result)
    >>> sorted(idata.posterior.data_vars)
    ['z']
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro.infer
import torch

from pyrogen import compat
from pyrogen.inference.mcmc.result import MCMCResult
from pyrogen.metrics.guide_draws import GuideDraws

__all__ = ["PyroStatsRecorder", "to_arviz"]

_STAT_NAMES = {"num_steps": "n_steps"}
_RECORDING = "_pyrogen_recording"  # the attribute of a recorded kernel instance


class _Recording:
    """What one kernel instance has seen: the current transition and the chain's draws.

    It lives on the kernel, so a worker process records on its own copy and sends the draws
    home with the kernel's ``diagnostics()``.
    """

    def __init__(self, nuts: bool) -> None:
        self.nuts = nuts
        self.in_transition = False
        self.nesting = 0  # depth of NUTS's recursive _build_tree calls
        self.energy: float | None = None  # H at the start of the current transition
        self.num_leapfrog = 0
        self.tree_depth = 0
        self.mean_before = 0.0
        self.mean_after = 0.0
        self.draws: dict[str, list[float]] = self._empty()

    def _empty(self) -> dict[str, list[float]]:
        names = ["acceptance_rate", "step_size", "lp", "energy", "n_steps"]
        return {k: [] for k in names + (["tree_depth"] if self.nuts else [])}

    def start(self, mean_accept_prob: float) -> None:
        self.in_transition = True
        self.energy = None
        self.num_leapfrog = self.tree_depth = self.nesting = 0
        self.mean_before = float(mean_accept_prob)

    def add_draw(self, kernel: Any, i: int) -> None:
        if i == 0:  # a new chain (or a new run) starts its draws
            self.draws = self._empty()
        if self.energy is None:
            raise RuntimeError(
                "PyroStatsRecorder saw no transition before this draw: the kernel's sample() "
                "was replaced after the recorder was built, or the model has no latent sites"
            )
        # Pyro's running mean after n draws: m_n = m_{n-1} + (a_n - m_{n-1}) / n.
        n = i + 1
        if n == 1:
            accept = self.mean_after
        else:
            accept = self.mean_before + n * (self.mean_after - self.mean_before)
        draws = self.draws
        draws["acceptance_rate"].append(min(max(accept, 0.0), 1.0))  # rounding only
        draws["step_size"].append(float(kernel.step_size))
        draws["lp"].append(-compat.hmc_potential_energy(kernel))
        draws["energy"].append(self.energy)
        if self.nuts:
            draws["n_steps"].append(self.num_leapfrog)
            draws["tree_depth"].append(self.tree_depth)
        else:
            draws["n_steps"].append(kernel.num_steps)
        self.energy = None

    def chain_stats(self, divergences: list[int]) -> dict[str, np.ndarray] | None:
        num_draws = len(self.draws["lp"])
        if num_draws == 0:
            return None
        stats = {k: np.asarray(v) for k, v in self.draws.items()}
        diverging = np.zeros(num_draws, dtype=bool)
        diverging[[i for i in divergences if 0 <= i < num_draws]] = True
        stats["diverging"] = diverging
        return stats


# The instance attributes that replace four methods of one recorded kernel. Module-level
# functions under functools.partial, so a recorded kernel still pickles (spawned workers).
def _recorded_sample(kernel: Any, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    recording: _Recording = getattr(kernel, _RECORDING)
    recording.start(compat.hmc_mean_accept_prob(kernel))
    try:
        return type(kernel).sample(kernel, params)
    finally:
        recording.in_transition = False
        recording.mean_after = compat.hmc_mean_accept_prob(kernel)


def _recorded_kinetic_energy(kernel: Any, r_unscaled: dict[Any, torch.Tensor]) -> Any:
    kinetic = compat.hmc_kinetic_energy(kernel, r_unscaled)
    recording: _Recording = getattr(kernel, _RECORDING)
    if recording.in_transition:
        if recording.energy is None:
            # The first call of a transition is on the momentum just drawn, at the state
            # cached from the last draw: Pyro's `energy_current`, the same sum in the same order.
            recording.energy = float(kinetic + compat.hmc_potential_energy(kernel))
        else:  # HMC: the proposal; NUTS: one call per leapfrog step (_build_basetree)
            recording.num_leapfrog += 1
    return kinetic


def _recorded_build_tree(kernel: Any, *args: Any, **kwargs: Any) -> Any:
    recording: _Recording = getattr(kernel, _RECORDING)
    recording.nesting += 1
    try:
        tree = compat.nuts_build_tree(kernel, *args, **kwargs)
    finally:
        recording.nesting -= 1
    # NUTS.sample counts a doubling only when the new subtree neither turns nor diverges:
    # Stan's treedepth__.
    if recording.nesting == 0 and recording.in_transition:
        if not (bool(tree.turning) or bool(tree.diverging)):
            recording.tree_depth += 1
    return tree


def _recorded_diagnostics(kernel: Any) -> dict[str, Any]:
    diagnostics = dict(type(kernel).diagnostics(kernel))
    recording: _Recording = getattr(kernel, _RECORDING)
    stats = recording.chain_stats(list(diagnostics.get("divergences", [])))
    if stats is not None:
        diagnostics["pyrogen_stats"] = stats
    return diagnostics


_RECORDED: dict[str, Callable[..., Any]] = {
    "sample": _recorded_sample,
    compat.HMC_KINETIC_ENERGY: _recorded_kinetic_energy,
    compat.NUTS_BUILD_TREE: _recorded_build_tree,
    "diagnostics": _recorded_diagnostics,
}


class PyroStatsRecorder:
    r"""Per-draw sample statistics of Pyro's own ``HMC`` and ``NUTS``, for :func:`to_arviz`.

    Build it on the kernel, pass it as ``hook_fn`` to ``pyro.infer.MCMC``, and
    ``to_arviz(mcmc)`` exports per post-warm-up draw :math:`n`:

    - ``acceptance_rate``: Pyro's acceptance probability :math:`a_n` (HMC: the Metropolis
      probability; NUTS: the mean over the trajectory, as Stan), recovered exactly from the
      running mean Pyro keeps, :math:`m_n = m_{n-1} + (a_n - m_{n-1})/n`.
    - ``step_size``, and ``lp`` :math:`= -U(q_n)`, the log density of the draw in the
      unconstrained space (with the log-Jacobian), i.e. minus Pyro's potential energy.
    - ``energy`` :math:`E_n = U(q_{n-1}) + K(p_n)`: the Hamiltonian at the start of the
      transition that produced the draw, with :math:`p_n \sim N(0, M)` the momentum drawn
      there and :math:`q_{n-1}` the previous draw (the last warm-up state for :math:`n = 0`).
      It is Pyro's own ``energy_current``; Pyro computes it and drops it.
    - ``n_steps``: leapfrog steps of the transition; for NUTS also ``tree_depth``, the
      number of doublings whose subtree neither turned nor diverged (Stan's ``treedepth__``),
      so :math:`2^d - 1 \le` ``n_steps`` :math:`\le 2^{d+1} - 1`.
    - ``diverging``, from Pyro's list of divergent iterations.

    Why :math:`E_n` is the energy the E-BFMI needs: the E-BFMI
    :math:`\sum_n (E_n - E_{n-1})^2 / \sum_n (E_n - \bar E)^2` compares the energy change
    caused by resampling the momentum with the spread of the marginal energy ("Diagnosing
    Suboptimal Cotangent Disintegrations in Hamiltonian Monte Carlo", Betancourt, 2016,
    https://arxiv.org/abs/1604.00695). Writing :math:`p^*_{n-1}` for the momentum at the
    point NUTS or HMC selected at the end of transition :math:`n-1`,
    :math:`E_n - E_{n-1} = [K(p_n) - K(p^*_{n-1})] + [H(q_{n-1}, p^*_{n-1}) - E_{n-1}]`:
    the first bracket is exactly the resampling change at :math:`q_{n-1}`, the second the
    integrator's energy error along transition :math:`n-1` (zero for exact dynamics and for
    a rejected HMC proposal). Stan's ``energy__`` is :math:`H(q_n, p^*_n)`, the same
    quantity up to that same integrator error; Pyro's NUTS does not keep :math:`p^*_n`, so
    the start of the transition is the only point known for both kernels. Pyro draws the
    momentum as :math:`M^{1/2} z` with :math:`z \sim N(0, I_d)` and :math:`K = |z|^2/2`, so
    :math:`E_n + \mathrm{lp}_{n-1} = K(p_n)` is exactly :math:`\chi^2_d/2`, independent
    across draws, whatever the mass matrix.

    How: the recorder replaces four methods of this one kernel instance (never its class):
    ``sample`` (marks a transition and reads the running mean around it),
    ``_kinetic_energy`` (its first call in a transition is on the fresh momentum, its later
    ones count NUTS's leapfrog steps), NUTS's ``_build_tree`` (doublings) and
    ``diagnostics`` (adds the draws as ``"pyrogen_stats"``). The hook only marks which
    transitions are post-warm-up draws. The records live on the kernel, so chains run in
    worker processes (``num_chains > 1``) come back through ``diagnostics()`` too, and
    every chain or new ``run()`` starts its own records.

    Args:
        kernel: a ``pyro.infer.HMC`` or ``pyro.infer.NUTS`` (not yet recorded).

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer import MCMC, NUTS
        >>> def model():
        ...     pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> kernel = NUTS(model)
        >>> mcmc = MCMC(kernel, num_samples=20, warmup_steps=20,
        ...             hook_fn=PyroStatsRecorder(kernel), disable_progbar=True)
        >>> mcmc.run()
        >>> to_arviz(mcmc).sample_stats["energy"].shape
        (1, 20)
    """

    def __init__(self, kernel: pyro.infer.HMC) -> None:
        if not isinstance(kernel, pyro.infer.HMC):
            raise TypeError(
                "PyroStatsRecorder records pyro.infer.HMC or NUTS kernels, got "
                f"{type(kernel).__name__} (pyrogen's PyroKernel records its own statistics)"
            )
        if hasattr(kernel, _RECORDING) or any(name in vars(kernel) for name in _RECORDED):
            raise ValueError("this kernel already has a recorder (or patched methods)")
        nuts = isinstance(kernel, pyro.infer.NUTS)
        setattr(kernel, _RECORDING, _Recording(nuts))
        for name, recorded in _RECORDED.items():
            if name != compat.NUTS_BUILD_TREE or nuts:
                setattr(kernel, name, functools.partial(recorded, kernel))
        self.kernel = kernel

    def __call__(self, kernel: Any, params: Any, stage: str, i: int) -> None:
        """Pyro's ``hook_fn(kernel, samples, stage, i)``, called after every transition."""
        recording = getattr(kernel, _RECORDING, None)
        if recording is None:
            raise ValueError(
                "hook_fn got a kernel this PyroStatsRecorder was not built on: build "
                "PyroStatsRecorder(kernel) with the kernel given to pyro.infer.MCMC"
            )
        if stage.startswith("Sample"):  # "Warmup", "Warmup [c]", "Sample", "Sample [c]"
            recording.add_draw(kernel, i)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _from_dict(groups: dict[str, dict[str, np.ndarray]], **kwargs: Any) -> Any:
    import arviz as az

    from_dict: Any = az.from_dict
    if "posterior" in inspect.signature(from_dict).parameters:  # ArviZ 0.x
        return from_dict(**groups, **kwargs)
    return from_dict(groups, **kwargs)  # ArviZ 1.x: one dict of groups, a DataTree


def _pyro_stats(mcmc: pyro.infer.MCMC) -> dict[str, np.ndarray]:
    recorded: list[Any] = compat.mcmc_diagnostics(mcmc)
    per_chain = [d for d in recorded if d is not None]
    num_chains, num_samples = mcmc.num_chains, mcmc.num_samples
    if per_chain and all("pyrogen_stats" in d for d in per_chain):
        keys = per_chain[0]["pyrogen_stats"].keys()
        stats = {k: np.stack([_numpy(d["pyrogen_stats"][k]) for d in per_chain]) for k in keys}
        stats["diverging"] = stats["diverging"].astype(bool)
        return stats
    if hasattr(mcmc.kernel, _RECORDING):
        raise ValueError(
            "the kernel of this pyro.infer.MCMC has a PyroStatsRecorder, but it recorded no "
            "draws: pass it to the run as pyro.infer.MCMC(kernel, ..., hook_fn=recorder)"
        )
    diverging = np.zeros((num_chains, num_samples), dtype=bool)
    for chain, diag in enumerate(per_chain):
        for i in diag.get("divergences", []):
            if 0 <= i < num_samples:
                diverging[chain, i] = True
    return {"diverging": diverging}


def to_arviz(source: Any, **kwargs: Any) -> Any:
    r"""An ArviZ ``InferenceData`` (or DataTree on ArviZ 1.x) from a run.

    Args:
        source: a :class:`~pyrogen.inference.mcmc.MCMCResult`, a finished
            ``pyro.infer.MCMC`` (whose per-draw statistics, beyond ``diverging``, come from
            a :class:`~pyrogen.inference.mcmc.PyroKernel` or a :class:`PyroStatsRecorder`),
            or a guide's :class:`~pyrogen.metrics.guide_draws.GuideDraws`: one chain of
            independent draws, with ``lp`` (:math:`\log p(x, z)`), ``log_q`` and
            ``log_weight`` in ``sample_stats``.
        **kwargs: passed to ``az.from_dict`` (``coords``, ``dims``, ...).
    """
    if isinstance(source, MCMCResult):
        posterior = {k: _numpy(v) for k, v in source.samples.items()}
        stats = {k: _numpy(v) for k, v in source.stats.items()}
    elif isinstance(source, GuideDraws):  # one chain of independent draws
        posterior = {k: _numpy(v)[None] for k, v in source.samples.items()}
        stats = {
            "lp": _numpy(source.log_p)[None],
            "log_q": _numpy(source.log_q)[None],
            "log_weight": _numpy(source.log_weight)[None],
        }
    elif isinstance(source, pyro.infer.MCMC):
        if getattr(source, "_samples", None) is None:
            raise ValueError("this pyro.infer.MCMC has not been run")
        samples = source.get_samples(group_by_chain=True)
        posterior = {k: _numpy(v) for k, v in samples.items()}
        stats = _pyro_stats(source)
    else:
        raise TypeError(
            "to_arviz takes an MCMCResult, a pyro.infer.MCMC or GuideDraws, got "
            f"{type(source).__name__}"
        )
    groups = {"posterior": posterior}
    if stats:  # a Gibbs run has none
        groups["sample_stats"] = {_STAT_NAMES.get(k, k): v for k, v in stats.items()}
    return _from_dict(groups, **kwargs)
