"""A VAE trained by self-contrastive NCE (noise = the previous VAE) against the same VAE by ELBO.

The seed experiment of On distinguishability criteria for estimating generative models
(Goodfellow, 2014, https://arxiv.org/abs/1412.6515): noise-contrastive estimation whose
noise is a frozen copy of the model, switched to the current model every K epochs. Both runs
start from the same weights (``build_vae``, one seed) and see the same mini-batches (one data
generator per run, same seed: same order, same dynamic binarization):

(a) the ELBO, as usual;
(b) ``SelfContrastive(nu, refresh_every=K)``: logistic regression of data against samples of
    the frozen copy, with the K-particle bound (``--bound``, ``--particles``) standing in
    for log p(x) of both the VAE and its copy. **The first noise is the VAE's initial,
    untrained copy** by default (the prior-initialised VAE: the first SelfContrastive call
    takes it), so both runs start from the same point; the noise then switches to the VAE
    being trained after epochs K, 2K, ... With ``--warm-start-epochs W`` run (b) first
    trains W epochs by the ELBO (exactly run (a)'s first W epochs), the first noise is that
    warm VAE, and the switches come W + K, W + 2K, ... (the self-contrastive phase is a
    second ``Trainer`` fit: a fresh Adam, for the new loss's gradient scale, and the data
    order drawn from the seed again). On MNIST the untrained copy is so
    easy to tell from the data that the classifier saturates (accuracy 1.0) and learning
    stalls until each switch: the curve is a staircase (``benchmarks/README.md``).

``--variants`` runs several self-contrastive VAEs beside the one ELBO run, each
``GUIDE[:ALPHA[:K]]``: the guide trained by the NCE loss (``nce``) or by the bound on the
data rows (``bound``), the noise rows' density by a Rényi upper bound of order ALPHA < 0,
and K particles; ``--elbo-epochs`` trains the ELBO run longer for an equal-time comparison
(it is scored on the test set after --num-epochs too), ``--test-particles`` sets the final
test score's K.

After each epoch, both VAEs are scored on held-out validation images (the last 10,000 MNIST
training images, or the last 300 digits, binarized once): the ELBO (``--elbo-particles``
draws) and the IWAE bound with ``--eval-particles`` particles
(``pyrogen.metrics.log_likelihood``). At the end both are scored the same way on the test
set. Writes ``self_contrastive_vae.json`` (settings, machine, per-epoch curves, switch
epochs, final scores), ``self_contrastive_vae.md`` (a summary) and
``self_contrastive_vae.png`` (both curves, switches marked) to ``--out``. Training runs
through ``pyrogen.inference.Trainer``, the scores through its epoch callback into its
history; its checkpoints (one per run and phase, written after every epoch, the noise
snapshot included) go to ``--checkpoint-dir`` with the settings beside them, and
``--resume`` continues them exactly (and refuses those of other settings).

    .venv/bin/python examples/self_contrastive_vae.py          # digits, about half a minute
    .venv/bin/python examples/self_contrastive_vae.py --dataset mnist \\
        --data-dir ../shared/data/mnist --num-epochs 50 --warm-start-epochs 5 \\
        --curve-points 1000 --out runs/sc_vae   # about 18 minutes on one core
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pyrogen.checkpoint import CheckpointError  # noqa: E402
from pyrogen.data import (  # noqa: E402
    binarize_bernoulli_fixed,
    binarize_dynamic,
    load_digits,
    load_mnist,
)
from pyrogen.inference import Objective, RenyiBound, SelfContrastive, Trainer  # noqa: E402
from pyrogen.machine import machine  # noqa: E402
from pyrogen.metrics import log_likelihood  # noqa: E402
from pyrogen.models import VAE, build_vae  # noqa: E402

NAME = "self_contrastive_vae"
KIND = "pyrogen.example.self_contrastive_vae"
ELBO_LABEL = "ELBO"
# Settings a resumed run may change.
_RESUMABLE = {
    "num_epochs",
    "elbo_epochs",
    "variants",
    "out",
    "checkpoint_dir",
    "resume",
    "no_progress",
    "data_dir",
    "report_only",
}


class Data:
    """Training rows (grey levels, binarized afresh per batch), fixed-binarized validation and
    test rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.dataset == "digits":
            train = load_digits("train").tensors[0]
            test = load_digits("test").tensors[0]
            num_valid = 300
        else:
            train = load_mnist(args.data_dir, "train").tensors[0]
            test = load_mnist(args.data_dir, "test").tensors[0]
            num_valid = 10_000
        train = train.reshape(train.shape[0], -1).float()
        test = test.reshape(test.shape[0], -1).float()
        gen = torch.Generator().manual_seed(10_000 + args.seed)
        self.train = train[:-num_valid]
        self.valid = binarize_bernoulli_fixed(train[-num_valid:], generator=gen)
        self.test = binarize_bernoulli_fixed(test, generator=gen)
        if args.smoke_test:
            self.train, self.valid, self.test = self.train[:200], self.valid[:40], self.test[:40]


