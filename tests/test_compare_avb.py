"""AVB in `pyrogen compare`: the names, a tiny digits run, resume, and the scoring of a guide
known only by its draws (a fitted Gaussian for importance sampling, active units) against
closed forms."""

import importlib
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from test_compare import _config as compare_config
from test_compare import _numbers, forbid_training, interrupt_after

from pyrogen.compare import CompareConfig, parse_objective, run
from pyrogen.compare.cli import list_text
from pyrogen.inference import AVB
from pyrogen.metrics import FittedGaussianGuide, active_units_from_draws, log_likelihood
from pyrogen.models import ConjugateGaussian
from pyrogen.models.avb_mnist import BasisNoiseEncoder, InnerProductCritic, NoiseEncoder
from pyrogen.models.vae import MLPEncoder

# the module, not the function `run` that pyrogen.compare exports under the same name
run_module = importlib.import_module("pyrogen.compare.run")

Z = 5.0  # standard errors allowed


def test_avb_names() -> None:
    critic = InnerProductCritic(3, x_dim=8, hidden=4, features=4)
    for name, key, label, ac in [
        ("avb", "avb", "AVB", False),
        ("AVB-AC", "avb_ac", "AVB + AC", True),
    ]:
        spec = parse_objective(name)
        assert (spec.key, spec.label, spec.implicit, spec.adaptive_contrast) == (
            key,
            label,
            True,
            ac,
        )
        objective = spec.make(critic)
        assert isinstance(objective, AVB) and objective.adaptive_contrast is ac
        assert objective.critic_steps == 1 and objective.critic is critic
    assert not parse_objective("elbo").implicit
    for bad in ["avb:3", "avb-ac:5", "avb:", "avb:0.5:5"]:
        with pytest.raises(ValueError, match="takes no"):
            parse_objective(bad)
    with pytest.raises(ValueError, match="unknown objective"):
        parse_objective("avbac")
    with pytest.raises(ValueError, match="repeat"):
        CompareConfig(objectives=["avb", "AVB"]).validate()
    listed = list_text()
    assert "  avb " in listed and "  avb-ac " in listed


def _config(tmp_path: Path, **kw: Any) -> CompareConfig:
    """test_compare's tiny digits configuration, with the AVB rows beside the ELBO's."""
    return compare_config(tmp_path, **{"objectives": ["elbo", "avb", "avb-ac"], "epochs": 2, **kw})


def test_tiny_digits_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows for both AVB objectives beside the ELBO's, each trained from the ELBO row's
    initial decoder (read when training starts), with an implicit encoder of its own; the
    finished rows read back from their checkpoints without training."""
    start: dict[str, Any] = {}
    real_fit = run_module._Fit.fit

    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        net = self.model.__self__  # the VAE whose model the trainer fits
        start[self.meta["objective"]] = (
            type(net.encoder),
            {k: v.clone() for k, v in net.decoder.state_dict().items()},
            [type(p.module) for p in self.objective.players.values()],
        )
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(run_module._Fit, "fit", fit)
    results = run(_config(tmp_path))
    monkeypatch.undo()
    assert [r["objective"] for r in results] == ["elbo", "avb", "avb_ac"]
    assert start["elbo"][0] is MLPEncoder and start["elbo"][2] == []
    assert start["avb"][0] is NoiseEncoder and start["avb_ac"][0] is BasisNoiseEncoder
    for key in ("avb", "avb_ac"):
        assert start[key][2] == [InnerProductCritic]
        decoder = start[key][1]
        assert decoder.keys() == start["elbo"][1].keys()
        for name, value in decoder.items():
            assert torch.equal(value, start["elbo"][1][name]), (key, name)
    for r in results[1:]:
        assert r["implicit"] and math.isfinite(r["test_ll_stderr"])
        assert math.isfinite(r["test_ll"]) and r["test_ll"] < 0
        assert 0 <= r["active_units"] <= 4
        assert len(r["history"]["heldout_ll"]) == 2 and r["seconds_per_epoch"] > 0
        assert all(math.isfinite(b) for b in r["history"]["train_bound"])
    table = (tmp_path / "results.md").read_text()
    assert "| ELBO |" in table and "| AVB |" in table and "| AVB + AC |" in table
    assert table.count("†") == 3  # two marked rows and the note
    assert "not a bound" in table and "fitted per image to 64 guide draws" in table

    forbid_training(monkeypatch)
    again = run(_config(tmp_path, resume=True))
    assert _numbers(again) == _numbers(results)


def test_interrupted_avb_resumes_to_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AVB iteration steps the critic and the model on two batches, so its passes end in
    mid-iteration; an interrupted run resumed ends as an uninterrupted one, the per-pass
    training estimate included."""
    config = dict(objectives=["avb"], epochs=3)
    straight = run(_config(tmp_path / "straight", **config))
    interrupt_after(monkeypatch, 15 + 8)  # in the second pass (15 batches of 100 per pass)
    with pytest.raises(KeyboardInterrupt):
        run(_config(tmp_path / "resumed", **config))
    monkeypatch.undo()
    saved = torch.load(tmp_path / "resumed" / "checkpoints" / "avb.pt", weights_only=True)
    assert (saved["epoch"], saved["iteration"]) == (1, 12)  # the iteration ending in batch 24
    resumed = run(_config(tmp_path / "resumed", resume=True, **config))
    assert _numbers(resumed) == _numbers(straight)


