"""KALE on the PacGAN ring and grid and a thin spiral: the base generator against its GEBM.

Every (data set, seed) run is ``train`` of ``examples/kale_toys.py`` (the data, networks and
scores of ``benchmarks/gan_modes.py``: generator 2-256-256-256-2 ReLU, energy 2-400-400-1
LeakyReLU(0.2), batch 256, 100,000 training points, 2,500 samples scored by modes captured,
share within 3 sigma, reverse KL of the mode histogram and MMD^2 to held-out data;
``--datasets spiral`` adds the thin spiral, scored by its segments and the share within 3
sigma of its curve): KALE's joint phase (the paper's gradient penalty 1 and energy schedule,
Adam betas (0.5, 0.999) at the learning rate per data set, decaying linearly to 0), then
energy-only steps on the fixed base at a weaker penalty, then 2,500 draws of the base and
2,500 of the GEBM (kinetic Langevin in the latent space, one chain per draw). Runs go to
``--work``, one JSON each, so a stopped benchmark resumes where it was, with the networks
after the joint phase (shared by every energy-only phase and sampler tried after it, so
that those are compared on one joint phase and cost minutes) and at the end. The GAN rows quoted
for comparison are read from the committed ``results/gan_modes.json``.

    .venv/bin/python benchmarks/kale.py                # about 35 min on one core
    .venv/bin/python benchmarks/kale.py --smoke-test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pyrogen.machine import machine

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kale_toys", ROOT / "examples" / "kale_toys.py")
assert _spec is not None and _spec.loader is not None
toys = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toys)

# the goal: GEBM above its base on HQ and MMD, every mode, and this HQ share, per seed (the
# spiral has none)
GOAL_HQ = {"grid": 98.0, "ring": 97.0}
# the GAN rows quoted beside KALE's: (file in results/, data set, objective, iterations)
GAN_ROWS = (
    ("gan_modes", "grid", "gan + critic tilt", 8000),
    ("gan_modes", "grid", "gan + critic tilt", 16000),
    ("gan_modes", "ring", "pacgan2", 8000),
    ("gan_modes", "ring", "pacgan2", 16000),
    ("gan_modes_spiral", "spiral", "gan", 16000),
    ("gan_modes_spiral", "spiral", "gan + critic tilt", 16000),
    ("gan_modes_spiral", "spiral", "pacgan2", 16000),
)


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def gebm_keys(run: dict[str, Any]) -> list[str]:
    """The run's GEBM entries: ``gebm`` (beta 1), then colder ones in the order sampled, then
    the GEBM by resampling (``gebm_sir``)."""
    keys = [k for k in run if k == "gebm" or k.startswith("gebm_beta")]
    return keys + (["gebm_sir"] if "gebm_sir" in run else [])


def model_name(run: dict[str, Any], key: str) -> str:
    if key == "gebm_sir":
        return "GEBM by resampling"
    return "GEBM" if key == "gebm" else f"GEBM, beta {run[key]['beta']:g}"


def meets_goal(run: dict[str, Any], key: str = "gebm") -> bool | None:
    """Whether the run's GEBM meets the goal; None on a data set without one."""
    if run["dataset"] not in GOAL_HQ:
        return None
    base, gebm = run["base"], run[key]
    return (
        gebm["high_quality"] > base["high_quality"]
        and gebm["mmd"] < base["mmd"]
        and gebm["modes"] == run["num_modes"]
        and 100 * gebm["high_quality"] >= GOAL_HQ[run["dataset"]]
    )


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for dataset in sorted({r["dataset"] for r in runs}):
        rs = sorted((r for r in runs if r["dataset"] == dataset), key=lambda r: r["seed"])
        keys = ["base", *gebm_keys(rs[0])]
        if all("data" in r for r in rs):  # a second held-out set: the metrics' ceiling
            keys.insert(0, "data")
        for key in keys:
            name = {"base": "KALE base generator", "data": "held-out data (ceiling)"}.get(key)
            name = name or model_name(rs[0], key)
            row: dict[str, Any] = {"dataset": dataset, "model": name, "seeds": len(rs)}
            for metric in ("modes", "high_quality", "reverse_kl", "mmd"):
                vals = [
                    float(r[key][metric]) * (100 if metric == "high_quality" else 1) for r in rs
                ]
                row[metric], row[metric + "_se"] = _mean_se(vals)
                row[metric + "_per_seed"] = vals
            row["all_modes_runs"] = sum(r[key]["modes"] == r["num_modes"] for r in rs)
            row["num_modes"] = rs[0]["num_modes"]
            row["iterations"] = rs[0]["iterations"]
            row["refine_steps"] = rs[0]["refine_steps"]
            # medians: a run's clock also counts any time its process was stopped or shared
            row["train_seconds"] = statistics.median(r["seconds"] for r in rs)
            row["sample_seconds_per_1000"] = statistics.median(
                1000 * r[key].get("seconds", 0.0) / r["num_scored"] for r in rs
            )
            if key not in ("base", "data"):
                row["sampler_steps"] = rs[0][key].get("sampler_steps")
                row["step_size"] = rs[0][key].get("step_size")
                row["ess"] = statistics.median(r[key].get("ess", math.nan) for r in rs)
                row["beats_base_hq"] = sum(
                    r[key]["high_quality"] > r["base"]["high_quality"] for r in rs
                )
                row["beats_base_mmd"] = sum(r[key]["mmd"] < r["base"]["mmd"] for r in rs)
                row["beats_base_both"] = sum(
                    r[key]["high_quality"] > r["base"]["high_quality"]
                    and r[key]["mmd"] < r["base"]["mmd"]
                    for r in rs
                )
                goals = [meets_goal(r, key) for r in rs]
                row["goal_runs"] = None if None in goals else sum(map(bool, goals))
            rows.append(row)
    return rows


