"""ArviZ export for pyrogen's batched draws and for ``pyro.infer.MCMC``.

Both go through ``az.from_dict`` (ArviZ 0.2x takes groups as keywords, ArviZ 1.x a dict of
groups and returns a DataTree; :func:`to_arviz` calls whichever is installed), with a
``posterior`` group shaped ``(chain, draw, ...)`` and a ``sample_stats`` group named as ArviZ
expects: ``acceptance_rate``, ``diverging``, ``energy``, ``lp``, ``step_size``, ``n_steps``.
``az.summary``, ``az.rhat``, ``az.ess``, ``az.bfmi`` and ``az.plot_trace`` then work.

For Pyro's own HMC and NUTS kernels Pyro keeps only the divergent iterations and a mean
acceptance rate, so their export has ``diverging`` alone (no ``energy``: ``az.bfmi`` needs
a pyrogen kernel, or :class:`~pyrogen.inference.mcmc.PyroKernel` inside ``pyro.infer.MCMC``).

Example:
    >>> import torch
    >>> from pyrogen.inference.mcmc import sample
    >>> result = sample(lambda z: 0.5 * (z**2).sum(-1), torch.zeros(4, 2), num_warmup=50,
    ...                 num_samples=20, progress=False)
    >>> idata = to_arviz(result)
    >>> sorted(idata.posterior.data_vars)
    ['z']
"""

import inspect
from typing import Any

import numpy as np
import pyro.infer
import torch

__all__ = ["to_arviz"]

_STAT_NAMES = {"num_steps": "n_steps"}


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
    recorded: list[Any] = list(mcmc._diagnostics)
    per_chain = [d for d in recorded if d is not None]
    num_chains, num_samples = mcmc.num_chains, mcmc.num_samples
    if per_chain and all("pyrogen_stats" in d for d in per_chain):
        keys = per_chain[0]["pyrogen_stats"].keys()
        stats = {k: np.stack([_numpy(d["pyrogen_stats"][k]) for d in per_chain]) for k in keys}
        stats["diverging"] = stats["diverging"].astype(bool)
        return stats
    diverging = np.zeros((num_chains, num_samples), dtype=bool)
    for chain, diag in enumerate(per_chain):
        for i in diag.get("divergences", []):
            if 0 <= i < num_samples:
                diverging[chain, i] = True
    return {"diverging": diverging}


def to_arviz(source: Any, **kwargs: Any) -> Any:
    """An ArviZ ``InferenceData`` (or DataTree on ArviZ 1.x) from a run.

    Args:
        source: a :class:`~pyrogen.inference.mcmc.MCMCResult` or a finished
            ``pyro.infer.MCMC``.
        **kwargs: passed to ``az.from_dict`` (``coords``, ``dims``, ...).
    """
    from pyrogen.inference.mcmc.sample import MCMCResult

    if isinstance(source, MCMCResult):
        posterior = {k: _numpy(v) for k, v in source.samples.items()}
        stats = {_STAT_NAMES.get(k, k): _numpy(v) for k, v in source.stats.items()}
    elif isinstance(source, pyro.infer.MCMC):
        if getattr(source, "_samples", None) is None:
            raise ValueError("this pyro.infer.MCMC has not been run")
        samples = source.get_samples(group_by_chain=True)
        posterior = {k: _numpy(v) for k, v in samples.items()}
        stats = _pyro_stats(source)
    else:
        raise TypeError(
            f"to_arviz takes an MCMCResult or a pyro.infer.MCMC, got {type(source).__name__}"
        )
    return _from_dict({"posterior": posterior, "sample_stats": stats}, **kwargs)
