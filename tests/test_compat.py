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
