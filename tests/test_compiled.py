"""Recorded potentials: bit-exact replays, fused ones within rounding, and the fallbacks."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrogen.inference.mcmc import sample
from pyrogen.inference.mcmc.compiled import MAX_RECORDS, CompiledPotential
from pyrogen.inference.mcmc.potential import ModelPotential
from pyrogen.inference.mcmc.state import eager_potential_and_grad, potential_and_grad
from pyrogen.warnings import PyrogenWarning
from tests.test_sample import check_moments


def regression(x, y):
    """A Pyro model through transforms (HalfNormal scale) that broadcasts over chains."""
    coef = pyro.sample("coef", dist.Normal(torch.zeros(3, dtype=x.dtype), 1.0).to_event(1))
    scale = pyro.sample("scale", dist.HalfNormal(torch.tensor(1.0, dtype=x.dtype)))
    with pyro.plate("data", x.shape[-2]):
        pyro.sample("y", dist.Normal((x * coef).sum(-1), scale), obs=y)


def matmul_regression(x, y):
    """The same model written with ``x @ coef``, which runs on the vmap path."""
    coef = pyro.sample("coef", dist.Normal(torch.zeros(3, dtype=x.dtype), 1.0).to_event(1))
    scale = pyro.sample("scale", dist.HalfNormal(torch.tensor(1.0, dtype=x.dtype)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ coef, scale), obs=y)


def data(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g, dtype=dtype)
    y = x @ torch.tensor([1.0, -0.5, 0.2], dtype=dtype) + 0.3 * torch.randn(40, generator=g)
    return x, y.to(dtype)


@pytest.mark.parametrize("model", [regression, matmul_regression], ids=["plate", "vmap"])
def test_trace_replays_a_pyro_model_bit_for_bit_at_new_positions(model):
    potential = ModelPotential(model, data())
    compiled = CompiledPotential(potential, "trace")
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        z = torch.randn(6, potential.dim, generator=g)
        u, grad = compiled.value_and_grad(z)
        ref_u, ref_grad = eager_potential_and_grad(potential, z)
        assert torch.equal(u, ref_u) and torch.equal(grad, ref_grad)
    assert compiled.fallback is None and len(compiled._recorder.records) == 1
    assert potential.batching == ("plate" if model is regression else "vmap")


def test_trace_sampling_equals_eager_sampling_draw_for_draw():
    runs = []
    for mode in ("none", "trace"):
        gen = torch.Generator().manual_seed(3)
        result = sample(
            model=regression,
            model_args=data(),
            num_chains=4,
            num_warmup=60,
            num_samples=40,
            generator=gen,
            progress=False,
            compile_potential=mode,
        )
        runs.append(result)
    for name in ("coef", "scale"):
        assert torch.equal(runs[0].samples[name], runs[1].samples[name])
    assert torch.equal(runs[0].stats["energy"], runs[1].stats["energy"])


def test_inductor_values_within_rounding_and_moments_of_a_gaussian(gaussian):
    compiled = CompiledPotential(gaussian.potential, "inductor")
    g = torch.Generator().manual_seed(0)
    first = torch.randn(16, gaussian.dim, generator=g, dtype=torch.float64)
    compiled.value_and_grad(first)  # records and compiles
    z = 3 * torch.randn(16, gaussian.dim, generator=g, dtype=torch.float64)
    u, grad = compiled.value_and_grad(z)
    ref_u, ref_grad = eager_potential_and_grad(gaussian.potential, z)
    # float64 sums of five products in another order: a few ulps of the largest term
    eps = torch.finfo(torch.float64).eps
    assert (u - ref_u).abs().max() <= 100 * eps * ref_u.abs().max()
    assert (grad - ref_grad).abs().max() <= 100 * eps * ref_grad.abs().max()
    assert compiled.fallback is None

    start = torch.rand(16, gaussian.dim, dtype=torch.float64) * 4 - 2
    result = sample(
        gaussian.potential,
        start,
        num_warmup=500,
        num_samples=500,
        progress=False,
        compile_potential="inductor",
    )
    check_moments(result.samples["z"].numpy(), gaussian.mean.numpy(), gaussian.cov.numpy())


def test_control_flow_on_the_position_falls_back_to_eager_with_a_warning():
    def potential(z):
        if float(z.abs().max()) > 100.0:  # Python reads a value of the position
            return (z**4).sum(-1)
        return 0.5 * (z**2).sum(-1)

    compiled = CompiledPotential(potential, "trace")
    z = torch.ones(3, 2)
    with pytest.warns(PyrogenWarning, match="recording failed"):
        u, grad = compiled.value_and_grad(z)
    assert compiled.fallback is not None and not compiled._recorder.records
    far = torch.full((3, 2), 200.0)  # the other branch is taken, as eagerly
    u, grad = compiled.value_and_grad(far)
    ref_u, ref_grad = eager_potential_and_grad(potential, far)
    assert torch.equal(u, ref_u) and torch.equal(grad, ref_grad)


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    compiled = CompiledPotential(lambda z: 0.5 * (z**2).sum(-1), "inductor")
    with pytest.warns(PyrogenWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
        u, _ = compiled.value_and_grad(torch.ones(2, 3))
    assert torch.equal(u, torch.full((2,), 1.5)) and compiled.fallback is not None


def test_a_record_per_shape_up_to_the_limit_and_eager_beyond():
    compiled = CompiledPotential(lambda z: (z**3).sum(-1), "trace")
    for n in range(1, MAX_RECORDS + 3):
        z = torch.linspace(-1, 1, 2 * n).reshape(n, 2)
        u, grad = compiled.value_and_grad(z)
        assert torch.equal(grad, 3 * z**2) and torch.equal(u, (z**3).sum(-1))
    assert len(compiled._recorder.records) == MAX_RECORDS and compiled.fallback is None


def test_in_place_updates_of_captured_tensors_are_seen_by_the_replay():
    center = torch.zeros(3)
    compiled = CompiledPotential(lambda z: 0.5 * ((z - center) ** 2).sum(-1), "trace")
    z = torch.ones(2, 3)
    compiled.value_and_grad(z)
    center.add_(1.0)
    u, grad = potential_and_grad(compiled, z)
    assert torch.equal(u, torch.zeros(2)) and torch.equal(grad, torch.zeros(2, 3))


def test_bad_compile_settings_are_refused(gaussian):
    start = torch.zeros(4, gaussian.dim, dtype=torch.float64)
    with pytest.raises(ValueError, match="compile_potential must be one of"):
        sample(gaussian.potential, start, progress=False, compile_potential="jit")
    with pytest.raises(ValueError, match="needs no CompiledPotential"):
        CompiledPotential(gaussian.potential, "none")
    with pytest.raises(TypeError, match="must be callable"):
        CompiledPotential(np.zeros(3), "trace")  # type: ignore[arg-type]


def test_gibbs_refuses_a_compiled_potential():
    from pyrogen.models.rbm import BernoulliRBM

    rbm = BernoulliRBM(6, 4)
    with pytest.raises(ValueError, match="gradient kernels, not to 'gibbs'"):
        sample(
            rbm,
            torch.zeros(3, 6),
            kernel="gibbs",
            num_warmup=0,
            num_samples=2,
            progress=False,
            compile_potential="trace",
        )
