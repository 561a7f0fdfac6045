"""Every use of Pyro's private API, in one place.

pyrogen builds on Pyro's public API wherever it can. A few things it needs have no public
form: replacing a stale entry of the param store, running a program against a copy of the
store's tables, recognising a subsample site and an unconditioned ``pyro.deterministic``,
and Trace_ELBO's plate-wise log-ratio for score-function rewards.
The recorder of Pyro's own HMC/NUTS statistics (:mod:`pyrogen.metrics.arviz`) also reads
a kernel's cached potential energy and running acceptance, calls its kinetic energy and
tree builder, and reads the diagnostics ``pyro.infer.MCMC`` collected. They live here, each
written against Pyro 1.9, so that a Pyro upgrade that breaks one of
them fails in one module, and ``tests/test_compat.py`` says which assumption broke.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import pyro
from pyro.params import param_with_module_name
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor, nn

__all__ = [
    "HMC_KINETIC_ENERGY",
    "NUTS_BUILD_TREE",
    "ParamTables",
    "hmc_kinetic_energy",
    "hmc_mean_accept_prob",
    "hmc_potential_energy",
    "mcmc_diagnostics",
    "nuts_build_tree",
    "TESTED_PYRO",
    "is_subsample",
    "is_unconditioned_deterministic",
    "plate_wise_log_ratio",
    "register_module",
    "swapped_param_tables",
]

#: The Pyro releases these assumptions were checked against (tests/test_compat.py);
#: pyproject.toml bounds pyro-ppl from above at the newest of them.
TESTED_PYRO = ("1.9.2",)


def is_subsample(fn: Any) -> bool:
    """Whether a sample site's distribution is a plate's subsample draw (not a latent)."""
    return isinstance(fn, _Subsample)


def is_unconditioned_deterministic(msg: Any) -> bool:
    """Whether a site is a ``pyro.deterministic`` whose "observation" is its own value
    (Pyro marks those sites with the private ``infer["_deterministic"]`` flag)."""
    if not msg["infer"].get("_deterministic"):
        return False
    fn = msg["fn"]
    v = getattr(getattr(fn, "base_dist", fn), "v", None)
    return isinstance(v, Tensor) and msg["value"].data_ptr() == v.data_ptr()


def plate_wise_log_ratio(model_trace: Any, guide_trace: Any) -> Any:
    """Trace_ELBO's detached log p - log q of every site, keyed by its plates (a
    ``pyro.infer.util.MultiFrameTensor``, read with ``.sum_to(site's plates)``): the reward
    of a non-reparameterized site, restricted to the terms in its own plates. The traces
    must have their log-densities (``compute_log_prob`` / ``compute_score_parts``)."""
    from pyro.infer.trace_elbo import _compute_log_r

    return _compute_log_r(model_trace, guide_trace)


def register_module(name: str, module: nn.Module) -> None:
    """``pyro.module(name, module)`` with the module's own tensors.

    An entry ``"<name>$$$<param>"`` left in the param store by another module of the same
    name (a second objective built in the same Python process, the notebook case) is
    replaced first: plain ``pyro.module`` would return the stale tensor, and SVI would step
    it instead of this module's parameter.
    """
    store = pyro.get_param_store()
    for pname, value in module.named_parameters():
        full = param_with_module_name(name, pname)
        if full in store and store.get_param(full) is not value:
            del store[full]
    pyro.module(name, module)


class ParamTables(NamedTuple):
    """A copy of Pyro's param store's three tables, for a frozen snapshot to read."""

    params: dict[str, Tensor]
    param_to_name: dict[Tensor, str]
    constraints: dict[str, Any]

    @classmethod
    def of(cls, params: dict[str, Tensor]) -> ParamTables:
        """Tables holding ``params`` (unconstrained values) with the global store's
        constraints for those names."""
        constraints = pyro.get_param_store()._constraints
        return cls(
            params,
            {v: k for k, v in params.items()},
            {k: constraints[k] for k in params if k in constraints},
        )

    @classmethod
    def copy_of_global(cls) -> ParamTables:
        """A detached copy of the global store as it is now."""
        store = pyro.get_param_store()
        params = {k: v.detach().clone() for k, v in store.named_parameters()}
        return cls(params, {v: k for k, v in params.items()}, dict(store._constraints))


@contextmanager
def swapped_param_tables(tables: ParamTables) -> Iterator[None]:
    """Run against ``tables`` instead of the global param store. ``ParamStoreDict.scope``
    would do it, but its ``get_state`` strips the ``unconstrained`` references that
    :class:`pyro.infer.SVI` reads from the live parameters; this swaps the tables only.
    (``PyroModule`` parameters read the store's tables directly, so a handler alone is not
    enough.)"""
    store = pyro.get_param_store()
    saved = store._params, store._param_to_name, store._constraints
    store._params, store._param_to_name, store._constraints = tables
    try:
        yield
    finally:
        store._params, store._param_to_name, store._constraints = saved


# Pyro's HMC/NUTS internals that pyrogen.metrics.arviz records beside (never replacing the
# class's methods: one kernel instance gets wrappers under these names).
HMC_KINETIC_ENERGY = "_kinetic_energy"
"""The method of ``pyro.infer.HMC`` that computes the kinetic energy of a momentum."""
NUTS_BUILD_TREE = "_build_tree"
"""The method of ``pyro.infer.NUTS`` that builds one subtree."""


def hmc_potential_energy(kernel: Any) -> float:
    """The potential energy cached at the kernel's last draw."""
    return float(kernel._potential_energy_last)


def hmc_mean_accept_prob(kernel: Any) -> float:
    """The running mean of the acceptance probability over the draws so far."""
    return float(kernel._mean_accept_prob)


def hmc_kinetic_energy(kernel: Any, r_unscaled: Any) -> Any:
    """The class's own kinetic energy (not an instance's wrapper)."""
    return getattr(type(kernel), HMC_KINETIC_ENERGY)(kernel, r_unscaled)


def nuts_build_tree(kernel: Any, *args: Any, **kwargs: Any) -> Any:
    """The class's own subtree builder (not an instance's wrapper)."""
    return getattr(type(kernel), NUTS_BUILD_TREE)(kernel, *args, **kwargs)


def mcmc_diagnostics(mcmc: Any) -> list[Any]:
    """The per-chain diagnostics ``pyro.infer.MCMC`` collected from its kernels."""
    return list(mcmc._diagnostics)