def gan_rows(results: Path, kale_seconds: dict[str, float]) -> list[dict[str, Any]]:
    """The quoted GAN rows of the data sets KALE ran on, each marked equal-wall-time when
    its seconds per run are within a third of KALE's on that data set (training plus 2,500
    GEBM draws)."""
    quoted = []
    for name, dataset, objective, iters in GAN_ROWS:
        path = results / f"{name}.json"
        if dataset not in kale_seconds or not path.exists():
            continue
        for r in json.loads(path.read_text())["rows"]:
            if (r["dataset"], r["objective"], r["iterations"]) == (dataset, objective, iters):
                row = {k: r[k] for k in ("dataset", "objective", "iterations", "seeds")}
                row |= {k: r[k] for k in ("modes", "high_quality", "mmd", "seconds")}
                row["all_modes_runs"] = r["all_modes_runs"]
                ours = kale_seconds.get(dataset)
                row["equal_wall_time"] = bool(ours and abs(r["seconds"] / ours - 1) <= 1 / 3)
                quoted.append(row)
    return quoted


def markdown(rows: list[dict[str, Any]], quoted: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# KALE and its GEBM on the PacGAN ring and grid and a thin spiral",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`.",
        f"Settings: {meta['settings']}.",
        "2,500 samples scored per run; mean +- standard error over seeds; 'all modes' counts "
        "the seeds that captured every mode; 'goal' the seeds where the GEBM beats its base "
        "on HQ and MMD^2, captures every mode and reaches "
        f"{GOAL_HQ['grid']:.0f} % HQ (grid) / {GOAL_HQ['ring']:.0f} % (ring); the spiral "
        "has no goal, its modes are 20 segments of equal mass and its HQ the share within 3 "
        "sigma of its curve; the held-out data row scores a second held-out set, the "
        "ceiling. "
        "s/run: training (joint phase and energy-only steps); s/run and sampling seconds are "
        "medians over seeds.",
        "",
        "| data | model | joint iters + energy-only | seeds | modes | high quality % "
        "| reverse KL | MMD^2 | all modes | GEBM > base on HQ / MMD / both | goal | s/run "
        "| sampling s per 1,000 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gebm = r["model"].startswith("GEBM")
        beats = (
            f"{r['beats_base_hq']} / {r['beats_base_mmd']} / {r['beats_base_both']}" if gebm else ""
        )
        goal = f"{r['goal_runs']}/{r['seeds']}" if gebm else ""
        goal = "-" if gebm and r["goal_runs"] is None else goal
        cost = (
            f"{r['sample_seconds_per_1000']:.2f}" if r["model"] != "held-out data (ceiling)" else ""
        )
        if gebm and r["sampler_steps"] is None:
            cost += f" (resampling, ESS {r['ess']:,.0f})"
        elif gebm:
            cost += f" ({r['sampler_steps']} steps of {r['step_size']:g})"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['iterations']} + {r['refine_steps']} | "
            f"{r['seeds']} | {r['modes']:.1f} +- {r['modes_se']:.1f} / {r['num_modes']} | "
            f"{r['high_quality']:.1f} +- {r['high_quality_se']:.1f} | "
            f"{r['reverse_kl']:.3f} +- {r['reverse_kl_se']:.3f} | "
            f"{r['mmd']:.1e} +- {r['mmd_se']:.1e} | {r['all_modes_runs']}/{r['seeds']} | "
            f"{beats} | {goal} | {r['train_seconds']:.0f} | {cost} |"
        )
    lines += ["", "Per seed (high quality %, base -> GEBM; MMD^2 base -> GEBM):", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        base = next(r for r in rows if r["dataset"] == dataset and r["model"].startswith("KALE"))
        for gebm in (r for r in rows if r["dataset"] == dataset and r["model"].startswith("GEBM")):
            pairs = zip(
                base["high_quality_per_seed"],
                gebm["high_quality_per_seed"],
                base["mmd_per_seed"],
                gebm["mmd_per_seed"],
                strict=True,
            )
            cells = [f"{a:.1f} -> {b:.1f} ({c:.1e} -> {d:.1e})" for a, b, c, d in pairs]
            lines.append(f"- {dataset}, {gebm['model']}: " + "; ".join(cells))
    if quoted:
        lines += [
            "",
            "## GAN rows of `benchmarks/gan_modes.py`, for comparison",
            "",
            "Read from `results/gan_modes.json` (ring, grid) and `results/gan_modes_spiral.json` "
            "(spiral; modes: its 20 segments), 5 seeds, 2 worker processes of 1 thread. "
            "'equal wall time': that row's seconds per run are within a third of KALE's on the "
            "same data set; the machines were shared and differently loaded, so this is rough.",
            "",
            "| data | objective | iters | modes | high quality % | MMD^2 | all modes | s/run "
            "| equal wall time |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for q in quoted:
            lines.append(
                f"| {q['dataset']} | {q['objective']} | {q['iterations']} | {q['modes']:.1f} | "
                f"{q['high_quality']:.1f} | {q['mmd']:.1e} | {q['all_modes_runs']}/{q['seeds']} "
                f"| {q['seconds']:.0f} | {'yes' if q['equal_wall_time'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def add_resampled(run: dict[str, Any], path: Path, **kwargs: Any) -> dict[str, Any]:
    """Adds the GEBM by resampling to a run saved without it, from its saved networks
    (``kwargs``: the sizes they were built with, passed to ``fit``)."""
    state = path.with_suffix(".pt")
    if "gebm_sir" in run or not state.exists():
        return run
    fitted = toys.fit(
        run["dataset"],
        run["seed"],
        run["iterations"],
        num_held_out=run["num_scored"],
        progress=False,
        state=state,
        **{k: v for k, v in kwargs.items() if k in ("hidden", "energy_hidden", "batch_size")},
    )
    run["gebm_sir"] = toys.resampled(fitted, run["num_scored"], run["seed"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run))
    os.replace(tmp, path)
    return run


def _job(spec: dict[str, Any], path: Path) -> dict[str, Any]:
    # the joint phase is shared by every energy-only phase and sampler tried after it
    joint = path.parent / f"{spec['dataset']}-{spec['seed']}-{spec['iterations']}.joint.pt"
    run = toys.train(progress=False, save=path.with_suffix(".pt"), joint=joint, **spec)
    run["num_scored"] = spec.get("num_scored", 2500)
    for key in ["base", *gebm_keys(run)]:  # seed 0's samples are kept for the figure
        if run["seed"] or key.startswith("gebm_beta"):
            run[key].pop("samples", None)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run))
    os.replace(tmp, path)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="grid,ring")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--iterations", type=int, default=1500, help="joint KALE iterations")
    p.add_argument("--refine-steps", type=int, default=1000, help="energy-only steps")
    p.add_argument("--refine-penalty", type=float, default=0.001)
    p.add_argument("--sampler-steps", type=int, default=200, help="kinetic Langevin steps")
    p.add_argument("--step-size", type=float, default=0.03)
    p.add_argument(
        "--betas",
        default="1",
        help="comma-separated beta of the sampled GEBM p(z) exp(-beta E(G(z))); 1 is the model, "
        "larger is colder (each from the same trained networks)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default=None, help="default benchmarks/runs/kale")
    p.add_argument("--out", default=None, help="default benchmarks/results")
    p.add_argument("--summarise-only", action="store_true", help="write the tables only")
    p.add_argument("--name", default="kale", help="stem of the result files")
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    small: dict[str, Any] = {}
    if args.smoke_test:
        args.seeds, args.iterations, args.refine_steps, args.sampler_steps = 2, 4, 3, 5
        small = {"hidden": 16, "energy_hidden": 16, "batch_size": 64, "num_scored": 200}
        small |= {"warmup_steps": 2}
        tmp = tempfile.mkdtemp()
        args.work = args.work or os.path.join(tmp, "work")
        args.out = args.out or os.path.join(tmp, "out")
    work = Path(args.work or ROOT / "benchmarks" / "runs" / "kale")
    out = Path(args.out or ROOT / "benchmarks" / "results")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    betas = tuple(float(b) for b in args.betas.split(","))
    if 1.0 not in betas:
        betas = (1.0, *betas)  # the model itself is always scored
    config = (
        f"{args.iterations}-r{args.refine_steps}-p{args.refine_penalty:g}"
        f"-s{args.sampler_steps}-h{args.step_size:g}"
    )
    if betas != (1.0,):
        config += "-b" + "_".join(f"{b:g}" for b in betas)
    runs, todo = [], []
    for seed in range(args.seeds):
        for dataset in args.datasets.split(","):
            path = work / f"{dataset}-{seed}-{config}.json"
            if path.exists():
                runs.append(add_resampled(json.loads(path.read_text()), path, **small))
            else:
                todo.append((dataset, seed, path))
    print(f"{len(runs)} runs found in {work}, {len(todo)} to do", flush=True)
    start = time.perf_counter()
    for i, (dataset, seed, path) in enumerate([] if args.summarise_only else todo):
        spec = {"dataset": dataset, "seed": seed, "iterations": args.iterations}
        spec |= {"refine_steps": args.refine_steps, "refine_penalty": args.refine_penalty}
        spec |= {"sampler_steps": args.sampler_steps, "step_size": args.step_size, **small}
        spec["betas"] = betas
        run = _job(spec, path)
        runs.append(run)
        b, g = run["base"], run["gebm"]
        print(
            f"[{i + 1}/{len(todo)} {time.perf_counter() - start:.0f}s] {dataset} seed {seed}: "
            f"base {b['modes']}/{run['num_modes']} {100 * b['high_quality']:.1f}% HQ "
            f"MMD^2 {b['mmd']:.1e}; GEBM {g['modes']} {100 * g['high_quality']:.1f}% "
            f"MMD^2 {g['mmd']:.1e}",
            flush=True,
        )
    if not runs:
        return
    rows = summarise(runs)
    kale_seconds = {
        r["dataset"]: r["train_seconds"] + 2.5 * r["sample_seconds_per_1000"]
        for r in rows
        if r["model"] == "GEBM"
    }
    quoted = gan_rows(ROOT / "benchmarks" / "results", kale_seconds)
    meta = {
        "machine": f"{machine()}; one process, shared with other jobs",
        "command": "python benchmarks/kale.py " + " ".join(sys.argv[1:]),
        "settings": (
            f"{args.iterations} joint KALE iterations (penalty 1, 5 energy steps, 100 at the "
            "start and every 500; Adam betas (0.5, 0.999), lr grid 1e-3 / ring and spiral 3e-4 "
            f"decaying linearly), then {args.refine_steps} energy-only steps at penalty "
            f"{args.refine_penalty:g} (Adam 1e-4); GEBM: kinetic Langevin, "
            f"{args.sampler_steps} steps of {args.step_size:g}, friction 1, at beta "
            + ", ".join(f"{b:g}" for b in betas)
        ),
        "seeds": args.seeds,
        "threads": args.threads,
    }
    text = markdown(rows, quoted, meta)
    (out / f"{args.name}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "gan_rows": quoted}, indent=1)
    )
    (out / f"{args.name}.md").write_text(text)
    first = [r for r in runs if r["seed"] == 0 and "samples" in r["base"]]
    if first:
        toys.plot_mode_samples(
            toys.figure_runs(first), out / f"{args.name}_samples.png", None, toys.DATASETS
        )
    print(text)


if __name__ == "__main__":
    main()
