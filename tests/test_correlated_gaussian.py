"""The correlated Gaussian posterior problem: closed forms against each other, and SVI fits
of a mean-field guide under the ELBO and the Rényi bound against them."""

import math

import pyro
import pytest
import torch

from pyrogen.inference import RenyiBound
from pyrogen.inference.fit import fit_guide
from pyrogen.models.correlated_gaussian import (
    CorrelatedGaussian,
    FullRankGuide,
    MeanFieldGuide,
)

Z = 5.0
P = CorrelatedGaussian()


def test_the_lectures_closed_forms() -> None:
    torch.testing.assert_close(P.kl_qp_variances(), torch.tensor([0.19, 0.19]))
    torch.testing.assert_close(P.kl_pq_variances(), torch.tensor([1.0, 1.0]))
    # the ELBO is -KL(q || p): zero at the exact posterior's diagonal only when rho = 0
    assert float(P.renyi_bound(1.0, P.kl_qp_variances())) == pytest.approx(0.5 * math.log(0.19))


@pytest.mark.parametrize("alpha", [0.9, 0.75, 0.5, 0.25, 0.1])
def test_renyi_optimum_matches_the_2d_closed_form(alpha: float) -> None:
    numeric = P.renyi_variances(alpha)
    exact = P.renyi_variance_2d(alpha)
    torch.testing.assert_close(numeric, torch.full((2,), exact), rtol=1e-5, atol=0)
    assert 0.19 < exact < 1.0  # between the two KL optima
    # a maximum: the bound is lower on both sides
    for factor in (0.98, 1.02):
        assert P.renyi_bound(alpha, numeric * factor) < P.renyi_bound(alpha, numeric)
    assert P.renyi_variance_2d(0.5) == pytest.approx(math.sqrt(0.19))  # 1 / sqrt(l1 l2)


def test_renyi_bound_tends_to_the_elbo() -> None:
    v = torch.tensor([0.3, 0.5])
    assert float(P.renyi_bound(1 - 1e-6, v)) == pytest.approx(
        float(P.renyi_bound(1.0, v)), abs=1e-4
    )


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_svi_fits_reach_the_closed_form(alpha: float) -> None:
    """Means (0, 1) and variances 0.19 (ELBO) or sqrt(0.19) (alpha = 0.5), within Z
    batch-means standard errors of the iterates plus 1 % for the K = 1000 bound's bias."""
    pyro.clear_param_store()
    objective = RenyiBound(alpha, 1000, max_plate_nesting=0)
    mean, se, *_ = fit_guide(P.model, MeanFieldGuide(2), objective, num_steps=3000, lr=0.02)
    truth = torch.cat([P.mean, torch.full((2,), P.renyi_variance_2d(alpha))])
    tol = Z * se + 0.01 * truth.abs()
    assert ((mean - truth).abs() < tol).all(), (mean, truth, se)


@pytest.mark.slow
def test_a_full_rank_guide_is_exact_under_the_elbo() -> None:
    pyro.clear_param_store()
    objective = RenyiBound(1.0, 100, max_plate_nesting=0)
    mean, se, *_ = fit_guide(P.model, FullRankGuide(2), objective, num_steps=3000, lr=0.02)
    truth = torch.cat([P.mean, torch.diagonal(P.cov)])
    assert ((mean - truth).abs() < Z * se + 0.01 * truth.abs()).all(), (mean, se)