def _exact_posterior_draws(model: ConjugateGaussian) -> Any:
    """``draw(x, num)``: exact posterior draws, (num, n, D), known only by its draws."""

    def draw(x: torch.Tensor, num: int) -> torch.Tensor:
        loc, sd = model.posterior(x)
        return loc + sd * torch.randn(num, *x.shape)

    return draw


def test_fitted_gaussian_estimate_against_the_evidence() -> None:
    r"""A guide that draws from the exact posterior of a conjugate Gaussian, known only by its
    draws: the fitted Gaussian's importance-sampled log p(x) against the closed form.

    Each fit is unbiased per coordinate: the 64 draws' mean is within Z sd / sqrt(64) of the
    posterior mean, and their sd within Z / sqrt(2 * 63) of the posterior sd in relative
    terms (600 coordinates at Z = 5 standard errors: a chance of about 3e-4 that one
    exceeds it). The estimate: per point, the log of the mean of K weights with relative
    variance r_n is log p(x_n) + e_n - e_n^2 / 2 to second order, e_n of variance r_n / K,
    so the mean over N points is off by a Monte Carlo error of standard error
    ``mc_stderr`` = sqrt(sum r_n / K) / N (which the estimate reports) and a bias of
    -sum r_n / (2 K N) = -N mc_stderr^2 / 2; the tolerance is Z mc_stderr plus that bias.
    Chunks of 250 particles make four fits per point, each its own proposal: as the
    conditional mean of a weight is p(x) under every fit, their weights stay uncorrelated
    and mc_stderr keeps its meaning."""
    torch.manual_seed(0)
    model = ConjugateGaussian(dim=3, prior_loc=0.3, prior_scale=1.0, obs_scale=0.5)
    n = 200
    with torch.no_grad():
        z = 0.3 + torch.randn(n, 3)
        x = z + 0.5 * torch.randn(n, 3)
        exact = model.log_marginal(x)
        loc, sd = model.posterior(x)
    guide = FittedGaussianGuide(_exact_posterior_draws(model), num_draws=64)
    fit_loc, fit_scale = guide.fit(x)
    assert float(((fit_loc - loc) / (sd / 8)).abs().max()) < Z
    assert float((fit_scale / sd - 1).abs().max()) < Z / math.sqrt(2 * 63)
    ll = log_likelihood(model, guide, x, num_samples=1000, particle_chunk=250, max_plate_nesting=1)
    assert 0 < ll.mc_stderr < 0.01  # the proposal fits: the weights vary little
    tolerance = Z * ll.mc_stderr + n * ll.mc_stderr**2 / 2
    assert abs(ll.mean - float(exact.mean())) < tolerance, (ll.mean, float(exact.mean()))


def test_active_units_from_draws_take_off_the_draws_noise() -> None:
    r"""Three units with q(z_u | x) = N(m_u(x), 1): m_0 = x_0 (active), m_1 = 0 and
    m_2 = 0.08 x_1 (variance about 0.0064 < 0.01: inactive). The mean of S = 64 draws has
    variance Var_x(m_u) + 1/S over rows, 1/64 = 0.0156 above the threshold for the constant
    unit; with that noise taken off the estimate is unbiased for the rows' variance of m_u,
    with a standard error of about sqrt(4 Var(m_u) / (S (N - 1)) + 2 / (S^2 (N - 1))
    + 2 / ((S - 1) N S^2)) (the cross term, the noise's variance over rows, and the
    draws' variance estimate), 5e-4 for the inactive units at N = 2000."""
    torch.manual_seed(0)
    n, s = 2000, 64
    x = torch.randn(n, 2)
    means = torch.stack([x[:, 0], torch.zeros(n), 0.08 * x[:, 1]], -1)

    def draw(rows: torch.Tensor, num: int) -> torch.Tensor:
        m = torch.stack([rows[:, 0], torch.zeros(rows.shape[0]), 0.08 * rows[:, 1]], -1)
        return m + torch.randn(num, *m.shape)

    count, variances = active_units_from_draws(draw, x, num_draws=s, batch_size=300)
    truth = means.var(0)
    se = (4 * truth / (s * (n - 1)) + 2 / (s**2 * (n - 1)) + 2 / ((s - 1) * n * s**2)).sqrt()
    assert bool(((variances - truth).abs() < Z * se).all()), (variances, truth, se)
    assert count == 1
    # the noise that was taken off: without it the constant unit counts as active
    assert float(1 / s - Z * se[1]) > 0.01


def test_fitted_gaussian_guide_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="num_draws"):
        FittedGaussianGuide(lambda x, k: torch.zeros(k, x.shape[0], 2), num_draws=1)
    with pytest.raises(ValueError, match="min_scale"):
        FittedGaussianGuide(lambda x, k: torch.zeros(k, x.shape[0], 2), min_scale=0.0)
    flat = FittedGaussianGuide(lambda x, k: torch.zeros(k * x.shape[0], 2))
    with pytest.raises(ValueError, match=r"must return \(64, 5, d\)"):
        flat.fit(torch.zeros(5, 3))
    # a guide whose draws are all equal still has a density: the floor
    _, scale = FittedGaussianGuide(lambda x, k: torch.zeros(k, x.shape[0], 2)).fit(
        torch.zeros(5, 3)
    )
    assert bool((scale == 1e-3).all())
