r"""Posterior comparisons: any Pyro model's posterior fitted by several families at one budget,
side by side against exact moments or a long HMC run.

A :class:`PosteriorProblem` is a model, its arguments, the sites to compare and, where known,
the exact posterior moments. A family fits it:

* ``mean-field`` / ``full-rank``: Pyro's ``AutoNormal`` / ``AutoMultivariateNormal`` under
  the ELBO;
* ``renyi:ALPHA`` and ``iwae``: the mean-field guide under the Rényi bound / IWAE;
* ``avb``: an implicit guide (no density) by AVB with adaptive contrast through the model's
  potential (:func:`~pyrogen.inference.avb_posterior.fit_avb_posterior`);
* ``hmc``: pyrogen's batched HMC (4 chains by default).

Guides are fitted by :func:`~pyrogen.inference.fit.fit_guide` (Adam, the step cut by 0.3 at
each third, parameters averaged over the last third) with the same steps and particles, so
their gradient evaluations are equal; AVB takes as many steps with ``avb_draws`` draws each.
A budget in gradient evaluations (``PosteriorBudget.gradient_evaluations``) sets every
guide's steps instead: that many evaluations divided by its draws per step. HMC's cost is
its chains and draws; its gradient evaluations are counted and shown beside the others. Each fit is
scored by :func:`~pyrogen.metrics.compare_posteriors` (mean and sd errors in reference-sd
units, PSIS k-hat) and drawn in one forest plot.

Example (a user's model)::

    import pyro, pyro.distributions as dist, torch
    from pyrogen.compare.posterior import PosteriorProblem, run_posterior

    x = torch.randn(200, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(200)

    def model(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal((x * w).sum(-1), sigma), obs=y)

    problem = PosteriorProblem("my regression", model, (x, y), sites=["w", "sigma"])
    result = run_posterior(problem, ["mean-field", "full-rank", "hmc"], out="runs/mine")
    print(result.markdown())
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyro
import torch
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from pyrogen.inference.avb_posterior import fit_avb_posterior
from pyrogen.inference.fit import fit_guide
from pyrogen.inference.mcmc import sample
from pyrogen.inference.renyi import RenyiBound
from pyrogen.metrics.guide_draws import GuideDraws, draw_guide
from pyrogen.metrics.posterior_comparison import compare_posteriors, fit_draws, plot_forest
from pyrogen.metrics.psis import khat_threshold

__all__ = [
    "FAMILIES",
    "POSTERIOR_PROBLEMS",
    "PosteriorBudget",
    "PosteriorProblem",
    "PosteriorResult",
    "gaussian_kl_to_exact",
    "parse_family",
    "run_posterior",
]


@dataclass
class PosteriorProblem:
    """A model to fit: ``model(*args)``, the sites to compare, and the exact posterior's
    moments (site -> (mean, sd)) when known; without them a long HMC run is the reference.
    ``exact_gaussian``: the exact posterior's mean and covariance over the values of
    ``sites`` flattened in that order, when the posterior is Gaussian: every fit then gets
    its KL to it (:func:`gaussian_kl_to_exact`)."""

    name: str
    model: Callable[..., Any]
    args: tuple[Any, ...] = ()
    sites: Sequence[str] | None = None
    exact: Mapping[str, tuple[Any, Any]] | None = None
    description: str = ""
    exact_gaussian: tuple[Any, Any] | None = None


@dataclass
class PosteriorBudget:
    """Every guide: ``steps`` Adam steps at ``lr`` with ``particles`` particles (AVB:
    ``avb_draws`` draws and ``avb_critic_steps`` critic updates per step), or as many steps
    as ``gradient_evaluations`` allows when it is set; HMC: ``hmc_chains`` x ``hmc_draws``
    after ``hmc_warmup``; the reference HMC run (when there is no exact answer) and the
    k-hat draws."""

    steps: int = 3000
    lr: float = 0.01
    particles: int = 8
    hmc_chains: int = 4
    hmc_warmup: int = 500
    hmc_draws: int = 500
    reference_chains: int = 64
    reference_warmup: int = 1000
    reference_draws: int = 2000
    khat_draws: int = 4000
    seed: int = 0
    avb_draws: int = 256
    avb_critic_steps: int = 5
    gradient_evaluations: int | None = None

    def guide_steps(self, draws_per_step: int) -> int:
        """Steps of a guide that draws ``draws_per_step`` particles per step: ``steps``, or
        the gradient-evaluation budget divided by them."""
        if self.gradient_evaluations is None:
            return self.steps
        steps = self.gradient_evaluations // draws_per_step
        if steps < 1:
            raise ValueError(
                f"a budget of {self.gradient_evaluations} gradient evaluations is less than "
                f"one step of {draws_per_step} draws"
            )
        return steps


FAMILIES: dict[str, str] = {
    "mean-field": "AutoNormal under the ELBO",
    "full-rank": "AutoMultivariateNormal under the ELBO",
    "renyi:ALPHA": "AutoNormal under the Rényi bound of order ALPHA (K particles)",
    "iwae": "AutoNormal under IWAE (the Rényi bound at alpha = 0)",
    "avb": "an implicit guide (no density) by AVB with adaptive contrast, through the potential",
    "hmc": "pyrogen's batched HMC (ChEES trajectories, target acceptance 0.95)",
}


def parse_family(name: str) -> tuple[str, float | None]:
    """``"renyi:0.5"`` -> ``("renyi", 0.5)``; other names -> ``(name, None)``."""
    base, _, arg = name.partition(":")
    if base == "renyi":
        try:
            alpha = float(arg)
        except ValueError:
            raise ValueError(
                f"family {name!r}: give the order as renyi:ALPHA, e.g. renyi:0.5"
            ) from None
        if math.isnan(alpha):
            raise ValueError(f"family {name!r}: alpha is NaN")
        return base, alpha
    if arg or base not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; families: {', '.join(FAMILIES)}")
    return base, None


def gaussian_kl_to_exact(
    draws: Mapping[str, np.ndarray], sites: Sequence[str], mean: Any, cov: Any
) -> float:
    r""":math:`\mathrm{KL}(\mathcal N(\hat m, \hat S) \,\|\, \mathcal N(\mu, \Sigma))`
    in closed form, :math:`\hat m, \hat S` the mean and covariance of the draws of ``sites``
    (flattened in that order): for a Gaussian fit, its KL(q || p) up to the Monte Carlo
    error of the moments (a bias of about d(d + 1) / (4 S) nats from S draws); for any other
    fit, the KL of its moment-matched Gaussian."""
    x = np.concatenate([draws[s].reshape(draws[s].shape[0], -1) for s in sites], axis=1)
    mu = np.asarray(torch.as_tensor(mean, dtype=torch.float64)).reshape(-1)
    sigma = np.asarray(torch.as_tensor(cov, dtype=torch.float64))
    d = mu.shape[0]
    if x.shape[1] != d or sigma.shape != (d, d):
        raise ValueError(
            f"exact_gaussian is over {d} values, the sites {list(sites)} have {x.shape[1]}"
        )
    m, cov_hat = x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))
    precision = np.linalg.inv(sigma)
    diff = mu - m
    _, logdet_sigma = np.linalg.slogdet(sigma)
    sign, logdet_hat = np.linalg.slogdet(cov_hat)
    if sign <= 0:
        return math.inf  # degenerate draws: no density to compare
    trace = float(np.trace(precision @ cov_hat))
    return 0.5 * (trace + float(diff @ precision @ diff) - d + logdet_sigma - logdet_hat)


def parse_family_or_none(name: str) -> tuple[str, float | None] | None:
    """:func:`parse_family`, or None for a name that is no family."""
    try:
        return parse_family(name)
    except ValueError:
        return None


class PosteriorResult(NamedTuple):
    """The per-fit summary rows, the per-parameter rows, the reference's description and
    the files written (if any)."""

    problem: str
    reference: str
    summary: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    files: list[Path]

    def markdown(self) -> str:
        kl = any("kl_to_exact" in s for s in self.summary)
        lines = [
            f"## {self.problem}",
            "",
            f"Reference: {self.reference}.",
            "",
            "| fit | max abs mean error (ref sd) | max abs sd error | narrowest / widest sd | "
            + ("KL to exact | " if kl else "")
            + "k-hat | max R-hat | min ESS/s | seconds | gradient evaluations |",
            "|---|---:|---:|---:|" + ("---:|" if kl else "") + "---:|---:|---:|---:|---:|",
        ]
        for s in self.summary:
            khat = "-" if s["khat"] is None else f"{s['khat']:.2f}"
            rhat = f"{s['r_hat']:.3f}" if s.get("r_hat") is not None else "-"
            ess = f"{s['ess_per_second']:.0f}" if s.get("ess_per_second") is not None else "-"
            kl_cell = f"{s['kl_to_exact']:.3f} | " if kl else ""
            lines.append(
                f"| {s['fit']} | {s['max_abs_mean_error']:.3f} | {s['max_abs_sd_error']:.3f} | "
                f"{s['narrowest']:+.3f} / {s['widest']:+.3f} | {kl_cell}{khat} | {rhat} | "
                f"{ess} | {s['seconds']:.1f} | {s['gradient_evaluations']:,} |"
            )
        if kl:
            lines += [
                "",
                "KL to exact: KL(q || p) in nats of the Gaussian with the fit's draws' mean and "
                "covariance (a Gaussian guide's own KL, up to the draws' Monte Carlo error).",
            ]
        return "\n".join(lines) + "\n"


def _hmc(problem: PosteriorProblem, chains: int, warmup: int, draws: int, seed: int) -> Any:
    return sample(
        model=problem.model,
        model_args=problem.args,
        num_chains=chains,
        num_warmup=warmup,
        num_samples=draws,
        generator=torch.Generator().manual_seed(seed),
        progress=False,
    )


def _chain_diagnostics(run: Any, seconds: float) -> dict[str, float | None]:
    """The largest rank-normalised R-hat and the smallest bulk ESS per second over every
    scalar of the draws (ArviZ's; R-hat needs two chains or more)."""
    import arviz as az

    idata = run.to_arviz()
    ess = min(float(v.min()) for v in az.ess(idata).data_vars.values())
    rhat = None
    if idata.posterior.sizes["chain"] > 1:
        rhat = max(float(v.max()) for v in az.rhat(idata).data_vars.values())
    return {"r_hat": rhat, "ess_per_second": ess / seconds}


def _fit_guide(
    problem: PosteriorProblem, guide: Any, order: float, budget: PosteriorBudget
) -> tuple[Any, dict[str, Any]]:
    """A guide module fitted under the Rényi bound of ``order`` (1: the ELBO) at the
    budget, then drawn and weighed for k-hat."""
    objective = RenyiBound(order, budget.particles)
    fit = fit_guide(
        problem.model,
        guide,
        objective,
        *problem.args,
        num_steps=budget.guide_steps(budget.particles),
        lr=budget.lr,
        seed=budget.seed,
    )
    pyro.set_rng_seed(budget.seed + 1)
    draws = draw_guide(problem.model, guide, *problem.args, num_samples=budget.khat_draws)
    return draws, {"seconds": fit.seconds, "gradient_evaluations": fit.gradient_evaluations}


def _fit_family(
    problem: PosteriorProblem, family: str, budget: PosteriorBudget
) -> tuple[Any, dict[str, Any]]:
    base, alpha = parse_family(family)
    if base == "hmc":
        start = time.perf_counter()
        run = _hmc(problem, budget.hmc_chains, budget.hmc_warmup, budget.hmc_draws, budget.seed)
        # leapfrog steps of the draws, scaled up for the warm-up (whose steps are not kept)
        evaluations = float(run.stats["num_steps"].sum()) * (
            1 + budget.hmc_warmup / budget.hmc_draws
        )
        seconds = time.perf_counter() - start
        return run, {
            "seconds": seconds,
            "gradient_evaluations": int(evaluations),
            **_chain_diagnostics(run, seconds),
        }
    pyro.clear_param_store()
    if base == "avb":
        avb = fit_avb_posterior(
            problem.model,
            *problem.args,
            num_steps=budget.guide_steps(budget.avb_draws),
            draws=budget.avb_draws,
            critic_steps=budget.avb_critic_steps,
            seed=budget.seed,
        )
        pyro.set_rng_seed(budget.seed + 1)
        return avb.draws(budget.khat_draws), {
            "seconds": avb.seconds,
            "gradient_evaluations": avb.gradient_evaluations,
        }
    guide = (AutoMultivariateNormal if base == "full-rank" else AutoNormal)(problem.model)
    order = {"mean-field": 1.0, "full-rank": 1.0, "iwae": 0.0}.get(base, alpha)
    assert order is not None
    return _fit_guide(problem, guide, order, budget)


def run_posterior(
    problem: PosteriorProblem,
    families: Sequence[str],
    budget: PosteriorBudget | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    guides: Mapping[str, Any] | None = None,
) -> PosteriorResult:
    """Fit ``problem`` with every family at ``budget`` and compare them with the exact
    moments or a reference HMC run; with ``out``, write ``results.{md,csv,json}`` and
    ``forest.png`` there.

    Each finished fit is kept in ``out/fits`` and read back, not fitted again, by a later
    run with the same problem, family and budget: an interrupted comparison goes on from the
    fits it finished (fresh and read-back fits give the same tables).

    ``guides``: the user's own guides by name, each a ``torch.nn.Module`` Pyro guide (an
    autoguide, a ``PyroModule``, any module whose parameters are the guide's), fitted under
    the ELBO at the same budget as the families' guides and scored beside them."""
    budget = budget or PosteriorBudget()
    for family in families:
        parse_family(family)
    guides = dict(guides or {})
    for name, guide in guides.items():
        if name in families or parse_family_or_none(name) is not None:
            raise ValueError(f"guide name {name!r} is a family's name; give it another")
        if not isinstance(guide, torch.nn.Module):
            raise TypeError(
                f"guide {name!r} must be a torch.nn.Module (an autoguide, a PyroModule...) so "
                f"that its parameters can be fitted and averaged, got {type(guide).__name__}"
            )
    if not families and not guides:
        raise ValueError("no families to fit")
    fits: dict[str, Any] = {}
    costs: dict[str, dict[str, Any]] = {}
    cache = _FitCache(Path(out) / "fits" if out is not None else None, problem, budget)
    reference: str | Mapping[str, tuple[Any, Any]]
    if problem.exact is not None:
        reference, how = problem.exact, "exact posterior moments"
    else:

        def reference_run() -> tuple[Any, dict[str, Any]]:
            start = time.perf_counter()
            run = _hmc(
                problem,
                budget.reference_chains,
                budget.reference_warmup,
                budget.reference_draws,
                seed=12345,
            )
            return run, {"seconds": time.perf_counter() - start}

        fits["reference HMC"], cost = cache.fit("reference HMC", "reference", reference_run)
        reference = "reference HMC"
        how = (
            f"pyrogen HMC, {budget.reference_chains} chains x {budget.reference_draws} draws "
            f"after {budget.reference_warmup} warm-up ({cost['seconds']:.0f} s)"
        )
        if progress:
            print(f"{problem.name}: reference done ({how})", flush=True)
    for family in families:

        def family_fit(family: str = family) -> tuple[Any, dict[str, Any]]:
            return _fit_family(problem, family, budget)

        fits[family], costs[family] = cache.fit(family, family, family_fit)
        if progress:
            print(f"{problem.name}: {family} in {costs[family]['seconds']:.1f} s", flush=True)
    for name, guide in guides.items():

        def user_fit(guide: Any = guide) -> tuple[Any, dict[str, Any]]:
            pyro.clear_param_store()
            return _fit_guide(problem, guide, 1.0, budget)

        fits[name], costs[name] = cache.fit(name, f"guide {type(guide).__qualname__}", user_fit)
        if progress:
            print(f"{problem.name}: {name} in {costs[name]['seconds']:.1f} s", flush=True)
    comparison = compare_posteriors(fits, reference=reference, sites=problem.sites)
    summary = []
    for s in comparison.summary:
        if s["fit"] == "reference HMC":
            continue
        signed = [r["sd_error"] for r in comparison.rows if r["fit"] == s["fit"]]
        extra = {"narrowest": min(signed), "widest": max(signed)}
        if problem.exact_gaussian is not None:
            sites = list(problem.sites or [])
            mean, cov = problem.exact_gaussian
            extra["kl_to_exact"] = gaussian_kl_to_exact(fit_draws(fits[s["fit"]]), sites, mean, cov)
        summary.append(s | costs[s["fit"]] | extra)
    rows = [r for r in comparison.rows if r["fit"] != "reference HMC"]
    files: list[Path] = []
    if out is not None:
        files = _write(Path(out), problem, how, summary, rows, fits, budget)
    return PosteriorResult(problem.name, how, summary, rows, files)


class _FitCache:
    """Finished fits in ``folder`` (``<name>.pt``: the draws, the guide's log p and log q,
    the costs; plain tensors, loaded weights-only), read back instead of fitted again when
    problem, family and budget are those of the run (a user's guide: its name and class),
    so an interrupted comparison goes on from the fits it finished."""

    def __init__(self, folder: Path | None, problem: PosteriorProblem, budget: PosteriorBudget):
        self.folder = folder
        self.base = {"problem": problem.name, "args": _describe_args(problem.args)}
        self.base["budget"] = json.dumps(vars(budget), sort_keys=True)

    def fit(
        self, name: str, kind: str, run: Callable[[], tuple[Any, dict[str, Any]]]
    ) -> tuple[Any, dict[str, Any]]:
        if self.folder is None:
            return run()
        identity = json.dumps(self.base | {"fit": name, "kind": kind}, sort_keys=True)
        path = self.folder / f"{name.replace('/', '_').replace(':', '_')}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=True)
            if saved.get("identity") == identity:
                return _restore(saved), json.loads(saved["costs"])
        fit, cost = run()
        plain = _plain(fit)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"identity": identity, "costs": json.dumps(cost)} | plain, tmp)
        tmp.replace(path)
        return _restore(plain), cost  # as a resumed run reads it: the same tables and plots


