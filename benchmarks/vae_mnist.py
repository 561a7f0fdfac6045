"""ELBO vs IWAE (K=5) vs VR-max (K=5) on dynamically binarized MNIST, Burda's 784-200-200-50.

The claims under test (the seed, Burda et al. 2015, Li & Turner 2016): a VAE trained on the
ELBO reaches a test log-likelihood near -90 nats; IWAE with K = 5 is ahead of it; VR-max is
within a hair of IWAE. Each objective gets about 20 minutes of training on 2 CPU cores
(fixed epochs, chosen from measured seconds per epoch so that runs are reproducible), then
the test log-likelihood is estimated with K = 5000 importance samples on all 10,000 test
images (one fixed binarization).

Command (about 90 minutes on 2 CPU cores; interrupted runs continue with --resume):

    .venv/bin/python benchmarks/vae_mnist.py --data-dir ../shared/data/mnist

Writes ``benchmarks/results/vae_mnist.{json,md}`` and ``vae_mnist_curves.png``; the runs'
checkpoints and per-run outputs go to ``--work`` (default ``benchmarks/runs/vae_mnist``,
not committed). ``--report-only`` rebuilds the summary from finished runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrogen.compare import CompareConfig, run
from pyrogen.machine import machine, results_folder

HERE = Path(__file__).resolve().parent
# Epochs per objective: about 20 minutes each at the measured 4 s (ELBO) and 7 s (K = 5)
# per epoch on 2 cores, batch 100.
EPOCHS = {"elbo": 300, "iwae:5": 170, "vrmax:5": 170}
ANCHORS = {
    "Burda et al. 2015, VAE (K=1), 3280 epochs": -86.76,
    "Burda et al. 2015, IWAE (K=5), 3280 epochs": -85.54,
    "seed: VAE lower bound": -90.0,
}


def report(work: Path, out_dir: Path, epochs: dict[str, int], note: str) -> dict[str, Any]:
    rows = []
    for name in epochs:
        path = work / name.replace(":", "_") / "results.json"
        if not path.exists():
            print(f"missing {path}: run without --report-only first", file=sys.stderr)
            continue
        payload = json.loads(path.read_text())
        r = payload["results"][0]
        extra = (
            json.loads((path.parent / "run.json").read_text())
            if (path.parent / "run.json").exists()
            else {}
        )
        rows.append({**r, **extra})
    if not rows:
        raise SystemExit("no finished runs")
    by = {r["objective"]: r for r in rows}
    summary: dict[str, Any] = {"machine": note, "anchors": ANCHORS, "results": rows}
    lines = [
        "| objective | epochs | training minutes (epochs x median) | median s/epoch | "
        "test log p(x), K=5000 | ± s.e. | MC s.e. | final train bound | active units | "
        "peak RSS (GiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        # the median epoch: runs shared the 2 cores with other work now and then
        median = statistics.median(r["history"]["seconds"])
        minutes = median * r["epochs"] / 60
        lines.append(
            f"| {r['label']} | {r['epochs']} | {minutes:.1f} | {median:.2f} | "
            f"{r['test_ll']:.2f} | {r['test_ll_stderr']:.2f} | {r['test_ll_mc_stderr']:.3f} | "
            f"{r['train_bound']:.2f} | {r['active_units']} | "
            f"{r.get('peak_rss_gib', float('nan')):.2f} |"
        )
    checks = []
    if "elbo" in by:
        checks.append(
            f"- ELBO at -90 or better: {by['elbo']['test_ll']:.2f} "
            f"({'yes' if by['elbo']['test_ll'] >= -90 else 'no'})"
        )
    if "elbo" in by and "iwae_5" in by:
        d = by["iwae_5"]["test_ll"] - by["elbo"]["test_ll"]
        checks.append(f"- IWAE ahead of ELBO: by {d:+.2f} nats ({'yes' if d > 0 else 'no'})")
    if "iwae_5" in by and "vrmax_5" in by:
        d = by["vrmax_5"]["test_ll"] - by["iwae_5"]["test_ll"]
        checks.append(
            f"- VR-max within 0.2 nats of IWAE: {d:+.2f} ({'yes' if abs(d) <= 0.2 else 'no'})"
        )
    if "elbo" in by:
        checks.append(
            f"- gap to Burda's converged VAE (-86.76): {by['elbo']['test_ll'] + 86.76:+.2f}"
        )
    if "iwae_5" in by:
        checks.append(
            f"- gap to Burda's converged IWAE K=5 (-85.54): {by['iwae_5']['test_ll'] + 85.54:+.2f}"
        )
    md = "\n".join(
        [
            "# VAE on dynamically binarized MNIST: ELBO vs IWAE vs VR-max",
            "",
            f"Machine: {note}.",
            "",
            "Command: `.venv/bin/python benchmarks/vae_mnist.py --data-dir ../shared/data/mnist`",
            "",
            "Burda et al.'s 784-200-200-50 tanh VAE, Bernoulli likelihood, Adam lr 1e-3, batch "
            "100, dynamic binarization in training, one fixed binarization of the 10,000 test "
            "images; same seed and initial weights for every objective. Test log-likelihood "
            "by importance sampling with K = 5000 on all 10,000 test images; s.e. is over test "
            "images, MC s.e. the Monte Carlo error of the estimate. Peak RSS is the benchmark "
            "process's maximum resident memory after training and scoring that objective "
            "(particles drawn 500 at a time for 100 images at a time).",
            "",
            *lines,
            "",
            *checks,
            "",
            "Anchors: " + "; ".join(f"{k}: {v}" for k, v in ANCHORS.items()) + ".",
            "",
            "![curves](vae_mnist_curves.png)",
            "",
            "The right panel's time axis is the measured wall time of each epoch; the straight "
            "stretches in the ELBO's first minutes are epochs that shared the 2 cores with "
            "other work (hence the table's median-based minutes).",
            "",
        ]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vae_mnist.md").write_text(md)
    (out_dir / "vae_mnist.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(rows, out_dir / "vae_mnist_curves.png")
    print(md)
    return summary


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for r in rows:
        h = r["history"]
        minutes = torch.tensor(h["seconds"]).cumsum(0) / 60
        axes[0].plot(range(1, len(h["train_bound"]) + 1), h["train_bound"], label=r["label"])
        axes[1].plot(minutes, h["heldout_ll"], label=r["label"])
    axes[0].set(
        xlabel="epoch", ylabel="nats per image", title="training objective", ylim=(-100, -80)
    )
    axes[1].set(
        xlabel="training minutes (2 CPU cores)",
        ylabel="nats per image",
        title="held-out log p(x), K=100, 1000 test images",
        ylim=(-100, -84),
    )
    axes[1].axhline(-90, color="grey", lw=0.8, ls="--", label="-90 (seed)")
    axes[1].axhline(-86.76, color="C0", lw=0.8, ls=":", label="-86.76 (Burda VAE, 3280 ep.)")
    axes[1].axhline(-85.54, color="C1", lw=0.8, ls=":", label="-85.54 (Burda IWAE-5, 3280 ep.)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "digits"])
    parser.add_argument("--work", default=str(HERE / "runs" / "vae_mnist"))
    parser.add_argument("--out", default=None, help="results folder (smoke test: a temp one)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--smoke-test", action="store_true", help="2 epochs on digits, K=50; for the test suite"
    )
    args = parser.parse_args(argv)
    args.out = results_folder(args.out, HERE / "results", args.smoke_test)
    epochs = dict(EPOCHS)
    eval_samples, dataset = 5000, args.dataset
    if args.smoke_test:
        epochs = {k: 2 for k in epochs}
        eval_samples, dataset = 50, "digits"
    work = Path(args.work)
    note = machine()
    if not args.report_only:
        pyro.enable_validation(False)  # input checks only; the numbers do not depend on them
        for name, n in epochs.items():
            folder = work / name.replace(":", "_")
            config = CompareConfig(
                dataset=dataset,
                data_dir=args.data_dir,
                objectives=[name],
                architecture="burda",
                likelihood="bernoulli",
                z_dim=50,
                epochs=n,
                eval_samples=eval_samples,
                out=str(folder),
                resume=args.resume,
                progress=args.progress,
                seed=0,
            )
            t0 = time.time()
            try:
                run(config)
            except KeyboardInterrupt:
                print(f"\ninterrupted; run again with --resume to continue {name}", file=sys.stderr)
                return 130
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
            (folder / "run.json").write_text(
                json.dumps({"wall_seconds": time.time() - t0, "peak_rss_gib": peak}) + "\n"
            )
    report(work, Path(args.out), epochs, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
