"""The assumptions pyrogen makes about Pyro's private API (pyrogen/compat.py). When a Pyro
upgrade breaks one, this file says which, before any objective fails obscurely."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import nn

from pyrogen import compat

HINT = (
    "a Pyro upgrade changed an internal pyrogen relies on (pyrogen/compat.py); pyrogen was "
    f"checked against pyro-ppl {', '.join(compat.TESTED_PYRO)}: pin one of those, or "
    "update compat.py"
)


def test_param_store_has_the_three_tables_we_swap() -> None:
    store = pyro.get_param_store()
    for table in ("_params", "_param_to_name", "_constraints"):
        assert isinstance(getattr(store, table, None), dict), f"ParamStoreDict.{table}: {HINT}"
    pyro.param("a", torch.ones(2))
    tables = compat.ParamTables.copy_of_global()
    assert set(tables.params) == {"a"}, HINT
    with compat.swapped_param_tables(compat.ParamTables.of({"b": torch.zeros(1)})):
        assert set(pyro.get_param_store().keys()) == {"b"}, HINT
    assert set(pyro.get_param_store().keys()) == {"a"}, HINT


def test_register_module_replaces_a_stale_entry() -> None:
    first, second = nn.Linear(2, 1), nn.Linear(2, 1)
    compat.register_module("net", first)
    compat.register_module("net", second)
    assert pyro.get_param_store()["net$$$weight"] is second.weight, HINT


def test_subsample_and_deterministic_markers() -> None:
    def model() -> None:
        with pyro.plate("data", 10, subsample_size=3):
            pyro.deterministic("d", torch.ones(3))

    trace = poutine.trace(model).get_trace()
    assert compat.is_subsample(trace.nodes["data"]["fn"]), f"plate subsample site: {HINT}"
    assert compat.is_unconditioned_deterministic(trace.nodes["d"]), f"deterministic: {HINT}"
    conditioned = poutine.trace(poutine.condition(model, {"d": torch.zeros(3)})).get_trace()
    assert not compat.is_unconditioned_deterministic(conditioned.nodes["d"]), HINT
    assert not compat.is_subsample(dist.Normal(0.0, 1.0)), HINT


def test_pyro_hmc_internals_the_arviz_recorder_reads() -> None:
    from pyro.infer import HMC, MCMC, NUTS

    assert callable(getattr(HMC, compat.HMC_KINETIC_ENERGY, None)), f"HMC kinetic energy: {HINT}"
    assert callable(getattr(NUTS, compat.NUTS_BUILD_TREE, None)), f"NUTS subtree: {HINT}"

    def model() -> None:
        pyro.sample("x", dist.Normal(0.0, 1.0))

    kernel = HMC(model, num_steps=2)
    seen: list[tuple[float, float]] = []

    def hook(k: object, params: object, stage: str, i: int) -> None:  # during the run
        seen.append((compat.hmc_potential_energy(k), compat.hmc_mean_accept_prob(k)))

    mcmc = MCMC(kernel, num_samples=3, warmup_steps=2, disable_progbar=True, hook_fn=hook)
    mcmc.run()
    assert len(seen) == 5, f"hook calls: {HINT}"
    assert all(0.0 <= accept <= 1.0 for _, accept in seen), f"running acceptance: {HINT}"
    assert len(compat.mcmc_diagnostics(mcmc)) == 1, f"MCMC diagnostics: {HINT}"
