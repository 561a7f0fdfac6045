"""Mode coverage of GAN, WGAN, WGAN-GP, hinge and PacGAN2 on the PacGAN ring and grid.

``--datasets spiral`` adds the thin spiral of ``examples/kale_toys.py`` (scored against its
curve; its modes are the curve's 20 segments of equal mass).

Every (data set, objective, seed) run is :func:`train` below (the protocol of
``examples/gan_mixtures.py``: objectives by name from ``pyrogen.inference.gan.ADVERSARIAL``,
trained by ``pyrogen.inference.Trainer``) with the same networks (by default generator
2-256-256-256-2 ReLU, critic 400-400 LeakyReLU(0.2)), batch 256, Adam for the Adam
objectives at a learning rate per data set (1e-3 on the grid, 3e-4 on the ring, where 1e-3
collapsed GAN and hinge to one point; WGAN keeps the paper's RMSProp 5e-5 and clip 0.01),
each learning rate decaying linearly to 0; the WGANs run ``--wgan-iterations`` generator
steps with 5 critic steps each. 2,500 samples are scored per run (modes captured, share
within 3 sigma, reverse KL of the mode histogram). Runs go to ``--work`` one JSON each, so a
stopped benchmark resumes where it was; ``--workers`` processes share the jobs.

    .venv/bin/python benchmarks/gan_modes.py            # ~110 min on 2 cores
    .venv/bin/python benchmarks/gan_modes.py --smoke-test

An objective may carry options (``pyrogen.inference.gan.parse_adversarial``): the R1/R2
penalties and the generator's moving average, e.g. ``gan+r1=0.1+ema=0.999``. The rows of the
recommended recipe beside the plain GAN (``results/gan_modes_recipe.md``; ~40 min)::

    .venv/bin/python benchmarks/gan_modes.py --objectives gan,gan+r1=0.1+ema=0.999 \
        --longer "" --curve-evals 0 --tilt-warmup 0 --name gan_modes_recipe
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import Tensor, nn

from pyrogen.inference import WGAN, WGANGP, Trainer, tilted_sample
from pyrogen.inference.gan import ADVERSARIAL, Adversarial, make_adversarial, parse_adversarial
from pyrogen.machine import machine
from pyrogen.metrics import mmd, mode_coverage
from pyrogen.metrics.correlation import spearman
from pyrogen.metrics.plots import plot_mode_samples, plot_wasserstein_mmd
from pyrogen.models import Generator, mlp

# The anchors: PacGAN (Lin et al. 2018), Table 1: modes (of 25 / 8) and % high quality.
DATASETS = ("ring", "grid")  # the rows of the samples figure
ANCHORS = {
    ("grid", "GAN (PacGAN Table 1)"): (17.3, 94.8),
    ("grid", "PacGAN4 (PacGAN Table 1)"): (24.8, 93.6),
    ("ring", "GAN (PacGAN Table 1)"): (6.3, 98.2),
    ("ring", "PacGAN4 (PacGAN Table 1)"): (7.8, 95.9),
}


# the data sets and their scores are examples/kale_toys.py's: the ring, the grid and the thin
# spiral (scored against its curve, its 20 segments of equal mass as its modes)
_spec = importlib.util.spec_from_file_location(
    "kale_toys", Path(__file__).resolve().parents[1] / "examples" / "kale_toys.py"
)
assert _spec is not None and _spec.loader is not None
toys = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toys)
make_data = toys.make_data


def held_out_wasserstein(obj: Adversarial, data: Tensor, samples: Tensor) -> float:
    """The critic's estimate of W1 on held-out data and fresh samples (NaN without a
    Wasserstein critic; up to the Lipschitz constant for the clipped WGAN)."""
    if not isinstance(obj, (WGAN, WGANGP)):
        return float("nan")
    with torch.no_grad():
        return float(obj.critic(data).mean() - obj.critic(samples).mean())


def train(
    dataset: str,
    objective: str,
    seed: int,
    iterations: int,
    batch_size: int = 256,
    hidden: int = 256,
    lr: float | None = 1e-3,
    eval_every: int = 800,
    num_scored: int = 2500,
    progress: bool = False,
    critic_hidden: int = 400,
    tilt_warmup: int = 0,
    standardise: bool = False,
    adam_betas: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One run: the generator 2-hidden^3-2 (ReLU, 2-d latent) and the critic
    (2 pack)-critic_hidden^2-1 (LeakyReLU 0.2) from ``torch.manual_seed(seed)``, trained
    for ``iterations`` generator updates by the Trainer, on 100,000 data points, each
    learning rate (``lr`` for the Adam ones; None: the paper's) decaying linearly to 0; the
    curve (MMD^2, high-quality share, held-out W1 estimate) every ``eval_every``
    iterations; 2,500 samples scored at the end, and with ``tilt_warmup`` > 0 (GAN critics)
    2,500 draws tilted by the critic (MALA in the latent space, ``tilted_sample``).

    ``standardise`` trains on the data divided by its standard deviation per coordinate (as
    Gulrajani et al.'s toy experiments do: the grid's is 2.83, the ring's 0.71) and scales the
    samples back before scoring, so the metrics and the W1 estimate are in the data's units;
    ``adam_betas`` overrides the Adam objectives' betas."""
    data = make_data(dataset, 100_000, seed=1000 + seed)
    held_out = make_data(dataset, num_scored, seed=2000 + seed).samples
    scale = float(data.samples.std(0).pow(2).mean().sqrt()) if standardise else 1.0
    pyro.clear_param_store()
    torch.manual_seed(seed)
    generator = Generator(mlp([2, hidden, hidden, hidden, 2]), latent_dim=2, event_shape=(2,))
    name, penalties, ema = parse_adversarial(objective)  # e.g. "gan+r1=0.1+ema=0.999"
    pack = ADVERSARIAL[name][1].get("pack", 1)
    critic = mlp([2 * pack, critic_hidden, critic_hidden, 1], activation=lambda: nn.LeakyReLU(0.2))
    obj = make_adversarial(name, critic, **penalties)
    optimizers: dict[str, Any] = {}
    for role, (cls, kwargs) in obj.default_optimizers.items():
        if lr is not None and cls is torch.optim.Adam:  # WGAN keeps its RMSProp 5e-5
            kwargs = {**kwargs, "lr": lr}
        if adam_betas is not None and cls is torch.optim.Adam:
            kwargs = {**kwargs, "betas": tuple(adam_betas)}
        optimizers[role] = (cls, kwargs)
    curve: dict[str, list[float]] = {"iteration": [], "mmd": [], "wasserstein": [], "hq": []}
    assert data.std is not None and data.centers is not None
    centers = data.centers
    std = data.std

    def evaluate(trainer: Trainer) -> None:
        trainer.decay_learning_rates(trainer.iteration, iterations)  # linearly to 0
        if trainer.iteration % eval_every and trainer.iteration != iterations:
            return
        samples = generator.sample(num_scored)
        curve["iteration"].append(trainer.iteration)
        curve["mmd"].append(mmd(samples * scale, held_out).value)
        curve["hq"].append(mode_coverage(samples * scale, centers, std).high_quality)
        w1 = held_out_wasserstein(obj, held_out / scale, samples)  # in the data's units:
        curve["wasserstein"].append(w1 * scale)

    trainer = Trainer(
        obj, generator, optimizers=optimizers, callback=evaluate, progress=progress, ema=ema
    )
    start = time.perf_counter()
    trainer.fit(data.samples / scale, iterations, batch_size, seed=seed)
    seconds = time.perf_counter() - start
    samples = generator.sample(num_scored) * scale
    groups = toys.num_modes(dataset, data)
    scores = toys.score(samples, data, held_out, groups)
    tilted: dict[str, Any] | None = None
    if tilt_warmup > 0 and objective in ("gan", "gan-minimax"):
        start = time.perf_counter()
        out = tilted_sample(
            generator.net,
            critic,
            num_scored,
            generator.latent_dim,
            num_warmup=tilt_warmup,
            generator=torch.Generator().manual_seed(seed),
        )
        tilted_x = out.x * scale
        tilted = {
            **toys.score(tilted_x, data, held_out, groups),
            "acceptance": out.acceptance,
            "warmup": tilt_warmup,
            "seconds": time.perf_counter() - start,
            "samples": tilted_x.tolist(),
        }
    return {
        "dataset": dataset,
        "objective": objective,
        "seed": seed,
        "iterations": iterations,
        "standardised": standardise,
        "adam_betas": adam_betas,
        "seconds": seconds,
        **scores,
        "num_modes": groups,
        "curve": curve,
        "samples": samples.tolist(),
        "centers": toys.plotted_centers(dataset, data),
        "tilted": tilted,
    }


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    path = Path(spec.pop("path"))
    run = train(progress=False, **spec)
    if spec["seed"]:  # seed 0's samples are kept for the figure
        run.pop("samples")
        if run.get("tilted"):
            run["tilted"].pop("samples")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run))
    os.replace(tmp, path)
    return run


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _w1_spearman(run: dict[str, Any], against: str = "mmd") -> float:
    """Spearman's correlation of the critic's held-out W1 estimate with the curve's
    ``against`` (``"mmd"`` or ``"hq"``) over one run's evaluations after the first (NaN
    without a Wasserstein critic or with under 3 points)."""
    w1, other = run["curve"]["wasserstein"][1:], run["curve"][against][1:]
    return spearman(w1, other) if len(w1) >= 3 else math.nan


