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
- an implicit guide (no density) by AVB with adaptive contrast through the model's potential
  (``pyrogen.inference.avb_posterior``): as many steps, 256 draws and 5 critic updates each,
  so 32 times the Gaussian guides' gradient evaluations (the table says so);
- a short HMC run as a user would make it: 4 chains x 500 draws after 500 warm-up.

Each fit: per parameter the error of its mean and of its sd in units of the reference's sd
(``pyrogen.metrics.compare_posteriors``), PSIS k-hat of the guide's weights (4,000 draws),
wall time and gradient evaluations; and one ArviZ forest plot per problem. The fitting and
scoring are the library's posterior harness (``pyrogen.compare.posterior``, also behind
``pyrogen compare --problem``); this script runs its two problems and judges the goals.

    .venv/bin/python benchmarks/posteriors.py

Writes ``results/posteriors.{json,md}`` and ``docs/images/posteriors_<problem>.png``;
``--smoke-test`` runs every step with tiny budgets into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrogen.compare.posterior import POSTERIOR_PROBLEMS, PosteriorBudget, run_posterior
from pyrogen.machine import machine
from pyrogen.metrics import khat_threshold

ROOT = Path(__file__).resolve().parent
PROBLEMS = ["eight-schools", "logistic"]
FAMILIES = ["mean-field", "renyi:0.5", "iwae", "full-rank", "avb", "hmc"]


def goals(result: dict[str, Any]) -> list[str]:
    by = {s["fit"]: s for s in result["summary"]}
    mf, fr = by["mean-field"], by["full-rank"]
    guides = [s for s in result["summary"] if s["khat"] is not None]
    worst = max(guides, key=lambda s: s["max_abs_sd_error"])
    narrow = min(guides, key=lambda s: s["narrowest"])
    by_khat = [s["fit"] for s in sorted(guides, key=lambda s: s["khat"])]
    by_narrow = [s["fit"] for s in sorted(guides, key=lambda s: -s["narrowest"])]
    top = max(g["khat"] for g in guides)
    avb = by.get("avb")
    avb_line = (
        [
            f"AVB (implicit guide, no k-hat) against the best Gaussian guide on the largest sd "
            f"error: {avb['max_abs_sd_error']:.3f} vs "
            f"{min(g['max_abs_sd_error'] for g in guides):.3f}, at "
            f"{avb['gradient_evaluations'] / mf['gradient_evaluations']:.0f}x their gradient "
            "evaluations"
        ]
        if avb is not None
        else []
    )
    return avb_line + [
        f"full-rank ahead of mean-field (ELBO) on the largest sd error: "
        f"{fr['max_abs_sd_error']:.3f} vs {mf['max_abs_sd_error']:.3f}: "
        + ("yes" if fr["max_abs_sd_error"] < mf["max_abs_sd_error"] else "no"),
        f"k-hat flags the guide with the largest sd error ({worst['fit']}, "
        f"{worst['max_abs_sd_error']:.3f}): k-hat {worst['khat']:.2f}, "
        + ("the largest" if worst["khat"] == top else "not the largest"),
        f"k-hat flags the guide with the narrowest sd ({narrow['fit']}, "
        f"{narrow['narrowest']:+.3f}): k-hat {narrow['khat']:.2f}, "
        + ("the largest" if narrow["khat"] == top else "not the largest"),
        f"guides by k-hat, lowest first: {' < '.join(by_khat)}; by narrowest sd, least "
        f"narrow first: {' < '.join(by_narrow)}",
    ]


def markdown(payload: dict[str, Any]) -> str:
    b = payload["budget"]
    lines = [
        "# Posterior problems: variational fits against a long HMC run",
        "",
        f"Machine: {payload['machine']}. Command: `{payload['command']}`. Wall time "
        f"{payload['wall_seconds']:.0f} s. Guides: Pyro autoguides fitted by `fit_guide` "
        f"({b['steps']} Adam steps, lr {b['lr']}, K = {b['particles']} vectorized particles, "
        f"parameters averaged over the last third); AVB {b['steps']} steps of "
        f"{b['avb_draws']} draws and {b['avb_critic_steps']} critic updates (Adam 3e-4 / "
        f"1e-3); HMC {b['hmc_chains']} chains x "
        f"{b['hmc_draws']} after {b['hmc_warmup']} warm-up; k-hat from {b['khat_draws']} "
        f"draws (reliable below {khat_threshold(b['khat_draws']):.2f}, Vehtari et al. 2024). "
        "Errors: |fit mean - reference mean| / reference sd and |fit sd / reference sd - 1|, "
        "the largest over the parameters; narrowest / widest: the signed sd errors.",
    ]
    for result in payload["problems"]:
        table = result["markdown"].split("\n", 1)[1]  # without its own heading
        lines += ["", f"## {result['problem']} ({', '.join(result['sites'])})"]
        lines += [table.rstrip("\n"), "", f"Figure: `{result['figure']}`.", "", "Goals:"]
        lines += [f"- {g}" for g in goals(result)]
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
    budget = PosteriorBudget(
        steps=args.num_steps, lr=args.lr, particles=args.num_particles, khat_draws=args.khat_draws
    )
    if args.smoke_test:
        budget = PosteriorBudget(
            steps=60,
            particles=4,
            hmc_chains=2,
            hmc_warmup=20,
            hmc_draws=20,
            reference_chains=4,
            reference_warmup=50,
            reference_draws=50,
            khat_draws=200,
            avb_draws=16,
            avb_critic_steps=1,
        )
    out = args.out or (Path(tempfile.mkdtemp()) if args.smoke_test else ROOT / "results")
    images = out if args.smoke_test else ROOT.parent / "docs" / "images"
    work = Path(tempfile.mkdtemp(prefix="posteriors_"))
    start = time.perf_counter()
    results = []
    for name in PROBLEMS:
        problem = POSTERIOR_PROBLEMS[name]()
        result = run_posterior(problem, FAMILIES, budget, out=work / name)
        image = images / f"posteriors_{name.replace('-', '_')}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / name / "forest.png", image)
        figure = (
            str(image.relative_to(ROOT.parent)) if image.is_relative_to(ROOT.parent) else image.name
        )
        results.append(
            {
                "problem": name,
                "sites": list(problem.sites or []),
                "reference": result.reference,
                "summary": result.summary,
                "rows": result.rows,
                "markdown": result.markdown(),
                "figure": figure,
            }
        )
    payload = {
        "machine": machine(),
        "command": "python benchmarks/posteriors.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "budget": vars(budget),
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
