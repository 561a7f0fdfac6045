"""The posterior harness: every family runs end to end on a tiny problem and gives its row;
the exact-moment and HMC references; a user's own model; the command."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from pyrogen.cli import main as cli
from pyrogen.compare.posterior import (
    FAMILIES,
    POSTERIOR_PROBLEMS,
    PosteriorBudget,
    PosteriorProblem,
    gaussian_kl_to_exact,
    parse_family,
    run_posterior,
)

TINY = PosteriorBudget(
    steps=90,
    lr=0.05,
    particles=4,
    hmc_chains=2,
    hmc_warmup=30,
    hmc_draws=30,
    reference_chains=4,
    reference_warmup=50,
    reference_draws=100,
    khat_draws=300,
    avb_draws=16,
    avb_critic_steps=2,
)
ALL = ["mean-field", "full-rank", "renyi:0.5", "iwae", "avb", "hmc"]


def test_every_family_gives_its_row_on_an_exact_problem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert {parse_family(f)[0] for f in ALL} == {n.split(":")[0] for n in FAMILIES}
    result = run_posterior(POSTERIOR_PROBLEMS["correlated-gaussian"](), ALL, TINY, tmp_path)
    assert result.reference == "exact posterior moments"
    assert [s["fit"] for s in result.summary] == ALL
    for s in result.summary:
        assert math.isfinite(s["max_abs_mean_error"]) and math.isfinite(s["max_abs_sd_error"])
        assert s["gradient_evaluations"] > 0 and s["seconds"] > 0
        assert (s["khat"] is None) == (s["fit"] in ("hmc", "avb"))  # AVB's guide has no density
        assert (s.get("r_hat") is not None) == (s["fit"] == "hmc")
        assert (s.get("ess_per_second", 0) or 0) >= 0
    guides = [s for s in result.summary if s["fit"] not in ("hmc", "avb")]
    assert all(s["gradient_evaluations"] == 90 * 4 for s in guides)  # one budget for all
    (avb,) = [s for s in result.summary if s["fit"] == "avb"]
    assert avb["gradient_evaluations"] == 90 * 16  # as many steps, 16 draws each
    assert {f.name for f in result.files} == {
        "results.md",
        "results.csv",
        "results.json",
        "forest.png",
    }
    assert json.loads((tmp_path / "results.json").read_text())["budget"]["steps"] == 90


def test_a_users_model_against_a_reference_hmc_run() -> None:
    """The README's example, smaller: a model of the user's, no exact answer."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, generator=gen)
    y = x @ torch.tensor([1.0, -0.5]) + 0.3 * torch.randn(50, generator=gen)

    def model(x: torch.Tensor, y: torch.Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal((x * w).sum(-1), sigma), obs=y)

    problem = PosteriorProblem("mine", model, (x, y), sites=["w", "sigma"])
    result = run_posterior(problem, ["full-rank", "hmc"], TINY, progress=False)
    assert result.reference.startswith("pyrogen HMC, 4 chains x 100")
    assert {r["parameter"] for r in result.rows} == {"w[0]", "w[1]", "sigma"}
    assert "| full-rank |" in result.markdown()


def test_bad_families() -> None:
    with pytest.raises(ValueError, match="unknown family 'nuts'"):
        parse_family("nuts")
    with pytest.raises(ValueError, match="renyi:ALPHA"):
        parse_family("renyi:half")
    with pytest.raises(ValueError, match="no families"):
        run_posterior(POSTERIOR_PROBLEMS["correlated-gaussian"](), [], TINY)


