"""Everything pyrogen measures on a GPU, in one run of a few minutes.

1. The CUDA tests (``tests/test_cuda.py`` on both devices, and every other test whose name
   says cuda), their log kept beside the results.
2. The training-step table of ``renyi_speed.py`` on the GPU (the same VAE 784-400-50, K = 1
   and 5, hand-written PyTorch vs Pyro vs pyrogen through SVI and as a module) at batch 128
   and 1024, and the peak GPU memory of one step of each, and of ``log_likelihood`` at
   K = 5000 (1,000 particles at a time, and all 5,000 at once).
3. HMC throughput for 10,000 (and 100,000 and 1,000,000) chains of a 64-d latent under a
   64-256-256-1 SiLU MLP potential (KALE's use): chain-transitions per second.
4. Bayesian logistic regression (``mcmc_logistic.py``'s data and model, 500 warm-up and 500
   draws, float32) at 1,024 and 16,384 chains, through the Pyro model and through a
   hand-written potential, eagerly with the diagonal metric (``sample``'s defaults) and
   compiled by inductor with a dense metric (``compile_potential="inductor"``,
   ``full_mass=True``; a smoke test leaves the compiling out): min bulk ESS per second of
   total wall time, R-hat, divergences and the distance of the means from a NumPyro NUTS
   reference run on the host's CPU.

Sections run in that order; results are written after each, so a run cut short keeps what it
finished, and rows that would overrun ``--budget-s`` are skipped and listed as such.

Command (on a machine with CUDA; pyro-ppl and arviz installed; NumPyro optional, for the
reference)::

    python benchmarks/gpu.py --data-dir ../shared/data/mnist

Results: ``benchmarks/results/gpu.{json,md}`` and the test log ``gpu_tests.log`` (``--out``
to change). ``--smoke-test`` runs tiny versions of every section on any device in about a
minute (``--device cpu`` without a GPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import mcmc_logistic  # noqa: E402
import renyi_speed  # noqa: E402

from pyrogen.metrics import log_likelihood  # noqa: E402


class Clock:
    """The run's budget: what is left, and whether a piece of work of a given length fits."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def fits(self, estimate_s: float) -> bool:
        return estimate_s < self.left()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def describe_machine(device: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "device": device,
        "cpu": renyi_speed.cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        out.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    return out


def peak_mib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


# ------------------------------------------------------------------------------ sections
def run_tests(out: Path, smoke: bool) -> dict[str, Any]:
    """The CUDA tests in a subprocess; the log goes beside the results."""
    files = ["tests/test_cuda.py", "tests/test_data.py", "tests/test_compare.py"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-k", "cuda"]
    if smoke:  # the sampler and trainer tests alone, as a check of this section's wiring
        cmd[-1] = "cuda and (latent_ais or exact_posterior)"
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *files], cwd=ROOT, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (out / "gpu_tests.log").write_text(log)
    lines = [ln for ln in log.splitlines() if ln.strip()]
    return {
        "command": shlex.join(["python", *cmd[1:], *files]),
        "returncode": proc.returncode,
        "summary": lines[-1] if lines else "",
        "failed": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))],
        "seconds": time.perf_counter() - start,
    }


def training_steps(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    argv = [
        "--device",
        args.device,
        "--batch-size",
        str(batch),
        "--threads",
        str(torch.get_num_threads()),
        "--data-dir",
        str(args.data_dir),
        "--out",
        tempfile.mkdtemp(prefix="renyi_speed_gpu_"),
        "--repeats",
        str(args.repeats),
        "--steps",
        str(args.steps),
    ]
    if args.smoke_test:
        argv += ["--smoke-test", "--methods", ",".join(renyi_methods(args))]
    report = renyi_speed.main(renyi_speed.parse_args(argv))
    cfg = report["config"]
    return {
        "batch_size": batch,
        "data": cfg["data"],
        "repeats": cfg["repeats"],
        "steps": cfg["steps"],
        "warmup": cfg["warmup"],
        "rows": report["results"],
    }


def renyi_methods(args: argparse.Namespace) -> list[str]:
    """renyi_speed's methods; a smoke test leaves out the compiled ones (seconds each)."""
    return [
        m
        for m in renyi_speed.ALL_METHODS
        if not (args.smoke_test and m in renyi_speed.COMPILED_METHODS)
    ]


def step_memory(args: argparse.Namespace, batch: int) -> list[dict[str, Any]]:
    """Peak GPU memory of one training step of each method, after a warm-up step."""
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((batch, renyi_speed.X_DIM), 0.2), generator=gen)
    x = x.to(args.device)
    rows = []
    for k in (1, 5):
        for name in renyi_methods(args):
            pyro.clear_param_store()
            method = renyi_speed.make_method(name, k, 0, {}, args.device)
            method.step(x)
            reset_peak(args.device)
            method.step(x)
            rows.append(
                {"method": name, "K": k, "batch_size": batch, "peak_mib": peak_mib(args.device)}
            )
            del method
    return rows


