"""Mode coverage, MMD and the energy distance against what exact samples must give."""

import math
import statistics

import pytest
import torch

from pyrogen.data import grid, ring
from pyrogen.metrics import energy_distance, mmd, mode_coverage

Z = 5.0


def test_exact_samples_cover_every_mode_with_the_chi2_share() -> None:
    """Exact mixture samples are high quality with probability P(chi2_2 <= 9) = 1 - e^-4.5."""
    for data in (
        ring(20_000, generator=torch.Generator().manual_seed(0)),
        grid(20_000, generator=torch.Generator().manual_seed(1)),
    ):
        assert data.std is not None
        cov = mode_coverage(data.samples, data.centers, data.std)
        k = data.centers.shape[0]
        p = 1 - math.exp(-4.5)
        n = data.samples.shape[0]
        assert cov.modes == k
        assert abs(cov.high_quality - p) < Z * math.sqrt(p * (1 - p) / n)
        # multinomial counts over K equal modes: 2 KL ~ chi2_{K-1} / n_hq, mean (K-1)/(2 n_hq)
        n_hq = int(cov.counts.sum())
        assert cov.reverse_kl < (k - 1 + Z * math.sqrt(2 * (k - 1))) / (2 * n_hq)


def test_collapse_is_seen() -> None:
    data = grid(1000, generator=torch.Generator().manual_seed(0))
    assert data.std is not None
    one_mode = data.centers[7].expand(500, 2) + 0.01 * torch.randn(500, 2)
    cov = mode_coverage(one_mode, data.centers, data.std)
    assert cov.modes == 1 and cov.high_quality == 1.0
    assert cov.reverse_kl == pytest.approx(math.log(25))
    between = data.centers[:5] + 1.0  # all between modes
    cov = mode_coverage(between, data.centers, data.std)
    assert cov.modes == 0 and cov.high_quality == 0.0 and math.isinf(cov.reverse_kl)
    bad = torch.full((3, 2), float("nan"))
    assert mode_coverage(bad, data.centers, data.std).high_quality == 0.0


def test_mmd_is_unbiased_under_the_null_and_detects_a_shift() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(800, 2, generator=gen), torch.randn(800, 2, generator=gen)
    same = mmd(x, y)
    assert abs(same.value) < Z * same.stderr + 1e-4  # under the null the projection variance -> 0
    shifted = mmd(x, y + 0.5)
    assert shifted.value > Z * shifted.stderr
    # the median heuristic: the median distance of the pooled sample
    assert same.bandwidth == pytest.approx(
        float(torch.pdist(torch.cat([x, y]).double()).median()), rel=0.05
    )


def test_mmd_standard_error_matches_the_spread_over_replications() -> None:
    """Under an alternative, the U-statistic's first-order standard error is its spread."""
    gen = torch.Generator().manual_seed(1)
    values, ses = [], []
    for _ in range(60):
        x = torch.randn(200, 1, generator=gen)
        y = torch.randn(200, 1, generator=gen) * 1.5 + 0.5
        out = mmd(x, y, bandwidth=1.0)
        values.append(out.value)
        ses.append(out.stderr)
    sd = float(torch.tensor(values).std())
    mean_se = sum(ses) / len(ses)
    # the sd of 60 replications has relative error about 1/sqrt(2*59) ~ 9 %
    assert abs(sd / mean_se - 1) < Z / math.sqrt(2 * 59)


def test_bad_input() -> None:
    c = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="std"):
        mode_coverage(torch.zeros(4, 2), c, 0.0)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        mode_coverage(torch.zeros(4, 3), c, 1.0)
    with pytest.raises(ValueError, match="two samples"):
        mmd(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="dimension"):
        mmd(torch.randn(4, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="non-finite"):
        mmd(torch.full((4, 2), float("nan")), torch.randn(5, 2))


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_energy_distance_matches_its_closed_form_between_normals(shift: float) -> None:
    """X ~ N(0, 1), Y ~ N(d, 1): X - Y ~ N(-d, 2), so with the folded normal's mean
    E|N(m, s^2)| = s sqrt(2/pi) exp(-m^2/(2 s^2)) + m (1 - 2 Phi(-m/s)) the distance is
    2 E|X - Y| - 2 E|N(0, 2)| in closed form; the estimate is within Z standard errors of it,
    and over replications the standard error is the spread's."""

    def folded_mean(m: float, s: float) -> float:
        phi = 0.5 * (1 + math.erf(-m / (s * math.sqrt(2))))
        return s * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * s * s)) + m * (1 - 2 * phi)

    s2 = math.sqrt(2.0)
    exact = 2 * folded_mean(shift, s2) - 2 * folded_mean(0.0, s2)
    g = torch.Generator().manual_seed(7)
    values, ses = [], []
    for _ in range(40):
        x = torch.randn(400, 1, generator=g)
        y = torch.randn(300, 1, generator=g) + shift
        out = energy_distance(x, y)
        values.append(out.value)
        ses.append(out.stderr)
    v = torch.tensor(values)
    assert abs(float(v.mean()) - exact) < Z * float(v.std()) / math.sqrt(len(values))
    assert abs(values[0] - exact) < Z * ses[0]
    if shift > 0:  # the first-order standard error is the spread's, within 25 %
        assert 0.75 < statistics.mean(ses) / float(v.std()) < 1.25
    with pytest.raises(ValueError, match="dimension"):
        energy_distance(torch.randn(5, 2), torch.randn(5, 3))
