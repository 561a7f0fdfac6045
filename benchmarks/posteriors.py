"""Posterior problems (c) and (d) of issue 18: variational fits against a long HMC run.

Problems: the non-centred eight schools (``pyrogen.models.eight_schools``, Rubin's data) and
the Bayesian logistic regression of ``mcmc_logistic.py`` (N = 1000, D = 10 + intercept).
Reference: pyrogen's batched HMC, 64 chains x 2000 draws after 1000 warm-up iterations
(ChEES trajectories, target acceptance 0.95). Fits, all on the same problem with the same
budget (``pyrogen.inference.fit.fit_guide``: 3000 Adam steps at lr 0.01, cut by 0.3 at each
third, parameters averaged over the last third; K = 8 vectorized particles):

- mean-field Gaussian (Pyro's ``AutoNormal``) under the ELBO, the Rényi bound at
  alpha = 0.5, and IWAE (alpha = 0);
- full-rank Gaussian (``AutoMultivariateNormal``) under the ELBO;
- a short HMC run as a user would make it: 4 chains x 500 draws after 500 warm-up.

Each fit: per parameter the error of its mean and of its sd in units of the reference's sd
(``pyrogen.metrics.compare_posteriors``), PSIS k-hat of the guide's weights (4,000 draws),
wall time and gradient evaluations; and one ArviZ forest plot per problem.

    .venv/bin/python benchmarks/posteriors.py

Writes ``results/posteriors.{json,md}`` and ``docs/images/posteriors_<problem>.png``;
``--smoke-test`` runs every step with tiny budgets into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from pyrogen.inference import RenyiBound
from pyrogen.inference.fit import fit_guide
from pyrogen.inference.mcmc import sample
from pyrogen.machine import machine
from pyrogen.metrics import compare_posteriors, draw_guide, khat_threshold, plot_forest
from pyrogen.models import eight_schools

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import mcmc_logistic  # noqa: E402


def problems() -> dict[str, tuple[Callable[..., None], tuple[Any, ...], list[str]]]:
    """name -> (model, its arguments, the sites compared)."""
    x, y, _ = mcmc_logistic.make_data()
    return {
        "eight schools": (eight_schools.model, (eight_schools.data(),), ["mu", "tau", "theta"]),
        "logistic regression": (
            mcmc_logistic.pyro_model,
            (torch.from_numpy(x), torch.from_numpy(y)),
            ["coef", "intercept"],
        ),
    }


FITS: dict[str, tuple[type, float]] = {
    "mean-field, ELBO": (AutoNormal, 1.0),
    "mean-field, Rényi alpha = 0.5": (AutoNormal, 0.5),
    "mean-field, IWAE": (AutoNormal, 0.0),
    "full-rank, ELBO": (AutoMultivariateNormal, 1.0),
}


def hmc(
    model: Callable[..., None],
    args: tuple[Any, ...],
    chains: int,
    warmup: int,
    draws: int,
    seed: int,
) -> Any:
    return sample(
        model=model,
        model_args=args,
        num_chains=chains,
        num_warmup=warmup,
        num_samples=draws,
        generator=torch.Generator().manual_seed(seed),
        progress=False,
    )


def run_problem(name: str, args: argparse.Namespace, out_images: Path) -> dict[str, Any]:
    model, model_args, sites = problems()[name]
    steps = 60 if args.smoke_test else args.num_steps
    start = time.perf_counter()
    ref_chains, ref_warmup, ref_draws = (4, 50, 50) if args.smoke_test else (64, 1000, 2000)
    reference = hmc(model, model_args, ref_chains, ref_warmup, ref_draws, seed=12345)
    ref_seconds = time.perf_counter() - start
    print(f"{name}: reference HMC in {ref_seconds:.0f} s", flush=True)
    fits: dict[str, Any] = {}
    costs: dict[str, dict[str, float]] = {}
    for fit_name, (autoguide, alpha) in FITS.items():
        pyro.clear_param_store()
        guide = autoguide(model)
        objective = RenyiBound(alpha, args.num_particles)
        fit = fit_guide(model, guide, objective, *model_args, num_steps=steps, lr=args.lr, seed=0)
        pyro.set_rng_seed(1)
        fits[fit_name] = draw_guide(model, guide, *model_args, num_samples=args.khat_draws)
        costs[fit_name] = {"seconds": fit.seconds, "gradient_evaluations": fit.gradient_evaluations}
        print(f"  {fit_name}: {fit.seconds:.1f} s", flush=True)
    short = (2, 20, 20) if args.smoke_test else (4, 500, 500)
    start = time.perf_counter()
    run = hmc(model, model_args, *short, seed=0)
    fits["HMC, 4 chains x 500"] = run
    costs["HMC, 4 chains x 500"] = {
        "seconds": time.perf_counter() - start,
        # leapfrog steps of the draws, scaled up for the warm-up (whose steps are not kept)
        "gradient_evaluations": int(run.stats["num_steps"].sum() * (1 + short[1] / short[2])),
    }
    fits["reference HMC"] = reference
    comparison = compare_posteriors(fits, reference="reference HMC", sites=sites)
    image = out_images / f"posteriors_{name.replace(' ', '_')}.png"
    plot_forest(fits, image, sites=sites)
    summary = []
    for s in comparison.summary:
        if s["fit"] == "reference HMC":
            continue
        signed = [r["sd_error"] for r in comparison.rows if r["fit"] == s["fit"]]
        summary.append(s | costs[s["fit"]] | {"narrowest": min(signed), "widest": max(signed)})
    return {
        "problem": name,
        "sites": sites,
        "reference": f"pyrogen HMC, {ref_chains} chains x {ref_draws} draws after {ref_warmup} "
        f"warm-up ({ref_seconds:.0f} s)",
        "summary": summary,
        "rows": [r for r in comparison.rows if r["fit"] != "reference HMC"],
        "figure": str(image.relative_to(ROOT.parent))
        if image.is_relative_to(ROOT.parent)
        else image.name,
    }


def goals(result: dict[str, Any]) -> list[str]:
    by = {s["fit"]: s for s in result["summary"]}
    mf, fr = by["mean-field, ELBO"], by["full-rank, ELBO"]
    guides = [s for s in result["summary"] if s["khat"] is not None]
    worst = max(guides, key=lambda s: s["max_abs_sd_error"])
    narrow = min(guides, key=lambda s: s["narrowest"])
    by_khat = [s["fit"] for s in sorted(guides, key=lambda s: s["khat"])]
    by_narrow = [s["fit"] for s in sorted(guides, key=lambda s: -s["narrowest"])]
    return [
        f"full-rank ahead of mean-field (ELBO) on the largest sd error: "
        f"{fr['max_abs_sd_error']:.3f} vs {mf['max_abs_sd_error']:.3f}: "
        + ("yes" if fr["max_abs_sd_error"] < mf["max_abs_sd_error"] else "no"),
        f"k-hat flags the guide with the largest sd error ({worst['fit']}, "
        f"{worst['max_abs_sd_error']:+.3f} at its worst): k-hat {worst['khat']:.2f}, "
        + ("the largest" if worst["khat"] == max(g["khat"] for g in guides) else "not the largest"),
        f"k-hat flags the guide with the narrowest sd ({narrow['fit']}, "
        f"{narrow['narrowest']:+.3f}): k-hat {narrow['khat']:.2f}, "
        + (
            "the largest" if narrow["khat"] == max(g["khat"] for g in guides) else "not the largest"
        ),
        f"guides by k-hat, lowest first: {' < '.join(by_khat)}; by narrowest sd, least "
        f"narrow first: {' < '.join(by_narrow)}",
    ]


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Posterior problems: variational fits against a long HMC run",
        "",
        f"Machine: {payload['machine']}. Command: `{payload['command']}`. Wall time "
        f"{payload['wall_seconds']:.0f} s. Guides: Pyro autoguides fitted by "
        f"`fit_guide` ({payload['num_steps']} Adam steps, lr {payload['lr']}, K = "
        f"{payload['num_particles']} vectorized particles, parameters averaged over the last "
        f"third); k-hat from {payload['khat_draws']} draws (reliable below "
        f"{khat_threshold(payload['khat_draws']):.2f}, Vehtari et al. 2024). Errors: "
        "|fit mean - reference mean| / reference sd and |fit sd / reference sd - 1|, the "
        "largest over the parameters.",
    ]
    for result in payload["problems"]:
        lines += [
            "",
            f"## {result['problem']} ({', '.join(result['sites'])})",
            "",
            f"Reference: {result['reference']}. Figure: `{result['figure']}`.",
            "",
            "| fit | max abs mean error (ref sd) | max abs sd error | narrowest / widest sd "
            "| k-hat | seconds | gradient evaluations |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in result["summary"]:
            khat = "-" if s["khat"] is None else f"{s['khat']:.2f}"
            lines.append(
                f"| {s['fit']} | {s['max_abs_mean_error']:.3f} | {s['max_abs_sd_error']:.3f} | "
                f"{s['narrowest']:+.3f} / {s['widest']:+.3f} | {khat} | {s['seconds']:.1f} | "
                f"{s['gradient_evaluations']:,} |"
            )
        lines += ["", "Goals:"] + [f"- {g}" for g in goals(result)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=3000)
    parser.add_argument("--num-particles", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--khat-draws", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    if args.smoke_test:
        args.khat_draws = 200
    out = args.out or (Path(tempfile.mkdtemp()) if args.smoke_test else ROOT / "results")
    images = out if args.smoke_test else ROOT.parent / "docs" / "images"
    start = time.perf_counter()
    results = [run_problem(name, args, images) for name in problems()]
    payload = {
        "machine": machine(),
        "command": "python benchmarks/posteriors.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "num_steps": args.num_steps,
        "num_particles": args.num_particles,
        "lr": args.lr,
        "khat_draws": args.khat_draws,
        "wall_seconds": time.perf_counter() - start,
        "problems": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "posteriors.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    (out / "posteriors.md").write_text(markdown(payload))
    print(markdown(payload))
    return payload


if __name__ == "__main__":
    main()
