"""The kernel registry: one signature for every kernel, used by sample()."""

import ast
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from test_rbm import tiny_rbm
from test_sample import K, mcse

from pyrogen.inference.mcmc import KERNELS, GradientState, register_kernel, sample
from pyrogen.inference.mcmc.kernels import SETTINGS, get_kernel
from pyrogen.inference.mcmc.state import per_chain

MCMC_DIR = Path(__file__).resolve().parents[1] / "pyrogen" / "inference" / "mcmc"

SETTINGS_FOR = {
    "hmc": {"step_size": 0.3, "num_steps": 3, "inverse_mass": 1.0},
    "mala": {"step_size": 0.3, "inverse_mass": 1.0},
    "ula": {"step_size": 0.1, "inverse_mass": 1.0},
    "kinetic_langevin": {"step_size": 0.3, "inverse_mass": 1.0},
    "gibbs": {},
}


def standard_normal(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (z**2).sum(-1)


def target_of(name: str):
    if name == "gibbs":
        return tiny_rbm(), torch.zeros(6, 4, dtype=torch.float64)
    return standard_normal, torch.randn(6, 2, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(SETTINGS_FOR))
def test_every_kernel_steps_through_one_signature(name):
    """build(**settings) -> step; step(state, potential, generator) -> (state, info); draw
    statistics are one value per chain; the same generator seed gives the same transition."""
    kernel = KERNELS[name]
    potential, start = target_of(name)
    state = kernel.init(start, potential, torch.Generator().manual_seed(0))
    step = kernel.build_from({**SETTINGS_FOR[name], "step_size_jitter": 0.1})
    new, info = step(state, potential, torch.Generator().manual_seed(1))
    again, _ = step(state, potential, torch.Generator().manual_seed(1))
    assert new.position.shape == start.shape
    assert torch.equal(new.position, again.position)
    for stat, value in kernel.draw_stats(new, info).items():
        assert value.shape == (6,), stat
    assert set(kernel.settings) <= set(SETTINGS)


def test_only_a_hamiltonian_kernel_reports_energy():
    assert {n for n, k in KERNELS.items() if "energy" in _stats_of(n, k)} == {"hmc"}


def _stats_of(name, kernel):
    potential, start = target_of(name)
    state = kernel.init(start, potential, None)
    new, info = kernel.build_from(SETTINGS_FOR[name])(state, potential, None)
    return kernel.draw_stats(new, info)


class RandomWalkInfo(NamedTuple):
    acceptance_prob: torch.Tensor  # what step-size adaptation reads


def random_walk(step_size: torch.Tensor | float, inverse_mass: torch.Tensor | float = 1.0):
    """Random-walk Metropolis, written against the registry's signature only (the step size
    is a scalar or one per chain, as warm-up hands it)."""

    def step(state, potential, generator=None):
        z = state.position
        scale = torch.as_tensor(inverse_mass, dtype=z.dtype).sqrt()
        noise = torch.randn(z.shape, dtype=z.dtype, generator=generator)
        proposal = z + per_chain(step_size, z) * scale * noise
        u = potential(proposal)
        accept_prob = torch.exp(torch.clamp(state.potential_energy - u, max=0.0))
        accept = torch.rand(u.shape, dtype=z.dtype, generator=generator) < accept_prob
        new = GradientState(
            torch.where(accept[:, None], proposal, z),
            torch.where(accept, u, state.potential_energy),
            state.potential_grad,
        )
        return new, RandomWalkInfo(accept_prob)

    return step


@pytest.fixture
def registered_random_walk():
    register_kernel(
        "rwm",
        random_walk,
        draw_stats=lambda state, info: {"acceptance_rate": info.acceptance_prob},
        settings=("step_size", "inverse_mass"),
        target_accept=0.3,
    )
    yield KERNELS["rwm"]
    del KERNELS["rwm"]


def test_a_registered_kernel_runs_in_sample_with_warmup(registered_random_walk):
    """sample() tunes a new kernel's step size towards its own target and adapts its mass
    matrix: no branch on the kernel's name anywhere."""
    scales = torch.tensor([0.3, 3.0], dtype=torch.float64)
    result = sample(
        lambda z: 0.5 * ((z / scales) ** 2).sum(-1),
        torch.randn(32, 2, dtype=torch.float64),
        kernel="rwm",
        num_warmup=600,
        num_samples=600,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    accept = result.stats["acceptance_rate"]
    assert set(result.stats) == {"acceptance_rate"}
    # the dual-averaged step size gives the target rate: a mean over 32 x 600 draws
    assert abs(accept.mean().item() - 0.3) < 0.03
    assert result.inverse_mass is not None
    ratio = result.inverse_mass / scales**2
    assert ((ratio > 0.7) & (ratio < 1.4)).all()
    squares = (result.samples["z"] / scales).numpy() ** 2  # E = 1 per coordinate
    assert (abs(squares.mean((0, 1)) - 1) <= K * mcse(squares)).all()


def test_bad_registrations_are_refused():
    with pytest.raises(ValueError, match="unknown settings"):
        register_kernel("bad", random_walk, settings=("stepsize",))
    with pytest.raises(ValueError, match=r"target_accept must be in \(0, 1\)"):
        register_kernel("bad", random_walk, target_accept=1.0)
    with pytest.raises(ValueError, match="unknown kernel 'nuts'"):
        get_kernel("nuts")
    assert "bad" not in KERNELS


def _module_imports(path: Path) -> set[str]:
    """Modules a file imports at module level (not inside functions)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_gibbs_and_the_result_record_are_leaves():
    """gibbs.py knows no RBM; result.py imports nothing that imports it back."""
    gibbs_imports = _module_imports(MCMC_DIR / "gibbs.py")
    assert not any(name.startswith("pyrogen") for name in gibbs_imports)
    result_imports = {n for n in _module_imports(MCMC_DIR / "result.py") if "pyrogen" in n}
    assert result_imports == {"pyrogen.inference.mcmc.gibbs", "pyrogen.inference.mcmc.state"}
    arviz = _module_imports(MCMC_DIR.parents[1] / "metrics" / "arviz.py")
    assert "pyrogen.inference.mcmc.sample" not in arviz


@pytest.mark.parametrize(
    "module",
    ["pyrogen.metrics.arviz", "pyrogen.inference.mcmc.sample", "pyrogen.inference.mcmc.result"],
)
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    code = f"import {module}; from pyrogen.inference.mcmc.sample import MCMCResult"
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True)