def summarise(runs: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    rows = []
    cells = sorted(
        {(r["dataset"], r["objective"], r["iterations"]) for r in runs},
        key=lambda c: (c[0], objectives.index(c[1]) if c[1] in objectives else 99, c[2]),
    )
    for dataset, obj, iters in cells:
        rs = [
            r
            for r in runs
            if (r["dataset"], r["objective"], r["iterations"]) == (dataset, obj, iters)
        ]
        row: dict[str, Any] = {"dataset": dataset, "objective": obj, "seeds": len(rs)}
        for key in ("modes", "high_quality", "reverse_kl", "mmd", "seconds"):
            vals = [float(r[key]) * (100 if key == "high_quality" else 1) for r in rs]
            row[key], row[key + "_se"] = _mean_se(vals)
        row["all_modes_runs"] = sum(r["modes"] == r["num_modes"] for r in rs)
        row["num_modes"] = rs[0]["num_modes"]
        row["iterations"] = rs[0]["iterations"]
        rhos = [_w1_spearman(r) for r in rs]
        if all(math.isfinite(v) for v in rhos):  # a Wasserstein critic's runs
            row["spearman_w1_mmd"] = rhos
            row["spearman_w1_hq"] = [_w1_spearman(r, "hq") for r in rs]
            half = [r["curve"]["hq"][len(r["curve"]["hq"]) // 2] for r in rs]
            row["hq_half_budget"] = 100 * sum(half) / len(half)  # is it still improving?
            row["evaluations"] = len(rs[0]["curve"]["iteration"])
        rows.append(row)
        tilted = [r for r in rs if r.get("tilted")]
        if tilted:  # the same runs' generators, tilted by their critics
            row = {"dataset": dataset, "objective": f"{obj} + critic tilt"}
            row["seeds"] = len(tilted)
            for key in ("modes", "high_quality", "reverse_kl", "mmd", "seconds"):
                vals = [float(r["tilted"][key]) for r in tilted]
                if key == "high_quality":
                    vals = [100 * v for v in vals]
                if key == "seconds":  # training plus sampling
                    vals = [v + float(r["seconds"]) for v, r in zip(vals, tilted, strict=True)]
                row[key], row[key + "_se"] = _mean_se(vals)
            row["all_modes_runs"] = sum(r["tilted"]["modes"] == r["num_modes"] for r in tilted)
            row["num_modes"] = tilted[0]["num_modes"]
            row["iterations"] = tilted[0]["iterations"]
            row["acceptance"] = _mean_se([r["tilted"]["acceptance"] for r in tilted])[0]
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Mode coverage on the PacGAN ring and grid",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`.",
        f"Seeds per cell: {meta['seeds']} planned, the 'seeds' column says how many ran; "
        "2,500 samples scored per run; mean +- standard error over seeds. 'all modes' counts "
        "the seeds that captured every mode.",
        "",
        "| data | objective | generator iters | seeds | modes | high quality % | reverse KL "
        "| MMD^2 | all modes | s/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['objective']} | {r['iterations']} | {r['seeds']} | "
            f"{r['modes']:.1f} +- {r['modes_se']:.1f} / {r['num_modes']} | "
            f"{r['high_quality']:.1f} +- {r['high_quality_se']:.1f} | "
            f"{r['reverse_kl']:.3f} +- {r['reverse_kl_se']:.3f} | {r['mmd']:.1e} | "
            f"{r['all_modes_runs']}/{r['seeds']} | {r['seconds']:.0f} |"
        )
    for (dataset, name), (modes, hq) in ANCHORS.items():
        lines.append(f"| {dataset} | {name} | | | {modes} | {hq} | | | | |")
    tracked = [r for r in rows if "spearman_w1_mmd" in r]
    if tracked:
        lines += [
            "",
            "## Does the critic's W1 estimate track sample quality? (every run)",
            "",
            "Spearman's correlation, per run, of the critic's W1 estimate (2,500 held-out data "
            "against 2,500 fresh samples) with MMD^2 to the held-out data, over each run's "
            "evaluations after the first (before the critic's first fit), and with the share "
            "of high-quality samples. Tracking: positive with MMD^2 (the estimate falls as the "
            "samples near the data), negative with the high-quality share.",
            "",
            "| data | objective | generator iters | evaluations | Spearman(W1, MMD^2) per seed "
            "| mean +- se | positive | Spearman(W1, HQ) mean +- se | negative "
            "| HQ % at half budget -> end |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in tracked:
            rhos, hq = r["spearman_w1_mmd"], r["spearman_w1_hq"]
            mean, se = _mean_se(rhos)
            hq_mean, hq_se = _mean_se(hq)
            lines.append(
                f"| {r['dataset']} | {r['objective']} | {r['iterations']} | "
                f"{r['evaluations']} | {', '.join(f'{v:.2f}' for v in rhos)} | "
                f"{mean:.2f} +- {se:.2f} | {sum(v > 0 for v in rhos)}/{len(rhos)} | "
                f"{hq_mean:.2f} +- {hq_se:.2f} | {sum(v < 0 for v in hq)}/{len(hq)} | "
                f"{r['hq_half_budget']:.1f} -> {r['high_quality']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objectives", default="pacgan2,gan,hinge,wgan,wgan-gp")
    p.add_argument("--datasets", default="grid,ring")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--iterations", type=int, default=8000)
    p.add_argument("--wgan-iterations", type=int, default=1600)
    p.add_argument("--hidden", type=int, default=256, help="generator width (3 layers)")
    p.add_argument("--critic-hidden", type=int, default=400, help="critic width (2 layers)")
    p.add_argument(
        "--lr", default="grid=1e-3,ring=3e-4,spiral=3e-4", help="Adam learning rate per data set"
    )
    p.add_argument("--adam-betas", default=None, help="Adam objectives' betas, e.g. 0.5,0.9")
    p.add_argument(
        "--standardise",
        action="store_true",
        help="train on the data divided by its sd per coordinate (Gulrajani et al.'s toys)",
    )
    p.add_argument("--evaluations", type=int, default=10, help="curve points per run")
    p.add_argument(
        "--curve-iterations",
        type=int,
        default=3000,
        help="generator iterations of the WGAN/WGAN-GP runs (seed 0) for the W1-vs-MMD figure",
    )
    p.add_argument(
        "--curve-evals", type=int, default=40, help="evaluations in those runs (0: none)"
    )
    p.add_argument(
        "--curve-objectives", default="wgan,wgan-gp", help="the objectives of those runs"
    )
    p.add_argument(
        "--tilt-warmup",
        type=int,
        default=200,
        help="MALA warm-up transitions of the critic-tilted GAN samples (0: none)",
    )
    p.add_argument(
        "--longer",
        default="ring:pacgan2:16000,grid:gan:16000",
        help="extra cells dataset:objective:iterations, comma-separated, e.g. longer runs",
    )
    p.add_argument(
        "--name", default="gan_modes", help="file names of the results (NAME.json, NAME.md...)"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work", default=None, help="default benchmarks/runs/gan_modes")
    p.add_argument("--out", default=None, help="default benchmarks/results")
    p.add_argument(
        "--summarise-only",
        action="store_true",
        help="write the table from the runs already in --work, running none",
    )
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args()
    if args.smoke_test:
        args.seeds, args.iterations, args.wgan_iterations, args.workers = 2, 20, 5, 1
        args.curve_iterations, args.curve_evals, args.longer = 10, 5, "ring:pacgan2:40"
        tmp = tempfile.mkdtemp()
        args.work = args.work or os.path.join(tmp, "work")
        args.out = args.out or os.path.join(tmp, "out")
    args.work = args.work or "benchmarks/runs/gan_modes"
    args.out = args.out or "benchmarks/results"
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    objectives = args.objectives.split(",")
    lrs = {k: float(v) for k, v in (item.split("=") for item in args.lr.split(","))}
    betas = tuple(float(b) for b in args.adam_betas.split(",")) if args.adam_betas else None
    if betas is not None and len(betas) != 2:
        p.error(f"--adam-betas takes two numbers, got {args.adam_betas!r}")
    jobs, runs = [], []

    def spec(
        dataset: str,
        obj: str,
        seed: int,
        iters: int,
        lr: float | None,
        tilt: int,
        every: int,
        path: Path,
    ) -> dict[str, Any]:
        """One run's arguments for ``_job`` (lr None: the papers' optimisers)."""
        job = {"dataset": dataset, "objective": obj, "seed": seed, "iterations": iters}
        job |= {"hidden": args.hidden, "critic_hidden": args.critic_hidden, "lr": lr}
        job |= {"tilt_warmup": tilt, "eval_every": max(1, every), "path": str(path)}
        job |= {"standardise": args.standardise, "adam_betas": betas}
        if args.smoke_test:
            job |= {"hidden": 16, "critic_hidden": 16, "num_scored": 200, "batch_size": 64}
        return job

    cells = [
        (dataset, obj, args.wgan_iterations if obj.startswith("wgan") else args.iterations)
        for dataset in args.datasets.split(",")
        for obj in objectives
    ]
    for item in args.longer.split(",") if args.longer else []:
        dataset, obj, iters = item.split(":")
        cells.append((dataset, obj, int(iters)))
    for seed in range(args.seeds):
        for dataset, obj, iters in cells:
            config = f"{iters}-g{args.hidden}-c{args.critic_hidden}-lr{lrs[dataset]:g}"
            tilt = args.tilt_warmup if obj == "gan" else 0
            config += f"-t{tilt}" if tilt else ""
            config += "-std" if args.standardise else ""
            config += f"-b{betas[0]:g},{betas[1]:g}" if betas else ""
            config += f"-e{args.evaluations}" if args.evaluations != 10 else ""
            path = work / f"{dataset}-{obj}-{seed}-{config}.json"
            if path.exists():
                runs.append(json.loads(path.read_text()))
                continue
            every = iters // args.evaluations
            jobs.append(spec(dataset, obj, seed, iters, lrs[dataset], tilt, every, path))
    # Claim (c): longer Wasserstein runs, evaluated often, at the papers' optimisers.
    curves: list[dict[str, Any]] = []
    for dataset in args.datasets.split(",") if args.curve_evals > 0 else []:
        for obj in args.curve_objectives.split(","):
            iters = args.curve_iterations
            suffix = "-std" if args.standardise else ""
            suffix += f"-b{betas[0]:g},{betas[1]:g}" if betas else ""
            path = work / f"{dataset}-{obj}-curve-{iters}-e{args.curve_evals}{suffix}.json"
            if path.exists():
                curves.append(json.loads(path.read_text()))
                continue
            evals = iters // args.curve_evals
            jobs.append(spec(dataset, obj, 0, iters, None, 0, evals, path))
    print(f"{len(runs)} runs found in {work}, {len(jobs)} to do", flush=True)
    if args.summarise_only:
        jobs = []
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for i, run in enumerate(pool.map(_job, jobs)):
            is_curve = "curve-" in Path(jobs[i]["path"]).name
            (curves if is_curve else runs).append(run)
            print(
                f"[{i + 1}/{len(jobs)} {time.perf_counter() - start:.0f}s] {run['dataset']} "
                f"{run['objective']} seed {run['seed']}: {run['modes']}/{run['num_modes']} modes, "
                f"{100 * run['high_quality']:.1f}% HQ",
                flush=True,
            )
    rows = summarise(runs, objectives)
    meta = {
        "machine": f"{machine()}; {args.workers} worker processes of 1 thread",
        "command": "python benchmarks/gan_modes.py " + " ".join(sys.argv[1:]),
        "seeds": args.seeds,
        "seeds_done": {f"{r['dataset']}/{r['objective']}": r["seeds"] for r in rows},
        "iterations": args.iterations,
        "wgan_iterations": args.wgan_iterations,
        "generator_hidden": args.hidden,
        "critic_hidden": args.critic_hidden,
        "adam_lr": lrs,
        "adam_betas": betas,
        "standardised": args.standardise,
    }
    curve_rows = [
        {
            "dataset": r["dataset"],
            "objective": r["objective"],
            "iterations": r["iterations"],
            "evaluations": len(r["curve"]["iteration"]),
            "spearman_w1_mmd": spearman(r["curve"]["wasserstein"][1:], r["curve"]["mmd"][1:]),
            "w1_first_last": [r["curve"]["wasserstein"][1], r["curve"]["wasserstein"][-1]],
            "mmd_first_last": [r["curve"]["mmd"][1], r["curve"]["mmd"][-1]],
            "modes": r["modes"],
            "high_quality": r["high_quality"],
        }
        for r in curves
    ]
    text = markdown(rows, meta)
    if curve_rows:
        text += (
            "\n## Claim (c): the critic's W1 estimate against MMD^2 through training\n\n"
            f"Seed 0, {args.curve_iterations} generator iterations (5 critic steps each), the "
            "papers' optimisers (WGAN RMSProp 5e-5, clip 0.01; WGAN-GP Adam 1e-4, betas "
            f"{betas or (0, 0.9)}, penalty 10 unless the name says +gp=)"
            f"{', on standardised data' if args.standardise else ''}, {args.curve_evals} "
            "evaluations; W1 estimated by the critic on 2,500 held-out data and 2,500 fresh "
            f"samples. Figure: {args.name}_wasserstein_mmd.png.\n\n"
            "| data | objective | Spearman(W1, MMD^2) | W1 estimate first -> last "
            "| MMD^2 first -> last | modes | HQ % |\n|---|---|---|---|---|---|---|\n"
        )
        for c in curve_rows:
            text += (
                f"| {c['dataset']} | {c['objective']} | {c['spearman_w1_mmd']:.2f} | "
                f"{c['w1_first_last'][0]:.3g} -> {c['w1_first_last'][1]:.3g} | "
                f"{c['mmd_first_last'][0]:.2e} -> {c['mmd_first_last'][1]:.2e} | "
                f"{c['modes']} | {100 * c['high_quality']:.1f} |\n"
            )
    (out / f"{args.name}.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": rows,
                "anchors": {f"{d}/{n}": v for (d, n), v in ANCHORS.items()},
                "wasserstein_curves": curve_rows,
            },
            indent=1,
        )
    )
    (out / f"{args.name}.md").write_text(text)

    first = [r for r in runs if r["seed"] == 0 and "samples" in r]
    if first:
        plot_mode_samples(first, out / f"{args.name}_samples.png", objectives, DATASETS)
    # The W1-vs-MMD^2 figure: the dedicated curve runs, or else seed 0's runs of the cells
    # with a Wasserstein critic (the function keeps the runs whose W1 estimate is finite).
    tracked_runs = curves or [r for r in runs if r["seed"] == 0]
    plot_wasserstein_mmd(tracked_runs, out / f"{args.name}_wasserstein_mmd.png")
    print(text)


if __name__ == "__main__":
    main()
