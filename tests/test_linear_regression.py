"""Bishop's variational linear regression: the closed-form bound against a Monte Carlo ELBO,
the CAVI fixed point against its defining equations, and SVI against CAVI."""

import math

import pyro
import pytest
import torch

from pyrogen.inference import RenyiBound
from pyrogen.inference.fit import fit_guide
from pyrogen.metrics import draw_guide
from pyrogen.models.linear_regression import BayesianLinearRegression, FactorisedGuide

Z = 5.0
M = 5


def problem(a0: float = 1e-2, b0: float = 1e-2) -> BayesianLinearRegression:
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(40, M, generator=g)
    t = phi @ torch.randn(M, generator=g) + 0.5 * torch.randn(40, generator=g)
    return BayesianLinearRegression(phi, t, beta=4.0, a0=a0, b0=b0)


def set_guide(
    guide: FactorisedGuide, mean: torch.Tensor, cov: torch.Tensor, a: float, b: float
) -> None:
    tril = torch.linalg.cholesky(cov).float()
    with torch.no_grad():
        guide.loc.copy_(mean)
        guide.raw_tril.copy_(tril.tril(-1) + torch.diag_embed(tril.diagonal().log()))
        guide.log_a.fill_(math.log(a))
        guide.log_b.fill_(math.log(b))


def test_closed_form_bound_is_the_monte_carlo_elbo() -> None:
    """At the CAVI point and at a point off it: the mean of 20,000 ELBO particles (Pyro's
    model and guide) within Z standard errors of the closed form."""
    p = problem()
    cavi = p.cavi()
    for shift in (0.0, 0.3):
        mean, cov = cavi.mean + shift, cavi.cov * (1 + shift)
        a, b = cavi.a * (1 + shift), cavi.b
        guide = FactorisedGuide(M)
        set_guide(guide, mean, cov, a, b)
        pyro.set_rng_seed(0)
        log_w = draw_guide(p.model, guide, num_samples=20000).log_weight.double()
        est, se = float(log_w.mean()), float(log_w.std()) / math.sqrt(20000)
        closed = float(p.elbo(mean, cov, a, b))
        assert abs(est - closed) < Z * se, (shift, est, closed, se)


def test_cavi_fixed_point_and_the_improper_limit() -> None:
    p = problem()
    cavi = p.cavi()
    e_alpha = cavi.a / cavi.b
    phi, t = p.phi.double(), p.t.double()
    expected_cov = torch.linalg.inv(e_alpha * torch.eye(M, dtype=torch.float64) + 4.0 * phi.T @ phi)
    torch.testing.assert_close(cavi.cov, expected_cov)
    torch.testing.assert_close(cavi.mean, 4.0 * expected_cov @ phi.T @ t)
    assert cavi.a == pytest.approx(1e-2 + M / 2)
    # a local maximum of the closed-form bound in every coordinate block
    for bump in [(0.01, 1, 1, 1), (0, 1.02, 1, 1), (0, 1, 1.02, 1), (0, 1, 1, 1.02)]:
        moved = p.elbo(cavi.mean + bump[0], cavi.cov * bump[1], cavi.a * bump[2], cavi.b * bump[3])
        assert float(moved) < cavi.elbo
    improper = problem(0.0, 0.0).cavi()
    e_wtw = float(improper.mean @ improper.mean + torch.trace(improper.cov))
    assert improper.a / improper.b == pytest.approx(M / e_wtw, rel=1e-10)  # PRML 10.104


@pytest.mark.slow
def test_svi_reaches_the_cavi_fixed_point_and_bound() -> None:
    """6000 Adam steps (lr 0.05) at K = 100: m, diag S, a and b within Z batch-means
    standard errors plus 2 % of the CAVI values (the optimiser's leftover bias, measured
    about 1 %), and the closed-form bound at the fitted guide below CAVI's by under 0.05
    nats (CAVI's is the family's maximum)."""
    p = problem()
    cavi = p.cavi()
    pyro.clear_param_store()
    guide = FactorisedGuide(M)
    objective = RenyiBound(1.0, 100, max_plate_nesting=1)
    fit = fit_guide(p.model, guide, objective, num_steps=6000, lr=0.05)
    truth = torch.cat(
        [cavi.mean, torch.diagonal(cavi.cov), torch.tensor([cavi.a, cavi.b], dtype=torch.float64)]
    ).float()
    tol = Z * fit.stderr + 0.02 * truth.abs()
    assert ((fit.average - truth).abs() < tol).all(), (fit.average, truth, fit.stderr)
    with torch.no_grad():
        tril = guide.scale_tril()
        fitted = float(
            p.elbo(guide.loc, tril @ tril.T, float(guide.log_a.exp()), float(guide.log_b.exp()))
        )
    assert 0.0 <= cavi.elbo - fitted < 0.05, (cavi.elbo, fitted)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"phi must be \(N, M\)"):
        BayesianLinearRegression(torch.zeros(5), torch.zeros(5), beta=1.0)
    with pytest.raises(ValueError, match="beta > 0"):
        BayesianLinearRegression(torch.zeros(5, 2), torch.zeros(5), beta=0.0)
    with pytest.raises(ValueError, match="proper Gamma prior"):
        problem(0.0, 0.0).model()
