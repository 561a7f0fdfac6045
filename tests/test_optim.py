"""FusedOptim steps SVI's parameters as Pyro's per-parameter optimisers do, bit for bit."""

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import constraints

from pyrogen.inference import RenyiBound
from pyrogen.optim import FusedOptim

DATA = torch.linspace(-1.0, 2.0, 12)


def model(x: torch.Tensor, step: int = 0) -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 3.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def make_guide():
    """A guide with a network (fresh weights from a fixed seed), two parameters and one
    more that joins at step 4."""
    torch.manual_seed(1)
    net = torch.nn.Linear(1, 1)

    def guide(x: torch.Tensor, step: int = 0) -> None:
        pyro.module("net", net)
        m = pyro.param("m", torch.tensor(0.3))
        s = pyro.param("s", torch.tensor(1.0), constraint=constraints.positive)
        shift = net(torch.ones(1)).squeeze() * 0.1
        if step >= 4:  # a parameter that joins later: the optimiser is rebuilt around it
            shift = shift + pyro.param("late", torch.tensor(0.0))
        pyro.sample("loc", dist.Normal(m + shift, s))

    return guide


def _fit(optim: pyro.optim.PyroOptim, loss: pyro.infer.ELBO, steps: int) -> dict:
    pyro.clear_param_store()
    guide = make_guide()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, optim, loss)
    losses = [svi.step(DATA, step) for step in range(steps)]
    store = pyro.get_param_store()
    return {"losses": losses} | {k: v.detach().clone() for k, v in store.items()}


@pytest.mark.parametrize(
    "cls, args",
    [
        (torch.optim.Adam, {"lr": 0.05}),
        (torch.optim.Adam, {"lr": 0.05, "betas": (0.5, 0.9), "weight_decay": 0.01}),
        (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}),
        (torch.optim.RMSprop, {"lr": 0.01}),
    ],
)
@pytest.mark.parametrize("loss", [Trace_ELBO, lambda: RenyiBound(alpha=0.5, num_particles=3)])
def test_same_parameters_as_pyro_optim(cls, args, loss) -> None:
    ours = _fit(FusedOptim(cls, args), loss(), 10)
    pyros = _fit(pyro.optim.PyroOptim(cls, args), loss(), 10)
    assert ours.keys() == pyros.keys() and "late" in ours
    assert ours["losses"] == pyros["losses"]
    for name in ours:
        if name != "losses":
            assert torch.equal(ours[name], pyros[name]), name


def test_state_moves_between_fused_and_pyro() -> None:
    """A checkpoint of either optimiser continues in the other exactly as it would have."""
    args = {"lr": 0.05}
    reference = _fit(pyro.optim.Adam(args), Trace_ELBO(), 10)
    for first, second in [
        (FusedOptim(torch.optim.Adam, args), pyro.optim.Adam(args)),
        (pyro.optim.Adam(args), FusedOptim(torch.optim.Adam, args)),
    ]:
        pyro.clear_param_store()
        guide = make_guide()
        pyro.set_rng_seed(0)
        svi = SVI(model, guide, first, Trace_ELBO())
        losses = [svi.step(DATA, step) for step in range(6)]
        second.set_state(first.get_state())
        svi = SVI(model, guide, second, Trace_ELBO())
        losses += [svi.step(DATA, step) for step in range(6, 10)]
        assert losses == reference["losses"]
        for name, value in pyro.get_param_store().items():
            assert torch.equal(value.detach(), reference[name]), name


def test_set_state_after_steps_replaces_held_state() -> None:
    args = {"lr": 0.05}
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    fused = FusedOptim(torch.optim.Adam, args)
    svi = SVI(model, make_guide(), fused, Trace_ELBO())
    svi.step(DATA, 0)
    saved = copy.deepcopy(fused.get_state())  # torch's state_dict holds live tensors
    svi.step(DATA, 1)
    fused.set_state(saved)
    assert fused.get_state().keys() == set()  # nothing held until the next step loads it
    svi.step(DATA, 2)
    steps = {name: int(s["state"][0]["step"]) for name, s in fused.get_state().items()}
    assert set(steps.values()) == {2}  # the saved count (1) plus this step


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="per-parameter"):
        FusedOptim(torch.optim.Adam, lambda name: {"lr": 0.1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="torch.optim.Optimizer class"):
        FusedOptim(torch.optim.lr_scheduler.StepLR, {"step_size": 1})  # type: ignore[arg-type]