@torch.no_grad()
def score(
    vae: VAE, x: torch.Tensor, args: argparse.Namespace, particles: int | None = None
) -> dict[str, float]:
    """ELBO (mean log-weight over --elbo-particles draws) and IWAE-K bound, nats per image
    (K = ``particles``, default --eval-particles)."""
    particles = particles or args.eval_particles
    elbo = RenyiBound(1.0, num_particles=args.elbo_particles, max_plate_nesting=1)
    elbos = torch.cat([elbo.pointwise(vae.model, vae.guide, b) for b in x.split(500)])
    iwae = log_likelihood(
        vae.model,
        vae.guide,
        x,
        num_samples=particles,
        particle_chunk=min(particles, 100),
        batch_size=100,
        max_plate_nesting=1,
    )
    return {"elbo": float(elbos.mean()), "iwae": iwae.mean, "iwae_stderr": iwae.stderr}


def identity(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in _RESUMABLE}


# Per-epoch records in the trainers' histories (the objective's own per-iteration stats,
# "accuracy" among them, live there too, hence "epoch_accuracy").
EPOCH_KEYS = ("epoch", "valid_elbo", "valid_iwae", "train_loss", "seconds", "epoch_accuracy")
# Test-set scores, logged by the epoch callback at the epochs where a run is scored.
TEST_KEYS = ("test_epoch", "test_elbo", "test_iwae", "test_iwae_stderr")


class Variant:
    """One self-contrastive run, written ``GUIDE[:ALPHA[:K]]``: what trains the guide
    (``nce`` or ``bound``), the Rényi order ALPHA < 0 of an upper bound for the VAE's density
    on noise rows (empty: the lower bound --bound, as on data rows) and the particles K of
    the bounds (default --particles). ``nce:-1:5`` is CUBO-5 on noise rows, IWAE-5 on data
    rows."""

    def __init__(self, text: str, particles: int) -> None:
        guide, alpha, k, *rest = text.split(":") + ["", ""]
        if guide not in ("nce", "bound") or any(rest):
            raise ValueError(f"variant {text!r}: expected GUIDE[:ALPHA[:K]], GUIDE nce or bound")
        self.guide = guide
        try:
            self.alpha = float(alpha) if alpha else None
            self.particles = int(k) if k else particles
        except ValueError:
            raise ValueError(f"variant {text!r}: ALPHA must be a number, K an int") from None
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha < 0):
            raise ValueError(f"variant {text!r}: the noise rows' Rényi order must be negative")
        if self.particles < 1 or (self.alpha is not None and self.particles < 2):
            raise ValueError(
                f"variant {text!r}: K must be at least 1, and at least 2 with ALPHA (with one "
                "particle every Rényi order gives the same estimate)"
            )
        alpha_name = "" if self.alpha is None else f"_alpha{self.alpha:g}"
        self.name = f"sc_{guide}{alpha_name}_k{self.particles}"
        noise = "" if self.alpha is None else f", noise rows by Rényi alpha={self.alpha:g}"
        self.label = f"self-contrastive K={self.particles} (guide by {guide.upper()}{noise})"