def _describe_args(args: tuple[Any, ...]) -> str:
    """The problem's arguments in short: shapes and a checksum of every tensor."""
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"{tuple(a.shape)}:{float(a.double().sum()):.12g}")
        else:
            parts.append(repr(a)[:100])
    return ";".join(parts)


def _plain(fit: Any) -> dict[str, Any]:
    """A fit as plain tensors: a guide's draws with log p and log q, or pooled draws."""
    if isinstance(fit, GuideDraws):
        return {"samples": dict(fit.samples), "log_p": fit.log_p, "log_q": fit.log_q}
    return {"samples": {k: torch.as_tensor(v) for k, v in fit_draws(fit).items()}}


def _restore(saved: dict[str, Any]) -> Any:
    if "log_p" in saved:
        return GuideDraws(saved["samples"], saved["log_p"], saved["log_q"])
    return saved["samples"]


def _write(
    out: Path,
    problem: PosteriorProblem,
    how: str,
    summary: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    fits: dict[str, Any],
    budget: PosteriorBudget,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    result = PosteriorResult(problem.name, how, summary, rows, [])
    steps = budget.guide_steps(budget.particles)
    avb = (
        f"; AVB {budget.guide_steps(budget.avb_draws)} steps of {budget.avb_draws} draws and "
        f"{budget.avb_critic_steps} critic steps (Adam 3e-4 / 1e-3), no k-hat (no density)"
        if any(s["fit"] == "avb" for s in summary)
        else ""
    )
    total = (
        f"{budget.gradient_evaluations:,} gradient evaluations per guide: "
        if budget.gradient_evaluations is not None
        else ""
    )
    budget_line = (
        f"Budget: {total}guides {steps} Adam steps (lr {budget.lr}, K = {budget.particles})"
        f"{avb}; "
        f"HMC {budget.hmc_chains} chains x {budget.hmc_draws} draws after {budget.hmc_warmup} "
        f"warm-up; k-hat from {budget.khat_draws} draws (reliable below "
        f"{khat_threshold(budget.khat_draws):.2f})."
    )
    md = out / "results.md"
    md.write_text(result.markdown() + "\n" + budget_line + "\n")
    js = out / "results.json"
    js.write_text(
        json.dumps(
            {
                "problem": problem.name,
                "reference": how,
                "budget": vars(budget),
                "summary": summary,
                "rows": rows,
            },
            indent=1,
            default=float,
        )
        + "\n"
    )
    cs = out / "results.csv"
    with cs.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in summary for k in r)))
        writer.writeheader()
        writer.writerows(summary)
    forest = plot_forest(fits, out / "forest.png", sites=problem.sites)
    return [md, cs, js, forest]


