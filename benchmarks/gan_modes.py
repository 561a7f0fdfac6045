"""Mode coverage of GAN, WGAN, WGAN-GP, hinge and PacGAN2 on the PacGAN ring and grid.

Every (data set, objective, seed) run is ``examples/gan_mixtures.py``'s ``train`` with the
same networks (by default generator 2-256-256-256-2 ReLU, critic 400-400 LeakyReLU(0.2)),
batch 256, Adam for the Adam objectives at a learning rate per data set (1e-3 on the grid,
3e-4 on the ring, where 1e-3 collapsed GAN and hinge to one point; WGAN keeps the paper's
RMSProp 5e-5 and clip 0.01), each learning rate decaying linearly to 0; the WGANs run
``--wgan-iterations`` generator steps with 5 critic steps each. 2,500 samples are scored
per run (modes captured, share within 3 sigma, reverse KL of the mode histogram). Runs go
to ``--work`` one JSON each, so a stopped benchmark resumes where it was; ``--workers``
processes share the jobs.

    .venv/bin/python benchmarks/gan_modes.py            # ~110 min on 2 cores
    .venv/bin/python benchmarks/gan_modes.py --smoke-test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

# The anchors: PacGAN (Lin et al. 2018), Table 1: modes (of 25 / 8) and % high quality.
ANCHORS = {
    ("grid", "GAN (PacGAN Table 1)"): (17.3, 94.8),
    ("grid", "PacGAN4 (PacGAN Table 1)"): (24.8, 93.6),
    ("ring", "GAN (PacGAN Table 1)"): (6.3, 98.2),
    ("ring", "PacGAN4 (PacGAN Table 1)"): (7.8, 95.9),
}


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from gan_mixtures import train

    path = Path(spec.pop("path"))
    run = train(progress=False, **spec)
    run.pop("samples") if spec["seed"] else None
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


def summarise(runs: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    rows = []
    for dataset in ("grid", "ring"):
        for obj in objectives:
            rs = [r for r in runs if r["dataset"] == dataset and r["objective"] == obj]
            if not rs:
                continue
            row: dict[str, Any] = {"dataset": dataset, "objective": obj, "seeds": len(rs)}
            for key in ("modes", "high_quality", "reverse_kl", "mmd", "seconds"):
                vals = [float(r[key]) * (100 if key == "high_quality" else 1) for r in rs]
                row[key], row[key + "_se"] = _mean_se(vals)
            row["all_modes_runs"] = sum(r["modes"] == r["num_modes"] for r in rs)
            row["num_modes"] = rs[0]["num_modes"]
            row["iterations"] = rs[0]["iterations"]
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
    p.add_argument("--lr", default="grid=1e-3,ring=3e-4", help="Adam learning rate per data set")
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
        tmp = tempfile.mkdtemp()
        args.work = args.work or os.path.join(tmp, "work")
        args.out = args.out or os.path.join(tmp, "out")
    args.work = args.work or "benchmarks/runs/gan_modes"
    args.out = args.out or "benchmarks/results"
    from pyrogen.machine import machine

    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    objectives = args.objectives.split(",")
    lrs = {k: float(v) for k, v in (item.split("=") for item in args.lr.split(","))}
    jobs, runs = [], []
    for seed in range(args.seeds):
        for dataset in args.datasets.split(","):
            for obj in objectives:
                iters = args.wgan_iterations if obj.startswith("wgan") else args.iterations
                config = f"{iters}-g{args.hidden}-c{args.critic_hidden}-lr{lrs[dataset]:g}"
                path = work / f"{dataset}-{obj}-{seed}-{config}.json"
                if path.exists():
                    runs.append(json.loads(path.read_text()))
                    continue
                spec = {
                    "dataset": dataset,
                    "objective": obj,
                    "seed": seed,
                    "iterations": iters,
                    "hidden": args.hidden,
                    "critic_hidden": args.critic_hidden,
                    "lr": lrs[dataset],
                    "eval_every": max(1, iters // 10),
                    "path": str(path),
                }
                if args.smoke_test:
                    spec |= {"hidden": 16, "critic_hidden": 16, "num_scored": 200}
                    spec |= {"batch_size": 64}
                jobs.append(spec)
    print(f"{len(runs)} runs found in {work}, {len(jobs)} to do", flush=True)
    if args.summarise_only:
        jobs = []
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for i, run in enumerate(pool.map(_job, jobs)):
            runs.append(run)
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
    }
    (out / "gan_modes.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": rows,
                "anchors": {f"{d}/{n}": v for (d, n), v in ANCHORS.items()},
            },
            indent=1,
        )
    )
    (out / "gan_modes.md").write_text(markdown(rows, meta))
    from gan_mixtures import plot_samples, plot_wasserstein_mmd

    first = [r for r in runs if r["seed"] == 0 and "samples" in r]
    if first:
        plot_samples(first, out / "gan_modes_samples.png")
        plot_wasserstein_mmd(first, out / "gan_modes_wasserstein_mmd.png")
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
