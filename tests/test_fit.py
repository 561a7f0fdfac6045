"""fit_guide: a Pyro autoguide (parameters created on its first call) fitted under the ELBO
reaches the mean-field closed form, and is left at its averaged parameters."""

import pyro
import torch
from pyro.infer.autoguide import AutoNormal

from pyrogen.inference import RenyiBound
from pyrogen.inference.fit import fit_guide
from pyrogen.models.correlated_gaussian import CorrelatedGaussian


def test_an_autoguide_reaches_the_mean_field_closed_form() -> None:
    target = CorrelatedGaussian()
    pyro.clear_param_store()
    guide = AutoNormal(target.model)
    fit = fit_guide(target.model, guide, RenyiBound(1.0, 100), num_steps=1500, lr=0.02)
    assert fit.gradient_evaluations == 150_000
    # the summary is the flat parameter vector: locs, then unconstrained (softplus) scales
    with torch.no_grad():
        loc, scale = guide.locs.z, guide.scales.z
    torch.testing.assert_close(loc, target.mean, atol=0.02, rtol=0)
    torch.testing.assert_close(scale**2, target.kl_qp_variances(), atol=0.01, rtol=0)
    # left at the iterates' average (Polyak): the final parameters are the averaged summary
    now = torch.cat([p.detach().reshape(-1) for p in guide.parameters()])
    torch.testing.assert_close(now, fit.average, atol=1e-5, rtol=0)
