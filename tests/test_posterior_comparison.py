"""Fits side by side on the correlated Gaussian, whose moments are exact: the exact guide's
errors are Monte Carlo noise, the mean-field (KL(q||p)) guide's sd error is its closed form
sqrt(0.19) - 1, and k-hat flags it; HMC draws from pyrogen's sampler enter the same table."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrogen.inference.mcmc import sample
from pyrogen.metrics import draw_guide
from pyrogen.metrics.posterior_comparison import compare_posteriors, plot_forest
from pyrogen.models.correlated_gaussian import CorrelatedGaussian

Z = 5.0
P = CorrelatedGaussian()
S = 4000


def exact_guide() -> None:
    pyro.sample("z", dist.MultivariateNormal(P.mean, P.cov))


def mean_field_guide() -> None:
    pyro.sample("z", dist.Normal(P.mean, P.kl_qp_variances().sqrt()).to_event(1))


def fits() -> dict[str, object]:
    pyro.set_rng_seed(0)
    hmc = sample(
        model=P.model,
        num_chains=8,
        num_warmup=200,
        num_samples=500,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    return {
        "exact": draw_guide(P.model, exact_guide, num_samples=S),
        "mean-field": draw_guide(P.model, mean_field_guide, num_samples=S),
        "HMC": hmc,
    }


def test_errors_against_exact_moments_and_khat() -> None:
    out = compare_posteriors(fits(), reference={"z": (P.mean, torch.diagonal(P.cov).sqrt())})
    by = {(r["fit"], r["parameter"]): r for r in out.rows}
    assert set(by) == {(f, f"z[{i}]") for f in ("exact", "mean-field", "HMC") for i in (0, 1)}
    for i in (0, 1):
        exact = by[("exact", f"z[{i}]")]
        assert abs(exact["mean_error"]) < Z / math.sqrt(S)  # sd of a mean of S draws, in sd
        assert abs(exact["sd_error"]) < Z / math.sqrt(2 * S)
        mf = by[("mean-field", f"z[{i}]")]
        assert mf["sd_error"] == pytest.approx(math.sqrt(0.19) - 1, abs=Z / math.sqrt(2 * S))
        assert abs(mf["mean_error"]) < Z * math.sqrt(0.19 / S)
        assert abs(by[("HMC", f"z[{i}]")]["mean_error"]) < 0.15  # 4000 correlated draws
    summary = {s["fit"]: s for s in out.summary}
    assert summary["exact"]["khat"] == -math.inf and summary["HMC"]["khat"] is None
    assert summary["mean-field"]["khat"] > 0.7  # closed-form tail shape 0.9 in 2-d
    ranked = sorted(summary, key=lambda f: summary[f]["max_abs_sd_error"])
    assert ranked[-1] == "mean-field"
    assert "| mean-field |" in out.markdown()


def test_a_fit_as_the_reference_and_the_forest_plot(tmp_path) -> None:  # type: ignore[no-untyped-def]
    all_fits = fits()
    out = compare_posteriors(all_fits, reference="HMC")
    hmc_rows = [r for r in out.rows if r["fit"] == "HMC"]
    assert all(r["mean_error"] == 0.0 and r["sd_error"] == pytest.approx(0.0) for r in hmc_rows)
    path = plot_forest(all_fits, tmp_path / "forest.png")
    assert path.stat().st_size > 10_000


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="no fits"):
        compare_posteriors({}, reference={"z": (0.0, 1.0)})
    with pytest.raises(KeyError, match="reference 'x'"):
        compare_posteriors({"a": {"z": torch.zeros(3)}}, reference="x")
    with pytest.raises(KeyError, match="missing from fit 'a'"):
        compare_posteriors({"a": {"z": torch.zeros(3)}}, reference={"w": (0.0, 1.0)})
    with pytest.raises(TypeError, match="a fit must be"):
        compare_posteriors({"a": [1, 2]}, reference={"w": (0.0, 1.0)})