def checkpoints(run: str, args: argparse.Namespace) -> dict[str, Path]:
    """The run's phases and their checkpoints: a self-contrastive run trains
    --warm-start-epochs by the ELBO (its "warm" phase, the same for every variant), then by
    SelfContrastive."""
    folder = Path(args.checkpoint_dir)
    if run == "elbo":
        return {"elbo": folder / "elbo.pt"}
    phases = {"warm": folder / f"{run}_warm.pt"} if args.warm_start_epochs else {}
    return phases | {"self_contrastive": folder / f"{run}.pt"}


def prepare_checkpoints(run: str, args: argparse.Namespace) -> None:
    """--resume continues the run's checkpoints when they were made with these settings
    (recorded beside them) and refuses them otherwise; without --resume they are removed."""
    paths = list(checkpoints(run, args).values())
    config = Path(args.checkpoint_dir) / f"{run}.settings.json"
    if args.resume and any(p.exists() for p in paths):
        saved = json.loads(config.read_text()) if config.exists() else None
        if saved != json.loads(json.dumps(identity(args))):
            raise CheckpointError(
                f"the checkpoints of run {run!r} in {args.checkpoint_dir} belong to a run with "
                "other settings (or an older version of this script): drop --resume"
            )
        return
    for p in paths:
        p.unlink(missing_ok=True)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(identity(args), indent=1))


