"""Spearman's rank correlation against SciPy's and its defining properties."""

import math

import pytest
import torch
from scipy import stats

from pyrogen.metrics.correlation import average_ranks, spearman


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_scipy_with_and_without_ties(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(40, generator=gen, dtype=torch.float64)
    b = a + torch.randn(40, generator=gen, dtype=torch.float64)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    ta, tb = a.round(), (2 * b).round()  # many ties
    assert spearman(ta, tb) == pytest.approx(stats.spearmanr(ta, tb).statistic, abs=1e-12)
    assert spearman(ta.tolist(), tb.tolist()) == spearman(ta, tb)  # lists as tensors


def test_average_ranks_are_scipys_rankdata() -> None:
    x = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, -1.0, 1.0])
    assert average_ranks(x).tolist() == (stats.rankdata(x.numpy()) - 1).tolist()
    with pytest.raises(ValueError, match="1-d"):
        average_ranks(torch.zeros(2, 2))


def test_monotone_curves_and_invariance() -> None:
    x = torch.linspace(0.1, 3.0, 25, dtype=torch.float64)
    assert spearman(x, x.exp()) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(25, generator=gen, dtype=torch.float64)
    # ranks only: any increasing map of either curve leaves rho unchanged
    assert spearman(x.log(), y.exp()) == pytest.approx(spearman(x, y), abs=1e-12)
    assert spearman(y, x) == pytest.approx(spearman(x, y), abs=1e-12)


def test_undefined_cases_give_nan_and_bad_input_is_refused() -> None:
    assert math.isnan(spearman([1.0, 2.0, 3.0], [1.0, float("nan"), 2.0]))
    assert math.isnan(spearman([1.0, 2.0, 3.0], [1.0, float("inf"), 2.0]))
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # constant: undefined
    with pytest.raises(ValueError, match="pair up"):
        spearman([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1.0], [2.0])
