"""Kinetic Langevin (BAOAB) samples a Gaussian's position marginal exactly: moments of many
independent chains against the closed form, alone and through sample()."""

import math

import pytest
import torch

from pyrogen.inference.mcmc import kinetic, sample

Z = 5.0
LOC = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
SCALE = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)


def gaussian(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (((z - LOC) / SCALE) ** 2).sum(-1)


def _check_moments(x: torch.Tensor) -> None:
    """Independent draws: the mean within Z s.e. (sd / sqrt n), the variance within Z s.e.
    (var sqrt(2 / n)) of the closed form, per coordinate."""
    n = x.shape[0]
    mean_err = (x.mean(0) - LOC).abs() / (SCALE / math.sqrt(n))
    var_err = (x.var(0) - SCALE**2).abs() / (SCALE**2 * math.sqrt(2 / n))
    assert bool((mean_err < Z).all()), mean_err
    assert bool((var_err < Z).all()), var_err


@pytest.mark.parametrize("inverse_mass", [1.0, "scaled"])
def test_baoab_is_exact_for_a_gaussian(inverse_mass: object) -> None:
    """A step of 0.8 (large for the narrowest coordinate, sd 0.5): BAOAB's positions are
    still exactly N(LOC, SCALE^2) at stationarity, where ULA's would be off by O(h)."""
    g = torch.Generator().manual_seed(0)
    inv = SCALE**2 if inverse_mass == "scaled" else 1.0
    state = kinetic.init(torch.zeros(4000, 3, dtype=torch.float64), gaussian, g)
    step = kinetic.build(step_size=0.4, inverse_mass=inv, friction=1.0)
    for _ in range(400):
        state, info = step(state, gaussian, g)
    assert bool(info.is_accepted.all())
    _check_moments(state.position)


def test_through_sample_with_a_given_step_size() -> None:
    result = sample(
        gaussian,
        torch.zeros(2000, 3, dtype=torch.float64),
        kernel="kinetic_langevin",
        step_size=0.4,
        adapt_step_size=False,
        adapt_mass_matrix=False,
        num_warmup=300,
        num_samples=1,
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    _check_moments(result.samples["z"][:, -1])


def test_bad_input() -> None:
    state = kinetic.init(torch.zeros(4, 3, dtype=torch.float64), gaussian)
    with pytest.raises(ValueError, match="friction"):
        kinetic.step(state, gaussian, 0.1, friction=0.0)
    with pytest.raises(ValueError, match="step_size"):
        kinetic.step(state, gaussian, -0.1)