def likelihood_memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Peak memory and time of ``log_likelihood`` at K = 5000 for 100 images."""
    encoder, decoder = renyi_speed._fresh_networks(0, args.device)
    model = renyi_speed.VAEModel(decoder, "ll_decoder")
    guide = renyi_speed.VAEGuide(encoder, "ll_encoder")
    gen = torch.Generator().manual_seed(1)
    n = 10 if args.smoke_test else 100
    x = torch.bernoulli(torch.full((n, renyi_speed.X_DIM), 0.2), generator=gen).to(args.device)
    k = 50 if args.smoke_test else 5000
    rows = []
    for chunk in (k // 5, k):
        pyro.clear_param_store()
        reset_peak(args.device)
        start = time.perf_counter()
        with torch.no_grad():
            ll = log_likelihood(
                model,
                guide,
                x,
                num_samples=k,
                particle_chunk=chunk,
                batch_size=n,
                max_plate_nesting=1,
            )
        synchronize(args.device)
        rows.append(
            {
                "num_samples": k,
                "particle_chunk": chunk,
                "images": n,
                "seconds": time.perf_counter() - start,
                "peak_mib": peak_mib(args.device),
                "mean_log_likelihood": float(ll.per_point.mean()),
            }
        )
    return rows


def throughputs(args: argparse.Namespace, clock: Clock) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    chain_counts = [100, 1000] if args.smoke_test else [10_000, 100_000, 1_000_000]
    transitions = 3 if args.smoke_test else 20
    last = 0.0
    for chains in chain_counts:
        if rows and not clock.fits(10 * last + 30):
            rows.append({"chains": chains, "skipped": "budget"})
            continue
        start = time.perf_counter()
        rows.append(mcmc_logistic.throughput(args.device, chains, 64, 10, transitions))
        last = time.perf_counter() - start
        print(
            f"throughput {chains} chains: {rows[-1]['chain_transitions_per_s']:.3g}/s", flush=True
        )
    return rows


def logistic_reference(smoke: bool, device: str) -> tuple[dict[str, np.ndarray], str]:
    x, y, _ = mcmc_logistic.make_data()
    if mcmc_logistic.has_numpyro():
        return mcmc_logistic.reference(x, y, smoke)
    chains, draws = (8, 50) if smoke else (4096, 2000)
    out, _, wall = mcmc_logistic.run_pyrogen(
        x, y, 12345, chains, draws, 50 if smoke else 1000, "potential", device
    )
    diag = mcmc_logistic.diagnostics(out)
    how = f"pyrogen HMC (no NumPyro), {chains} chains x {draws} draws on {device}"
    return diag, f"{how} ({wall:.0f} s; min bulk ESS {diag['ess'].min():.0f})"


def logistic(
    args: argparse.Namespace, clock: Clock, ref: dict[str, np.ndarray], save: Callable[[], None]
) -> list[dict[str, Any]]:
    x, y, _ = mcmc_logistic.make_data()
    draws = 20 if args.smoke_test else 500
    warmup = 20 if args.smoke_test else 500
    chain_counts = [8, 16] if args.smoke_test else [1024, 16384]
    # (compile_potential, full_mass): the defaults, and the fastest setting on CPU
    settings = [("none", False), ("none" if args.smoke_test else "inductor", True)]
    confs = [
        (c, t, setting)
        for c in chain_counts
        for t in ("potential", "model")
        for setting in settings
    ]
    rows: list[dict[str, Any]] = []
    last: dict[tuple[int, str, tuple[str, bool]], float] = {}
    for i, seed in enumerate(args.seeds):
        order = confs[i % len(confs) :] + confs[: i % len(confs)]
        for chains, target, (compile, full_mass) in order:
            how = ("" if compile == "none" else f", {compile}") + (", dense mass" * full_mass)
            name = f"pyrogen HMC-ChEES, {chains} chains x {draws}, {target}{how}"
            estimate = 1.3 * last.get((chains, target, (compile, full_mass)), 0.0) + 20
            if not clock.fits(estimate):
                rows.append({"name": name, "seed": seed, "skipped": "budget"})
                continue
            out, divergences, wall = mcmc_logistic.run_pyrogen(
                x,
                y,
                seed,
                chains,
                draws,
                warmup,
                target,
                args.device,
                compile=compile,
                full_mass=full_mass,
            )
            last[(chains, target, (compile, full_mass))] = wall
            diag = mcmc_logistic.diagnostics(out)
            err = np.abs(diag["mean"] - ref["mean"]) / np.sqrt(diag["mcse"] ** 2 + ref["mcse"] ** 2)
            rows.append(
                {
                    "name": name,
                    "chains": chains,
                    "target": target,
                    "compile_potential": compile,
                    "full_mass": full_mass,
                    "seed": seed,
                    "wall": wall,
                    "min_ess": float(diag["ess"].min()),
                    "ess_per_s": float(diag["ess"].min() / wall),
                    "ess_per_draw": float(diag["ess"].min() / (chains * draws)),
                    "max_rhat": float(diag["rhat"].max()),
                    "divergences": divergences,
                    "max_mean_error": float(err.max()),
                }
            )
            r = rows[-1]
            print(
                f"seed {seed} | {name}: {r['ess_per_s']:.0f} ESS/s, ESS {r['min_ess']:.0f} in "
                f"{wall:.1f} s, R-hat {r['max_rhat']:.3f}, mean err {r['max_mean_error']:.2f}",
                flush=True,
            )
            save()
    return rows


# ------------------------------------------------------------------------------ report
def _ms(row: dict[str, Any]) -> str:
    ratio = row.get("ratio_to_hand")
    rng = f" [{ratio['min']:.2f}, {ratio['max']:.2f}]" if ratio else ""
    return f"{row['median_ms_per_step']:.2f} | {ratio['median']:.2f}{rng}" if ratio else "-"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    gpu = f"{m['gpu']} ({m['gpu_memory_gib']} GiB, CUDA {m['cuda']})" if "gpu" in m else "no GPU"
    lines = [
        "# pyrogen on a GPU",
        "",
        f"Device: {m['device']}, {gpu}; host {m['cpu']}, {m['cpu_count']} cores, "
        f"{m['torch_threads']} torch threads; Python {m['python']}, torch {m['torch']}, "
        f"Pyro {m['pyro']}; {m['date']}. Command: `{report['command']}`. "
        f"Wall time {report.get('wall_time_s', 0):.0f} s"
        + (" (smoke test: tiny sizes, not results)" if report["smoke_test"] else "")
        + ".",
        "",
    ]
    if report.get("note"):
        lines += [report["note"], ""]
    tests = report.get("tests")
    if tests:
        lines += [
            "## CUDA tests",
            "",
            f"`{tests['command']}`: {tests['summary']} (exit {tests['returncode']}).",
            "",
        ]
        lines += [f"- {f}" for f in tests["failed"]] + ([""] if tests["failed"] else [])
    for table in report.get("training_steps", []):
        lines += [
            f"## Training step, batch {table['batch_size']} (ms per step; ratio to hand-written, "
            "median [min, max] over rounds)",
            "",
            f"Data: {table['data']}; {table['warmup']} warm-up steps, then {table['repeats']} "
            f"rounds x {table['steps']} steps per method, rotating order, each step ending in "
            "`loss.item()` (a device synchronisation), as `renyi_speed.py` times it.",
            "",
            "| method | K | ms/step | ratio to hand |",
            "|---|---:|---:|---:|",
        ]
        for row in table["rows"]:
            lines.append(f"| {row['method']} | {row['K']} | {_ms(row)} |")
        lines.append("")
    if report.get("step_memory"):
        lines += [
            "## Peak GPU memory of one training step (MiB, torch.cuda.max_memory_allocated)",
            "",
            "| method | K | batch | peak MiB |",
            "|---|---:|---:|---:|",
        ]
        for row in report["step_memory"]:
            peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
            lines.append(f"| {row['method']} | {row['K']} | {row['batch_size']} | {peak} |")
        lines.append("")
    if report.get("likelihood_memory"):
        lines += [
            "## log_likelihood at K = 5000 (same VAE, untrained, batch of images at once)",
            "",
            "| images | K | particle chunk | seconds | peak MiB |",
            "|---:|---:|---:|---:|---:|",
        ]
        for row in report["likelihood_memory"]:
            peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
            lines.append(
                f"| {row['images']} | {row['num_samples']} | {row['particle_chunk']} | "
                f"{row['seconds']:.2f} | {peak} |"
            )
        lines.append("")
    if report.get("throughput"):
        lines += [
            "## HMC throughput: 64-d latent, 64-256-256-1 SiLU MLP potential, 10 leapfrog steps",
            "",
            "| chains | chain-transitions/s | chain-gradients/s | mean acceptance |",
            "|---:|---:|---:|---:|",
        ]
        for t in report["throughput"]:
            if "skipped" in t:
                lines.append(f"| {t['chains']} | skipped ({t['skipped']}) | | |")
                continue
            lines.append(
                f"| {t['chains']} | {t['chain_transitions_per_s']:.3g} | "
                f"{t['chain_gradients_per_s']:.3g} | {t['mean_acceptance']:.2f} |"
            )
        lines.append("")
    if report.get("logistic"):
        lines += [
            "## Bayesian logistic regression (N = 1000, D = 10 + intercept), 500 warm-up, "
            "500 draws",
            "",
            "Min bulk ESS (ArviZ) per second of total wall time (data to the device, warm-up, "
            "sampling, draws back to the host); mean error: largest |mean - reference| / "
            f"combined MCSE. Reference: {report.get('logistic_reference', '-')}.",
            "",
            "| run | seed | min-ESS/s | min ESS / draw | wall s | max R-hat | divergences | "
            "mean error (MCSE) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["logistic"]:
            if "skipped" in r:
                lines.append(f"| {r['name']} | {r['seed']} | skipped ({r['skipped']}) | | | | | |")
                continue
            lines.append(
                f"| {r['name']} | {r['seed']} | {r['ess_per_s']:.0f} | {r['ess_per_draw']:.2f} | "
                f"{r['wall']:.1f} | {r['max_rhat']:.3f} | {r['divergences']} | "
                f"{r['max_mean_error']:.2f} |"
            )
        lines.append("")
    if report.get("errors"):
        lines += ["## Sections that failed", ""]
        lines += [f"- {k}: {v.splitlines()[-1]}" for k, v in report["errors"].items()]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir", type=Path, default=renyi_speed.DEFAULT_DATA_DIR)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip rows that would overrun")
    p.add_argument("--repeats", type=int, default=7, help="training-step rounds")
    p.add_argument("--steps", type=int, default=50, help="training steps per method per round")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="logistic seeds")
    p.add_argument("--threads", type=int, default=4, help="torch.set_num_threads")
    p.add_argument(
        "--sections",
        nargs="+",
        default=["tests", "training", "memory", "throughput", "logistic"],
    )
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --device cpu")
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # NumPyro's reference runs on the host
    clock = Clock(args.budget_s)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "gpu",
        "command": shlex.join(
            ["python", "benchmarks/gpu.py", *map(renyi_speed._portable, args.argv)]
        ),
        "machine": describe_machine(args.device),
        "config": {"repeats": args.repeats, "steps": args.steps, "seeds": args.seeds},
        "smoke_test": args.smoke_test,
        "errors": {},
    }

    def save() -> None:
        report["wall_time_s"] = time.perf_counter() - clock.start
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        (args.out / "gpu.md").write_text(markdown(report))

    def section(name: str, work: Callable[[], Any]) -> None:
        if name.split(":")[0] not in args.sections:
            return
        print(f"== {name} ({clock.left():.0f} s left)", flush=True)
        try:
            work()
        except Exception:  # a broken section is reported, the others still run
            report["errors"][name] = traceback.format_exc()
            print(report["errors"][name], flush=True)
        save()

    def tests() -> None:
        report["tests"] = run_tests(args.out, args.smoke_test)
        print(report["tests"]["summary"], flush=True)

    def training() -> None:
        report.setdefault("training_steps", [])
        for batch in (128, 1024):
            report["training_steps"].append(training_steps(args, batch))
            save()

    def memory() -> None:
        report["step_memory"] = [r for b in (128, 1024) for r in step_memory(args, b)]
        report["likelihood_memory"] = likelihood_memory(args)

    def through() -> None:
        report["throughput"] = throughputs(args, clock)

    def logistic_runs() -> None:
        ref, how = logistic_reference(args.smoke_test, args.device)
        report["logistic_reference"] = how
        print(f"reference: {how}", flush=True)
        report["logistic"] = logistic(args, clock, ref, save)

    section("tests", tests)
    section("training", training)
    section("memory", memory)
    section("throughput", through)
    section("logistic", logistic_runs)
    if not report["errors"]:
        del report["errors"]
    save()
    print(markdown(report))
    print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")
    return report


if __name__ == "__main__":
    main(parse_args())