def epoch_mean(values: list[float], rows: int, batch_size: int) -> float:
    """The mean per data point over the last pass, from its per-batch means (the last
    batch of a pass may be smaller)."""
    sizes = [batch_size] * (rows // batch_size) + ([rows % batch_size] if rows % batch_size else [])
    last = values[-len(sizes) :]
    return sum(v * n for v, n in zip(last, sizes, strict=True)) / rows


def fit_phase(
    vae: VAE,
    objective: Objective,
    path: Path,
    num_epochs: int,
    offset: int,
    data: Data,
    args: argparse.Namespace,
    test_epochs: tuple[int, ...] = (),
) -> dict[str, list[float]]:
    """Trains ``vae`` by ``objective`` for ``num_epochs`` epochs with a fresh Adam, its
    checkpoint at ``path`` (resumed when it exists); the epoch callback scores the VAE on
    the validation images and logs it with the epoch's mean training loss (and NCE
    accuracy), training seconds and noise switches, and at ``test_epochs`` (counted from
    the run's start) scores it on the test set with --test-particles; returns the
    trainer's history."""
    device = torch.device(args.device)
    train = data.train.to(device)
    valid = data.valid[: args.curve_points].to(device)
    rows = train.shape[0]
    sc = objective if isinstance(objective, SelfContrastive) else None
    clock = time.perf_counter()

    def binarize(batch: tuple[torch.Tensor, ...], gen: torch.Generator) -> tuple[torch.Tensor]:
        # drawn on the CPU by the trainer's generator, so that resume is exact on any device
        return (binarize_dynamic(batch[0].cpu(), generator=gen).to(device),)

    def log_epoch(trainer: Trainer, values: tuple[float, ...]) -> None:
        for key, value in zip(EPOCH_KEYS, values, strict=True):
            trainer.log(key, float(value))

    def on_epoch(trainer: Trainer) -> None:
        nonlocal clock
        seconds = time.perf_counter() - clock
        epoch = offset + trainer.epoch
        s = score(vae, valid, args)
        accuracy = math.nan
        if sc is not None:
            accuracy = epoch_mean(trainer.history["accuracy"], rows, args.batch_size)
            if sc.refresh_due(trainer.epoch):  # its end_of_epoch made the noise this VAE
                trainer.log("switch", float(epoch))
        loss = epoch_mean(trainer.history["model"], rows, args.batch_size)
        log_epoch(trainer, (epoch, s["elbo"], s["iwae"], loss, seconds, accuracy))
        if epoch in test_epochs:
            t = score(vae, data.test.to(device), args, args.test_particles)
            for key, value in zip(
                TEST_KEYS, (epoch, t["elbo"], t["iwae"], t["iwae_stderr"]), strict=True
            ):
                trainer.log(key, float(value))
        clock = time.perf_counter()

    trainer = Trainer(
        objective,
        vae.model,
        vae.guide,
        optimizers={"model": (torch.optim.Adam, {"lr": args.lr})},
        checkpoint=path,
        epoch_callback=on_epoch,
        progress=not args.no_progress,
    )
    if offset == 0 and not path.exists():  # the common starting point, epoch 0
        s = score(vae, valid, args)
        log_epoch(trainer, (0.0, s["elbo"], s["iwae"], math.nan, math.nan, math.nan))
    clock = time.perf_counter()
    trainer.fit(
        (train,),
        batch_size=args.batch_size,
        seed=args.seed,  # same batches for both runs
        num_epochs=num_epochs,
        drop_last=False,
        transform=binarize,
    )
    return trainer.history


def train_run(
    run: str, variant: Variant | None, data: Data, args: argparse.Namespace
) -> dict[str, Any]:
    """Trains one VAE with the Trainer (resuming from its checkpoints when asked): run
    "elbo" for --elbo-epochs, scored on the test set after --num-epochs and at its end; a
    self-contrastive ``variant`` for --num-epochs, scored at its end.

    A self-contrastive run trains its first --warm-start-epochs epochs by the ELBO (exactly
    run "elbo"'s first epochs: same weights, batches and random numbers), then, in a second
    trainer with a fresh Adam, by SelfContrastive, whose first noise is the VAE at that
    moment (the initial VAE when W = 0) and which switches after every --refresh-every
    epochs of its own (its ``end_of_epoch``)."""
    prepare_checkpoints(run, args)
    pyro.clear_param_store()
    torch.manual_seed(args.seed)  # same initial weights for every run
    vae = build_vae(args.architecture, (data.train.shape[1],), args.z_dim).to(args.device)
    paths = checkpoints(run, args)
    warm = args.elbo_epochs if variant is None else args.warm_start_epochs
    tests = (args.num_epochs, args.elbo_epochs) if variant is None else (args.num_epochs,)
    phases: list[tuple[str, Objective, int, int]] = []  # name, objective, epochs, offset
    if warm:
        elbo = RenyiBound(1.0, num_particles=1, max_plate_nesting=1)
        phases.append(("elbo" if variant is None else "warm", elbo, warm, 0))
    if variant is not None:
        sc = SelfContrastive(
            nu=args.nu,
            refresh_every=args.refresh_every,
            num_particles=variant.particles,
            bound=args.bound,
            max_plate_nesting=1,
            guide_objective=variant.guide,
            noise_rows_alpha=variant.alpha,
        )
        phases.append(("self_contrastive", sc, args.num_epochs - warm, warm))
    history: dict[str, list[float]] = {key: [] for key in EPOCH_KEYS + TEST_KEYS}
    switches = [warm] if variant is not None and warm else []  # noise := current VAE
    for name, objective, num_epochs, offset in phases:
        logged = fit_phase(vae, objective, paths[name], num_epochs, offset, data, args, tests)
        for key in EPOCH_KEYS + TEST_KEYS:
            history[key] += logged.get(key, [])
        switches += [int(e) for e in logged.get("switch", [])]
    accuracy = history.pop("epoch_accuracy")
    if variant is not None:
        history["accuracy"] = accuracy
    test = {key: history.pop(key) for key in TEST_KEYS}
    return {"vae": vae, "history": history, "switches": switches, "test": test}


def steps(history: dict[str, list[float]], switches: list[int]) -> list[dict[str, float]]:
    """Per switch: the validation IWAE gain per epoch in the K epochs before and after it."""
    iwae = dict(zip(history["epoch"], history["valid_iwae"], strict=True))
    out = []
    for s in switches:
        before = [iwae[e] - iwae[e - 1] for e in range(s - 1, s + 1) if e - 1 in iwae]
        after = [iwae[e + 1] - iwae[e] for e in range(s, s + 2) if e + 1 in iwae]
        if before and after:
            out.append(
                {
                    "switch_epoch": s,
                    "gain_per_epoch_before": sum(before) / len(before),
                    "gain_per_epoch_after": sum(after) / len(after),
                }
            )
    return out


COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def self_contrastive_runs(results: dict[str, Any]) -> list[str]:
    """The runs with noise switches (the self-contrastive variants), in order."""
    return [run for run, r in results.items() if "switches" in r]


def plot(results: dict[str, Any], warm: int, path: Path, title: str) -> None:
    sc_runs = self_contrastive_runs(results)
    has_acc = any("accuracy" in results[run]["history"] for run in sc_runs)
    fig, axes = plt.subplots(
        2 if has_acc else 1,
        1,
        figsize=(7.5, 7 if has_acc else 4.8),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]} if has_acc else None,
        squeeze=False,
    )
    ax = axes[0, 0]
    colours = dict(zip(results, COLOURS, strict=False))
    for run, r in results.items():
        h = r["history"]
        ax.plot(h["epoch"], h["valid_iwae"], color=colours[run], label=f"{r['label']}: IWAE")
        ax.plot(h["epoch"], h["valid_elbo"], color=colours[run], linestyle="--", linewidth=0.8)
    if warm:
        ax.axvspan(0, warm, color="grey", alpha=0.12, label="self-contrastive runs: ELBO")
    switches = results[sc_runs[0]]["switches"] if sc_runs else []
    for i, s in enumerate(switches):
        label = "noise := current VAE" if i == 0 else None
        ax.axvline(s, color="grey", linestyle=":", linewidth=1, label=label)
    skip = max(1, len(results["elbo"]["history"]["epoch"]) // 10)
    values = [
        v
        for r in results.values()
        for key in ("valid_iwae", "valid_elbo")
        for v in r["history"][key][skip:]
        if math.isfinite(v)
    ]
    if values:  # the first epochs are far below: keep the rest of the range readable
        low, high = min(values), max(values)
        ax.set_ylim(low - 0.05 * (high - low + 1), high + 0.05 * (high - low + 1))
    ax.set_ylabel("validation bound (nats per image)\nsolid IWAE, dashed ELBO")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    if has_acc:
        acc = axes[1, 0]
        for run in sc_runs:
            h = results[run]["history"]
            if "accuracy" in h:
                acc.plot(h["epoch"], h["accuracy"], color=colours[run])
        for s in switches:
            acc.axvline(s, color="grey", linestyle=":", linewidth=1)
        acc.axhline(0.5, color="k", linewidth=0.5)
        acc.set_ylabel("NCE accuracy")
    axes[-1, 0].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def test_scores(test: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """The test scores logged during a run, by epoch."""
    return {
        str(int(e)): {"elbo": el, "iwae": iw, "iwae_stderr": se}
        for e, el, iw, se in zip(
            test["test_epoch"],
            test["test_elbo"],
            test["test_iwae"],
            test["test_iwae_stderr"],
            strict=True,
        )
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        summary: dict[str, Any] = json.loads((out / f"{NAME}.json").read_text())
        report(summary, out)
        return summary
    data = Data(args)
    results: dict[str, Any] = {}
    runs: list[tuple[str, Variant | None]] = [("elbo", None)]
    runs += [(v.name, v) for v in args.variants]
    for run, variant in runs:
        fit = train_run(run, variant, data, args)
        h = fit["history"]
        tests = test_scores(fit["test"])
        seconds = [s for s in h["seconds"] if math.isfinite(s)]
        results[run] = {
            "label": ELBO_LABEL if variant is None else variant.label,
            "history": h,
            "final_valid": {"elbo": h["valid_elbo"][-1], "iwae": h["valid_iwae"][-1]},
            "test": tests[str(args.num_epochs)],
            "tests": tests,
            "median_seconds_per_epoch": sorted(seconds)[len(seconds) // 2] if seconds else math.nan,
        }
        if variant is not None:
            results[run]["switches"] = fit["switches"]
            results[run]["steps"] = steps(h, fit["switches"])
    summary = {
        "settings": {k: v for k, v in vars(args).items() if k != "variants"}
        | {"variants": [v.name for v in args.variants]},
        "command": " ".join(sys.argv),
        "machine": machine(),
        "first_noise": (
            f"the VAE after {args.warm_start_epochs} ELBO epochs (the ELBO run's own)"
            if args.warm_start_epochs
            else "the VAE's initial (untrained) weights, copied at the first step"
        ),
        "results": results,
    }
    (out / f"{NAME}.json").write_text(json.dumps(summary, indent=2))
    report(summary, out)
    return summary


def equal_time(elbo: dict[str, list[float]], seconds: float) -> tuple[float, float] | None:
    """The ELBO run's epoch and validation IWAE once its training seconds reach
    ``seconds`` (None when it stopped before)."""
    total = 0.0
    for epoch, s, iwae in zip(elbo["epoch"], elbo["seconds"], elbo["valid_iwae"], strict=True):
        total += s if math.isfinite(s) else 0.0
        if total >= seconds:
            return epoch, iwae
    return None


def report(summary: dict[str, Any], out: Path) -> None:
    """Writes the PNG and the Markdown summary from the JSON summary (--report-only)."""
    settings, results = summary["settings"], summary["results"]
    sc_runs = self_contrastive_runs(results)
    switches = results[sc_runs[0]]["switches"] if sc_runs else []
    warm = settings.get("warm_start_epochs", 0)
    title = (
        f"{settings['dataset']}: ELBO vs self-contrastive NCE (nu={settings['nu']:g}, "
        f"{settings['bound'].upper()} K={settings['particles']}, "
        f"switch every {settings['refresh_every']})"
    )
    if warm:
        title += f",\nafter {warm} ELBO epochs"
    plot(results, warm, out / f"{NAME}.png", title)
    k = settings["eval_particles"]
    kt = settings.get("test_particles") or k
    lines = [
        "# " + title.replace("\n", " "),
        "",
        f"Machine: {summary['machine']}. Command: `{summary['command']}`.",
        "",
        f"Validation: IWAE-{k} on {settings['curve_points']} images after every epoch; test: "
        f"every test image, IWAE-{kt}, ± its standard error over images. "
        "'seconds' is training time (scoring excluded).",
        "",
        f"| run | epochs | training seconds | median s/epoch | valid ELBO | valid IWAE-{k} | "
        f"test ELBO | test IWAE-{kt} | ± s.e. |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results.values():
        h = r["history"]
        for epoch, t in r.get("tests", {"": r["test"]}).items():
            n = int(epoch) if epoch else len(h["epoch"]) - 1
            index = h["epoch"].index(float(n)) if float(n) in h["epoch"] else -1
            secs = sum(s for s in h["seconds"][: index + 1] if math.isfinite(s))
            lines.append(
                f"| {r['label']} | {n} | {secs:.0f} | {r['median_seconds_per_epoch']:.2f} | "
                f"{h['valid_elbo'][index]:.2f} | {h['valid_iwae'][index]:.2f} | "
                f"{t['elbo']:.2f} | {t['iwae']:.2f} | {t['iwae_stderr']:.2f} |"
            )
    lines += ["", "At equal training time (the ELBO run's validation curve):", ""]
    for run in sc_runs:
        h = results[run]["history"]
        secs = sum(s for s in h["seconds"] if math.isfinite(s))
        match = equal_time(results["elbo"]["history"], secs)
        where = (
            f"the ELBO run reached it after epoch {match[0]:.0f}, valid IWAE {match[1]:.2f}"
            if match
            else "the ELBO run stopped before it"
        )
        lines.append(
            f"- {results[run]['label']}: {secs:.0f} s, valid IWAE {h['valid_iwae'][-1]:.2f}; "
            + where
        )
    lines += [
        "",
        f"First noise: {summary['first_noise']}. The noise became the current VAE after "
        f"epochs {switches}.",
    ]
    for run in sc_runs:
        lines += ["", f"{results[run]['label']}:", ""]
        for st in results[run]["steps"]:
            lines.append(
                f"- switch after epoch {st['switch_epoch']}: validation IWAE gain "
                f"{st['gain_per_epoch_before']:+.3f} nats/epoch before, "
                f"{st['gain_per_epoch_after']:+.3f} after"
            )
    (out / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    for r in results.values():
        print(
            f"{r['label']:>60}: valid ELBO {r['final_valid']['elbo']:.2f}, IWAE "
            f"{r['final_valid']['iwae']:.2f}; test ELBO {r['test']['elbo']:.2f}, IWAE "
            f"{r['test']['iwae']:.2f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--data-dir", default=None, help="MNIST IDX folder ($PYROGEN_DATA)")
    parser.add_argument("--num-epochs", type=int, default=30)
    parser.add_argument("--refresh-every", type=int, default=5, help="epochs between switches")
    parser.add_argument(
        "--warm-start-epochs",
        type=int,
        default=0,
        help="ELBO epochs before self-contrastive training (0: the first noise is the initial VAE)",
    )
    parser.add_argument("--nu", type=float, default=1.0, help="noise samples per data point")
    parser.add_argument("--particles", type=int, default=1, help="K of the NCE density bound")
    parser.add_argument("--bound", choices=["iwae", "elbo"], default="iwae")
    parser.add_argument(
        "--variants",
        default="nce",
        help="self-contrastive runs, comma-separated, each GUIDE or GUIDE:ALPHA: GUIDE trains "
        "the guide (nce: the NCE loss through the bound; bound: the bound on the data rows), "
        "ALPHA < 0 the Rényi order of an upper bound for the VAE's density on noise samples "
        "(-1: CUBO; default: --bound there too), K the particles of the bounds (default "
        "--particles; at least 2 with ALPHA), e.g. nce,bound,nce:-1:5",
    )
    parser.add_argument(
        "--elbo-epochs",
        type=int,
        default=None,
        help="epochs of the ELBO run (default --num-epochs; more for an equal-time comparison; "
        "it is scored on the test set after --num-epochs too)",
    )
    parser.add_argument("--architecture", choices=["burda", "pyro", "conv"], default="burda")
    parser.add_argument("--z-dim", type=int, default=None, help="50 (MNIST) or 16 (digits)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-particles", type=int, default=100)
    parser.add_argument("--elbo-particles", type=int, default=10)
    parser.add_argument(
        "--test-particles", type=int, default=None, help="IWAE-K on the test set (--eval-particles)"
    )
    parser.add_argument(
        "--curve-points", type=int, default=2000, help="validation images scored per epoch"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=f"runs/{NAME}")
    parser.add_argument("--checkpoint-dir", default=None, help="default: OUT/checkpoints")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the PNG and .md from OUT's JSON"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.dataset, args.num_epochs, args.refresh_every = "digits", 2, 1
        args.eval_particles, args.elbo_particles, args.no_progress = 5, 2, True
    if args.elbo_epochs is None:
        args.elbo_epochs = args.num_epochs
    if args.test_particles is None:
        args.test_particles = args.eval_particles
    try:
        args.variants = [Variant(v, args.particles) for v in args.variants.split(",") if v]
    except ValueError as error:
        parser.error(str(error))
    if len({v.name for v in args.variants}) != len(args.variants):
        parser.error("--variants names a variant twice")
    if args.elbo_epochs < args.num_epochs:
        parser.error("--elbo-epochs must be at least --num-epochs")
    if args.z_dim is None:
        args.z_dim = 50 if args.dataset == "mnist" else 16
    if args.checkpoint_dir is None:
        args.checkpoint_dir = str(Path(args.out) / "checkpoints")
    names = ("num_epochs", "refresh_every", "particles", "batch_size", "eval_particles")
    for name in (*names, "elbo_particles", "curve_points", "test_particles"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.warm_start_epochs < args.num_epochs:
        parser.error("--warm-start-epochs must be in [0, --num-epochs)")
    if not (math.isfinite(args.nu) and args.nu > 0):
        parser.error("--nu must be positive")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error("--lr must be positive")
    torch.device(args.device)
    return args


if __name__ == "__main__":
    main(parse_args())