def test_the_command(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli(["compare", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ["digits-vae", "mnist-vae", *POSTERIOR_PROBLEMS, *FAMILIES]:
        assert name in listed
    code = cli(
        [
            "compare",
            "--problem",
            "correlated-gaussian",
            "--families",
            "mean-field",
            "hmc",
            "--steps",
            "60",
            "--particles",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0 and (tmp_path / "results.md").exists()
    assert cli(["compare", "--problem", "logistic", "--families", "nuts"]) == 2
    assert "unknown family 'nuts'" in capsys.readouterr().err


def test_bishops_linear_regression_is_a_harness_problem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PRML 10.3 against a (tiny) reference HMC run: both sites compared, alpha positive."""
    problem = POSTERIOR_PROBLEMS["linear-regression"]()
    result = run_posterior(problem, ["mean-field"], TINY, tmp_path, progress=False)
    assert result.reference.startswith("pyrogen HMC")
    (row,) = result.summary
    assert math.isfinite(row["max_abs_mean_error"]) and row["gradient_evaluations"] == 90 * 4
    sites = {r["parameter"] for r in result.rows}
    assert {"alpha", "w"} <= {s.split("[")[0] for s in sites}


def test_a_budget_in_gradient_evaluations_sets_every_guides_steps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """1,000 evaluations: 250 steps of K = 4 for the Gaussian guides, 62 of 16 draws for AVB
    (the remainder unspent); HMC keeps its draws and shows its count; the table says so."""
    budget = PosteriorBudget(**{**vars(TINY), "gradient_evaluations": 1000})
    assert budget.guide_steps(4) == 250 and budget.guide_steps(16) == 62
    result = run_posterior(
        POSTERIOR_PROBLEMS["correlated-gaussian"](),
        ["mean-field", "avb", "hmc"],
        budget,
        tmp_path,
        progress=False,
    )
    evals = {s["fit"]: s["gradient_evaluations"] for s in result.summary}
    assert evals["mean-field"] == 1000 and evals["avb"] == 62 * 16 and evals["hmc"] > 0
    text = (tmp_path / "results.md").read_text()
    assert "1,000 gradient evaluations per guide: guides 250 Adam steps" in text
    assert "AVB 62 steps of 16 draws" in text
    with pytest.raises(ValueError, match="less than one step of 16 draws"):
        PosteriorBudget(gradient_evaluations=10, avb_draws=16).guide_steps(16)


class _ExactFamilyGuide(PyroModule):
    """A user's guide: a full-rank Gaussian on the correlated Gaussian's z."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = PyroParam(torch.zeros(2))
        self.tril = PyroParam(torch.eye(2), constraint=constraints.lower_cholesky)

    def forward(self) -> None:
        pyro.sample("z", dist.MultivariateNormal(self.loc, scale_tril=self.tril))


def test_a_users_own_guide_is_fitted_at_the_same_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A PyroModule guide of the user's beside a family: fitted under the ELBO with the
    families' steps and particles, scored with k-hat. Its family contains the exact
    posterior, so it recovers the exact moments: within 0.1 sd, 6 standard errors of the
    4,000 scored draws (1/sqrt(4000) = 0.016 sd), where the mean-field guide's sd is
    0.44 of the truth (1/Lambda_ii = 0.19)."""
    budget = PosteriorBudget(**{**vars(TINY), "steps": 2000, "khat_draws": 4000})
    result = run_posterior(
        POSTERIOR_PROBLEMS["correlated-gaussian"](),
        ["mean-field"],
        budget,
        tmp_path,
        progress=False,
        guides={"mine": _ExactFamilyGuide()},
    )
    by = {s["fit"]: s for s in result.summary}
    assert by["mine"]["gradient_evaluations"] == 2000 * 4 and by["mine"]["khat"] is not None
    assert by["mine"]["max_abs_mean_error"] < 0.1 and by["mine"]["max_abs_sd_error"] < 0.1
    assert by["mean-field"]["max_abs_sd_error"] > 0.5
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        run_posterior(POSTERIOR_PROBLEMS["correlated-gaussian"](), [], TINY, guides={"mine": print})
    with pytest.raises(ValueError, match="is a family's name"):
        run_posterior(
            POSTERIOR_PROBLEMS["correlated-gaussian"](),
            [],
            TINY,
            guides={"hmc": _ExactFamilyGuide()},
        )


def test_gaussian_kl_to_exact_is_the_closed_form() -> None:
    """The KL of the draws' Gaussian: against torch's closed form for exactly known
    moments (the draws built to have them), and an error for a size mismatch."""
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(5000, 2, generator=gen, dtype=torch.float64)
    eps = (eps - eps.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(eps.T))).T
    m, s_chol = torch.tensor([0.3, 0.5]), torch.tensor([[0.8, 0.0], [0.2, 0.4]])
    x = eps @ s_chol.double().T + m.double()  # mean m and covariance L L^T exactly
    target = torch.distributions.MultivariateNormal(
        torch.tensor([0.0, 1.0]), torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    )
    q = torch.distributions.MultivariateNormal(m, scale_tril=s_chol)
    expected = float(torch.distributions.kl_divergence(q, target))
    got = gaussian_kl_to_exact({"z": x.numpy()}, ["z"], target.loc, target.covariance_matrix)
    assert got == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="over 3 values"):
        gaussian_kl_to_exact({"z": x.numpy()}, ["z"], torch.zeros(3), torch.eye(3))


def test_kl_to_exact_on_the_correlated_gaussian(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The mean-field guide's KL(q || p) at the ELBO's optimum is -1/2 log(1 - rho^2) =
    0.830 nats for rho = 0.9 (variances 1/Lambda_ii = 0.19); the full-rank guide's and
    exact HMC's are 0. From 4,000 draws the moments' error moves the estimate by about
    sqrt(2 d / S) / 2 = 0.016 and its bias is d(d + 1)/(4 S) = 0.0004: within 0.08 (5 of
    those) of the closed forms, the fits' own error included."""
    budget = PosteriorBudget(**{**vars(TINY), "steps": 2000, "khat_draws": 4000})
    budget.hmc_chains, budget.hmc_warmup, budget.hmc_draws = 8, 300, 500
    result = run_posterior(
        POSTERIOR_PROBLEMS["correlated-gaussian"](),
        ["mean-field", "full-rank", "hmc"],
        budget,
        tmp_path,
        progress=False,
    )
    kl = {s["fit"]: s["kl_to_exact"] for s in result.summary}
    assert kl["mean-field"] == pytest.approx(-0.5 * math.log(1 - 0.81), abs=0.08)
    assert abs(kl["full-rank"]) < 0.08 and abs(kl["hmc"]) < 0.08
    assert "KL to exact" in (tmp_path / "results.md").read_text()


def test_finished_fits_are_read_back_not_fitted_again(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A second run with the same problem and budget reads every fit (the reference HMC
    included) from out/fits and writes the same tables; another budget fits again."""
    import pyrogen.compare.posterior as posterior

    problem = posterior.POSTERIOR_PROBLEMS["linear-regression"]()
    first = run_posterior(problem, ["mean-field", "hmc"], TINY, tmp_path, progress=False)

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("fitted again")

    monkeypatch.setattr(posterior, "_fit_family", refuse)
    monkeypatch.setattr(posterior, "_hmc", refuse)
    again = run_posterior(problem, ["mean-field", "hmc"], TINY, tmp_path, progress=False)
    assert again.summary == first.summary and again.rows == first.rows
    assert again.reference == first.reference
    other = PosteriorBudget(**{**vars(TINY), "steps": 91})
    with pytest.raises(AssertionError, match="fitted again"):
        run_posterior(problem, ["mean-field"], other, tmp_path, progress=False)
