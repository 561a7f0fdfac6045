"""The contract every pyrogen objective keeps (one test, parametrized over all of them).

A new objective exported from ``pyrogen.inference`` must add a case to ``CASES``: the
first test fails until it does.
"""

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrogen.inference as inference
from pyrogen.inference import (
    AVB,
    CUBO,
    GAN,
    IWAE,
    KALE,
    NCE,
    WGAN,
    WGANGP,
    ContrastiveDivergence,
    HingeGAN,
    Objective,
    RenyiBound,
    SelfContrastive,
    VRMax,
    empty_guide,
    implicit_sample,
)
from pyrogen.inference.gan import Adversarial
from pyrogen.models import AmortizedGaussianGuide, BernoulliRBM, ConjugateGaussian
from pyrogen.models.gan import Generator, mlp

Z = 5.0


class Problem(NamedTuple):
    """What an objective is run on: model, guide, data, and every module whose parameters
    its losses must reach (model, guide and the objective's own players)."""

    model: torch.nn.Module
    guide: Any
    x: torch.Tensor
    modules: dict[str, torch.nn.Module]
    num_pyro_params: int


def conjugate(seed: int = 0) -> Problem:
    model = ConjugateGaussian(dim=2, prior_loc=0.3)
    guide = AmortizedGaussianGuide(dim=2).set_to(0.6, 0.1, 0.7)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 2, generator=gen)
    return Problem(model, guide, x, {"model": model, "guide": guide}, 4)


def _generator() -> Generator:
    torch.manual_seed(0)
    return Generator(mlp([2, 8, 2]), latent_dim=2, event_shape=(2,))


def _critic(pack: int = 1, output_bias: bool = True) -> torch.nn.Module:
    """A small critic; Wasserstein and hinge losses do not depend on a constant shift of
    the critic (its gradient cancels between real and fake), so theirs has no output bias."""
    torch.manual_seed(1)
    net = mlp([2 * pack, 8, 1], activation=torch.nn.Tanh)
    if not output_bias:
        net[-1] = torch.nn.Linear(8, 1, bias=False)
    return net


def adversarial(objective: Adversarial) -> Problem:
    gen = _generator()
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
    return Problem(gen, empty_guide, x, {"generator": gen, "critic": objective.critic}, 4)


def rbm_problem() -> tuple[BernoulliRBM, Problem]:
    """Contrastive divergence scores rows with its RBM's free energy; the guide is empty."""
    torch.manual_seed(0)
    rbm = BernoulliRBM(6, 4).double()
    with torch.no_grad():
        rbm.weight.normal_(0, 1.0)
        rbm.visible_bias.normal_(0, 0.5)
        rbm.hidden_bias.normal_(0, 0.5)
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((12, 6), 0.4, dtype=torch.float64), generator=gen)
    return rbm, Problem(rbm.model, empty_guide, x, {"energy": rbm}, 0)


def _cd(k: int) -> Callable[[bool], tuple[Objective, Problem]]:
    def case(v: bool) -> tuple[Objective, Problem]:
        rbm, problem = rbm_problem()
        return ContrastiveDivergence(rbm, k=k), problem  # no particles: v changes nothing

    return case


Case = Callable[[bool], tuple[Objective, Problem]]


class _GaussianEnergy(torch.nn.Module):
    """An unnormalized diagonal Gaussian for NCE, with its own log-normalizer or none."""

    def __init__(self, log_z: bool = True) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
        self.log_precision = torch.nn.Parameter(torch.tensor([0.1, -0.1]))
        self.log_Z = torch.nn.Parameter(torch.tensor(1.0)) if log_z else None

    def forward(self, x: torch.Tensor) -> None:
        pyro.module("energy", self)
        with pyro.plate("data", x.shape[0]):
            log_p = -0.5 * (self.log_precision.exp() * (x - self.loc) ** 2).sum(-1)
            pyro.factor("energy", log_p if self.log_Z is None else log_p - self.log_Z)