def _correlated_gaussian() -> PosteriorProblem:
    from pyrogen.models.correlated_gaussian import CorrelatedGaussian

    target = CorrelatedGaussian()
    return PosteriorProblem(
        "correlated-gaussian",
        target.model,
        sites=["z"],
        exact={"z": (target.mean, torch.diagonal(target.cov).sqrt())},
        exact_gaussian=(target.mean, target.cov),
        description="N((0, 1), [[1, .9], [.9, 1]]): the lecture's example, exact moments",
    )


def _eight_schools() -> PosteriorProblem:
    from pyrogen.models import eight_schools

    return PosteriorProblem(
        "eight-schools",
        eight_schools.model,
        (eight_schools.data(),),
        sites=["mu", "tau", "theta"],
        description="non-centred eight schools (Rubin's data), against long HMC",
    )


def _logistic() -> PosteriorProblem:
    from pyrogen.models import logistic_regression

    x, y, _ = logistic_regression.data()
    return PosteriorProblem(
        "logistic",
        logistic_regression.model,
        (torch.from_numpy(x), torch.from_numpy(y)),
        sites=["coef", "intercept"],
        description="Bayesian logistic regression, N = 1000, D = 10 + intercept (the MCMC "
        "benchmark's), against long HMC",
    )


def _linear_regression() -> PosteriorProblem:
    from pyrogen.models.linear_regression import BayesianLinearRegression

    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    t = phi @ torch.tensor([1.0, -0.5, 0.25, 0.0], dtype=torch.float64)
    t = t + 0.5 * torch.randn(50, generator=gen, dtype=torch.float64)
    blr = BayesianLinearRegression(phi, t, beta=4.0)
    return PosteriorProblem(
        "linear-regression",
        blr.model,
        sites=["alpha", "w"],
        description="Bishop's variational linear regression (PRML 10.3; N = 50, M = 4), "
        "against long HMC (its CAVI fixed point: pyrogen.models.linear_regression)",
    )


#: name -> a function building the problem (data are made on demand).
POSTERIOR_PROBLEMS: dict[str, Callable[[], PosteriorProblem]] = {
    "correlated-gaussian": _correlated_gaussian,
    "linear-regression": _linear_regression,
    "eight-schools": _eight_schools,
    "logistic": _logistic,
}
