"""``pyrogen compare --problem tour``: the README's main job, one short run of each kind of
comparison the harness makes, on data that ship with the package.

1. ``digits-vae``: one VAE under the ELBO, IWAE (K = 5) and VR-max (K = 5), the same weights
   and batches, scored by importance sampling (the Rényi family);
2. ``grid``: the PacGAN grid under the non-saturating GAN, the recommended recipe (R1 and a
   generator EMA) and KALE with its GEBM samples (the adversarial and energy families);
3. ``rbm-digits``: an RBM under CD-1, PCD-1 and NCE, scored by the exact log-likelihood (the
   contrastive families);
4. ``correlated-gaussian``: the posterior of N((0, 1), [[1, .9], [.9, 1]]) by mean-field,
   full-rank, IWAE-trained (Rényi alpha = 0) guides and HMC against the exact moments (the
   posterior comparison).

Each part writes its own folder under ``out`` (the same files as the problem run alone);
``tour.md`` gathers the four tables with the seconds each part took. The budgets are small
(about three minutes in all on two cores), so the numbers show how the families differ at
an equal, short budget, not what each reaches when trained to convergence.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from pyrogen.compare.config import CompareConfig
from pyrogen.compare.generative import GenerativeBudget, run_generative
from pyrogen.compare.posterior import POSTERIOR_PROBLEMS, PosteriorBudget, run_posterior
from pyrogen.compare.run import run as run_vae

__all__ = ["BUDGETS", "PARTS", "run_tour"]

#: each part's budget: VAE epochs (and the K of its test score), generator or model
#: iterations, guide steps (and HMC's warm-up and draws, and the k-hat draws).
BUDGETS: dict[str, int] = {
    "digits-vae": 60,
    "eval_samples": 5000,
    "grid": 1000,
    "rbm-digits": 2000,
    "correlated-gaussian": 1500,
    "hmc": 500,
    "khat_draws": 4000,
}

#: the parts: (folder, heading, families).
PARTS: list[tuple[str, str, list[str]]] = [
    ("digits-vae", "A VAE on the digits under the Rényi family", ["elbo", "iwae:5", "vrmax:5"]),
    (
        "grid",
        "The PacGAN grid: GAN, the recommended GAN recipe, KALE",
        ["gan", "gan+r1=0.1+ema=0.999", "kale"],
    ),
    ("rbm-digits", "An RBM on binarized digits: CD-1, PCD-1, NCE", ["cd-1", "pcd-1", "nce"]),
    (
        "correlated-gaussian",
        "A correlated Gaussian's posterior: guides against HMC and the exact moments",
        ["mean-field", "full-rank", "renyi:0", "hmc"],
    ),
]


def run_tour(
    out: str | Path = "compare-results",
    *,
    seed: int = 0,
    threads: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Runs the four parts into ``out`` and writes ``out/tour.md``; returns its path.

    An existing tour is refused unless ``resume`` (finished parts are read back, an
    interrupted VAE continues from its checkpoints) or ``overwrite`` (start again)."""
    out = Path(out)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: pick one")
    started = [p for p, _, _ in PARTS if (out / p).exists()]
    if started and not (resume or overwrite):
        raise ValueError(
            f"{out} holds a tour ({', '.join(started)}): pass --resume to continue it or "
            "--overwrite to start again"
        )
    if overwrite:
        for part in started:
            shutil.rmtree(out / part)
    out.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    total = 0.0
    for folder, heading, families in PARTS:
        start = time.perf_counter()
        table = _run_part(folder, families, out / folder, seed, threads, resume, progress)
        seconds = time.perf_counter() - start
        total += seconds
        sections.append(f"## {heading}\n\n{table}\n\n({seconds:.0f} s; files in {folder}/)\n")
        print(f"\n{heading} ({seconds:.0f} s)\n{table}\n", flush=True)
    text = (
        "# pyrogen tour\n\n"
        f"Four comparisons at small, equal budgets per part (seed {seed}, {threads} torch "
        f"thread(s)); {total:.0f} s in all.\n\n" + "\n".join(sections)
    )
    path = out / "tour.md"
    path.write_text(text)
    return path


def _run_part(
    folder: str,
    families: list[str],
    out: Path,
    seed: int,
    threads: int,
    resume: bool,
    progress: bool,
) -> str:
    if folder == "digits-vae":
        config = CompareConfig(
            objectives=families,
            epochs=BUDGETS[folder],
            eval_samples=BUDGETS["eval_samples"],
            seed=seed,
            threads=threads,
            out=str(out),
            resume=resume,
            progress=progress,
        )
        run_vae(config)
        return (out / "results.md").read_text().strip()
    result: Any
    if folder == "correlated-gaussian":
        problem = POSTERIOR_PROBLEMS[folder]()
        budget = PosteriorBudget(
            steps=BUDGETS[folder],
            hmc_warmup=BUDGETS["hmc"],
            hmc_draws=BUDGETS["hmc"],
            khat_draws=BUDGETS["khat_draws"],
            seed=seed,
        )
        result = run_posterior(problem, families, budget, out, progress)
    else:
        budget_g = GenerativeBudget(iterations=BUDGETS[folder], seed=seed)
        result = run_generative(folder, families, budget_g, out, progress)
    return str(result.markdown()).strip()