def _nce(learn_log_normalizer: bool) -> Case:
    def case(v: bool) -> tuple[Objective, Problem]:
        noise = dist.Normal(torch.zeros(2), 2.0).to_event(1)
        obj = NCE(noise, nu=2.0, learn_log_normalizer=learn_log_normalizer, vectorize_particles=v)
        model = _GaussianEnergy(log_z=not learn_log_normalizer)
        x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
        modules: dict[str, torch.nn.Module] = {"model": model}
        if obj.normalizer is not None:  # NCE's own log Z, registered by NCE as "nce$$$log_Z"
            modules["log_normalizer"] = obj.normalizer
        return obj, Problem(model, empty_guide, x, modules, len(list(model.parameters())))

    return case


class _ImplicitGuide(torch.nn.Module):
    """z = f(x, eps) at a marked Delta: a guide with no density, for AVB."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.net = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> None:
        pyro.module("implicit_guide", self)
        with pyro.plate("data", x.shape[0]):
            eps = torch.randn(x.shape[0], 2, device=x.device)
            implicit_sample("z", self.net(torch.cat([x, eps], -1)), event_dim=1)


class _PairCritic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.net = mlp([4, 8, 1], activation=torch.nn.Tanh)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, z], -1)).squeeze(-1)


def _avb(v: bool) -> tuple[Objective, Problem]:
    model = ConjugateGaussian(dim=2, prior_loc=0.3)
    guide, critic = _ImplicitGuide(), _PairCritic()
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
    modules = {"model": model, "guide": guide, "critic": critic}
    return AVB(critic), Problem(model, guide, x, modules, 3)  # no particles: v changes nothing


def _on_conjugate(make: Callable[[bool], Objective]) -> Case:
    return lambda v: (make(v), conjugate())


def _adv(make: Callable[[], Adversarial]) -> Case:
    def case(v: bool) -> tuple[Objective, Problem]:
        obj = make()
        return obj, adversarial(obj)

    return case


def _kale(v: bool) -> tuple[Objective, Problem]:
    obj = KALE(_critic(), init_batches=2)
    problem = adversarial(obj)
    problem.modules["log_normaliser"] = obj.log_normaliser  # A, KALE's second player
    return obj, problem  # no particles: v changes nothing


CASES: dict[str, Case] = {
    "RenyiBound(alpha=1)": _on_conjugate(lambda v: RenyiBound(1.0, 3, vectorize_particles=v)),
    "RenyiBound(alpha=0.5)": _on_conjugate(lambda v: RenyiBound(0.5, 3, vectorize_particles=v)),
    "RenyiBound(alpha=-1)": _on_conjugate(lambda v: RenyiBound(-1.0, 3, vectorize_particles=v)),
    "RenyiBound(alpha=0.5, dreg)": _on_conjugate(
        lambda v: RenyiBound(0.5, 3, gradient="dreg", vectorize_particles=v)
    ),
    "IWAE": _on_conjugate(lambda v: IWAE(3, vectorize_particles=v)),
    "IWAE(dreg)": _on_conjugate(lambda v: IWAE(3, gradient="dreg", vectorize_particles=v)),
    "VRMax": _on_conjugate(lambda v: VRMax(3, vectorize_particles=v)),
    "CUBO": _on_conjugate(lambda v: CUBO(2.0, 3, vectorize_particles=v)),
    "GAN": _adv(lambda: GAN(_critic())),
    "GAN(minimax, pack=2)": _adv(lambda: GAN(_critic(2), generator_loss="minimax", pack=2)),
    "HingeGAN": _adv(lambda: HingeGAN(_critic(output_bias=False))),
    "WGAN": _adv(lambda: WGAN(_critic(output_bias=False), clip=0.5)),
    "WGANGP": _adv(lambda: WGANGP(_critic(output_bias=False))),
    "NCE": _nce(learn_log_normalizer=False),
    "NCE(learn_log_normalizer)": _nce(learn_log_normalizer=True),
    "SelfContrastive": _on_conjugate(
        lambda v: SelfContrastive(nu=1.0, num_particles=3, vectorize_particles=v)
    ),
    "ContrastiveDivergence(k=1)": _cd(1),
    "ContrastiveDivergence(k=3)": _cd(3),
    "AVB": _avb,
    "KALE": _kale,
}


def _total(loss: Any) -> torch.Tensor:
    return loss if isinstance(loss, torch.Tensor) else torch.stack(list(loss)).sum()


def _value(loss: float | tuple[float, ...]) -> float:
    return float(loss) if isinstance(loss, float) else float(sum(loss))


def _exported_objectives() -> set[type]:
    return {
        obj
        for _, obj in inspect.getmembers(inference, inspect.isclass)
        if issubclass(obj, Objective)
        and obj is not Objective
        and not inspect.isabstract(obj)
        and obj is not Adversarial
    }


def test_every_objective_has_a_contract_case() -> None:
    covered = {type(make(True)[0]) for make in CASES.values()}
    missing = _exported_objectives() - covered
    assert not missing, f"add contract cases for {sorted(c.__name__ for c in missing)}"


@pytest.mark.parametrize("name", list(CASES))
def test_finite_scalar_and_gradients_reach_every_parameter(name: str) -> None:
    obj, (model, guide, x, modules, _) = CASES[name](True)
    out = obj.differentiable_loss(model, guide, x)
    parts = [out] if isinstance(out, torch.Tensor) else list(out)
    assert all(p.shape == () and torch.isfinite(p) for p in parts), out
    params = {f"{m}.{k}": v for m, module in modules.items() for k, v in module.named_parameters()}
    grads = torch.autograd.grad(_total(out), list(params.values()))
    for (pname, _), g in zip(params.items(), grads, strict=True):
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0, pname


@pytest.mark.parametrize("name", list(CASES))
def test_loss_equals_differentiable_loss(name: str) -> None:
    obj, (model, guide, x, _, _) = CASES[name](True)
    obj.loss(model, guide, x)  # the first call draws extra numbers to find the plate nesting
    pyro.set_rng_seed(7)
    value = obj.loss(model, guide, x)
    pyro.set_rng_seed(7)
    tensor = obj.differentiable_loss(model, guide, x)
    pyro.set_rng_seed(7)
    from_grads = obj.loss_and_grads(model, guide, x)
    if isinstance(tensor, torch.Tensor):
        assert isinstance(value, float)
        assert value == float(tensor.detach()) == from_grads
    else:  # named losses: a NamedTuple of floats, field by field
        assert type(value) is type(tensor) is type(from_grads)
        assert list(value) == [float(t.detach()) for t in tensor] == list(from_grads)


@pytest.mark.parametrize("name", list(CASES))
def test_vectorized_equals_sequential(name: str) -> None:
    """Same distribution of the loss, whichever way the particles are drawn."""
    reps = 300
    samples = {}
    for vectorize in [True, False]:
        obj, (model, guide, x, _, _) = CASES[name](vectorize)
        samples[vectorize] = torch.tensor([_value(obj.loss(model, guide, x)) for _ in range(reps)])
    a, b = samples[True], samples[False]
    se = math.sqrt(float(a.var() + b.var()) / reps)
    assert abs(float(a.mean() - b.mean())) < Z * se, (float(a.mean()), float(b.mean()), se)


@pytest.mark.parametrize("name", list(CASES))
def test_runs_through_svi(name: str) -> None:
    obj, (model, guide, x, modules, num_params) = CASES[name](True)
    # A player the objective holds (a critic) must register itself with pyro.module while
    # the loss runs, or SVI's optimiser never sees it.
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=obj)
    svi.step(x)  # registers the programs' parameters
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    losses = [_value(svi.step(x)) for _ in range(5)]
    after = dict(pyro.get_param_store().items())
    assert all(math.isfinite(v) for v in losses)
    extra = sum(len(list(m.parameters())) for m in modules.values() if m not in (model, guide))
    assert len(after) == num_params + extra
    for k, v in before.items():
        assert not torch.equal(v, after[k].detach()), f"SVI did not move {k}"


@pytest.mark.parametrize("name", list(CASES))
def test_runs_as_a_module(name: str) -> None:
    obj, (model, guide, x, modules, _) = CASES[name](True)
    module = obj(model, guide)
    assert isinstance(module, torch.nn.Module)
    params = list(module.parameters())
    assert len(params) == sum(len(list(m.parameters())) for m in modules.values())
    opt = torch.optim.Adam(params, lr=0.05)
    before = [p.detach().clone() for p in params]
    for _ in range(5):
        opt.zero_grad()
        loss = _total(module(x))
        loss.backward()
        opt.step()
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))
