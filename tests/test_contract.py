"""The contract every pyrogen objective keeps (one test, parametrized over all of them).

A new objective exported from ``pyrogen.inference`` must add a case to ``CASES``: the
first test fails until it does.
"""

import inspect
import math
from collections.abc import Callable

import pyro
import pytest
import torch

import pyrogen.inference as inference
from pyrogen.inference import CUBO, IWAE, Objective, RenyiBound, VRMax
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian

Z = 5.0

CASES: dict[str, Callable[[bool], Objective]] = {
    "RenyiBound(alpha=1)": lambda v: RenyiBound(1.0, 3, vectorize_particles=v),
    "RenyiBound(alpha=0.5)": lambda v: RenyiBound(0.5, 3, vectorize_particles=v),
    "RenyiBound(alpha=-1)": lambda v: RenyiBound(-1.0, 3, vectorize_particles=v),
    "RenyiBound(alpha=0.5, dreg)": lambda v: RenyiBound(
        0.5, 3, gradient="dreg", vectorize_particles=v
    ),
    "IWAE": lambda v: IWAE(3, vectorize_particles=v),
    "IWAE(dreg)": lambda v: IWAE(3, gradient="dreg", vectorize_particles=v),
    "VRMax": lambda v: VRMax(3, vectorize_particles=v),
    "CUBO": lambda v: CUBO(2.0, 3, vectorize_particles=v),
}


def _exported_objectives() -> set[type]:
    return {
        obj
        for _, obj in inspect.getmembers(inference, inspect.isclass)
        if issubclass(obj, Objective) and obj is not Objective
    }


def test_every_objective_has_a_contract_case() -> None:
    covered = {type(make(True)) for make in CASES.values()}
    missing = _exported_objectives() - covered
    assert not missing, f"add contract cases for {sorted(c.__name__ for c in missing)}"


def _pair(seed: int = 0) -> tuple[ConjugateGaussian, AmortizedGaussianGuide, torch.Tensor]:
    model = ConjugateGaussian(dim=2, prior_loc=0.3)
    guide = AmortizedGaussianGuide(dim=2).set_to(0.6, 0.1, 0.7)
    gen = torch.Generator().manual_seed(seed)
    return model, guide, torch.randn(12, 2, generator=gen)


@pytest.mark.parametrize("name", list(CASES))
def test_finite_scalar_and_gradients_reach_every_parameter(name: str) -> None:
    model, guide, x = _pair()
    loss = CASES[name](True).differentiable_loss(model, guide, x)
    assert loss.shape == () and torch.isfinite(loss)
    params = dict(model.named_parameters(prefix="model")) | dict(
        guide.named_parameters(prefix="guide")
    )
    grads = torch.autograd.grad(loss, list(params.values()))
    for (pname, _), g in zip(params.items(), grads, strict=True):
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0, pname


@pytest.mark.parametrize("name", list(CASES))
def test_loss_equals_differentiable_loss(name: str) -> None:
    model, guide, x = _pair()
    obj = CASES[name](True)
    obj.loss(model, guide, x)  # the first call draws extra numbers to find the plate nesting
    pyro.set_rng_seed(7)
    value = obj.loss(model, guide, x)
    pyro.set_rng_seed(7)
    tensor = obj.differentiable_loss(model, guide, x)
    pyro.set_rng_seed(7)
    from_grads = obj.loss_and_grads(model, guide, x)
    assert isinstance(value, float)
    assert value == float(tensor.detach()) == from_grads


@pytest.mark.parametrize("name", list(CASES))
def test_vectorized_equals_sequential(name: str) -> None:
    """Same distribution of the loss, whichever way the particles are drawn."""
    model, guide, x = _pair()
    reps = 300
    samples = {}
    for vectorize in [True, False]:
        obj = CASES[name](vectorize)
        samples[vectorize] = torch.tensor([obj.loss(model, guide, x) for _ in range(reps)])
    a, b = samples[True], samples[False]
    se = math.sqrt(float(a.var() + b.var()) / reps)
    assert abs(float(a.mean() - b.mean())) < Z * se, (float(a.mean()), float(b.mean()), se)


@pytest.mark.parametrize("name", list(CASES))
def test_runs_through_svi(name: str) -> None:
    model, guide, x = _pair()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=CASES[name](True))
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    losses = [svi.step(x) for _ in range(5)]
    after = dict(pyro.get_param_store().items())
    assert all(math.isfinite(v) for v in losses)
    assert len(after) == 4  # the model's prior mean and the guide's three parameters
    for k, v in before.items():
        assert not torch.equal(v, after[k].detach()), f"SVI did not move {k}"


@pytest.mark.parametrize("name", list(CASES))
def test_runs_as_a_module(name: str) -> None:
    model, guide, x = _pair()
    module = CASES[name](True)(model, guide)
    assert isinstance(module, torch.nn.Module)
    params = list(module.parameters())
    assert len(params) == 4
    opt = torch.optim.Adam(params, lr=0.05)
    before = [p.detach().clone() for p in params]
    for _ in range(5):
        opt.zero_grad()
        loss = module(x)
        loss.backward()
        opt.step()
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))
