r"""Train one VAE under several objectives with the same seed and budget; table and figures.

``pyrogen compare`` (or :func:`run`) fits the same architecture, from the same initial
weights, on the same mini-batches, once per objective, then scores every fit the same way:
the importance-sampled test log-likelihood with K particles (5000 by default; Burda et al.,
2015), the last epoch's training bound, seconds per epoch and active units. It writes to the
output folder:

* ``results.md``, ``results.csv``, ``results.json``: the table (and per-epoch histories in
  the JSON);
* ``curves.png``: training bound and held-out log-likelihood per epoch;
* ``samples.png``: mean images decoded from prior draws, one panel per objective;
* ``checkpoints/<objective>.pt``: written atomically after every epoch. ``--resume``
  continues from them and ends with the same numbers as an uninterrupted run (CPU, fixed
  seed); an objective already finished is not trained again.

Objectives are named ``elbo``, ``iwae[:K]``, ``renyi:ALPHA[:K]``, ``vrmax[:K]`` (K defaults
to 5): the default set is ELBO, IWAE (K = 5), Rényi alpha = 0.5 and alpha = -1 (K = 5), and
VR-max (K = 5), as in Variational Inference with Rényi Divergence (Li & Turner, 2016,
https://arxiv.org/abs/1602.02311).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from pyrogen.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyrogen.data import binarize_bernoulli_fixed, binarize_dynamic, load_digits, load_mnist
from pyrogen.inference import IWAE, Objective, RenyiBound, VRMax
from pyrogen.metrics import active_units, log_likelihood
from pyrogen.models import ARCHITECTURES, LIKELIHOODS, VAE, build_vae

__all__ = ["CompareConfig", "ObjectiveSpec", "parse_objective", "run"]

DEFAULT_OBJECTIVES = ("elbo", "iwae:5", "renyi:0.5", "renyi:-1", "vrmax")
DATASETS = ("digits", "mnist")
CHECKPOINT_KIND = "pyrogen.compare"
# Settings a resumed run may change: the rest must match the checkpoint.
_RESUMABLE = {"epochs", "out", "resume", "progress", "data_dir"}


@dataclass(frozen=True)
class ObjectiveSpec:
    """A parsed objective name: a file-safe key, a label for tables and a factory."""

    key: str
    label: str
    make: Callable[[], Objective]


def _positive_int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got {text!r}")
    return value


def parse_objective(name: str) -> ObjectiveSpec:
    """``elbo``, ``iwae[:K]``, ``renyi:ALPHA[:K]`` or ``vrmax[:K]`` -> :class:`ObjectiveSpec`."""
    parts = name.strip().lower().split(":")
    head, rest = parts[0], parts[1:]
    usage = "objectives are elbo, iwae[:K], renyi:ALPHA[:K], vrmax[:K]"
    # One plate (the data) in every VAE: saying so skips the plate-depth probe.
    nest = 1
    if head == "elbo" and not rest:
        return ObjectiveSpec(
            "elbo", "ELBO", lambda: RenyiBound(1.0, num_particles=1, max_plate_nesting=nest)
        )
    if head == "iwae" and len(rest) <= 1:
        k = _positive_int(rest[0], "K") if rest else 5
        return ObjectiveSpec(
            f"iwae_{k}", f"IWAE (K={k})", lambda: IWAE(num_particles=k, max_plate_nesting=nest)
        )
    if head == "vrmax" and len(rest) <= 1:
        k = _positive_int(rest[0], "K") if rest else 5
        return ObjectiveSpec(
            f"vrmax_{k}", f"VR-max (K={k})", lambda: VRMax(num_particles=k, max_plate_nesting=nest)
        )
    if head == "renyi" and 1 <= len(rest) <= 2:
        try:
            alpha = float(rest[0])
        except ValueError:
            raise ValueError(f"renyi needs a numeric alpha, got {name!r}; {usage}") from None
        if not math.isfinite(alpha):
            raise ValueError(f"renyi needs a finite alpha (use vrmax for -inf), got {name!r}")
        k = _positive_int(rest[1], "K") if len(rest) == 2 else 5
        return ObjectiveSpec(
            f"renyi_{alpha:g}_{k}",
            f"Rényi α={alpha:g} (K={k})",
            lambda: RenyiBound(alpha, num_particles=k, max_plate_nesting=nest),
        )
    raise ValueError(f"unknown objective {name!r}; {usage}")


@dataclass
class CompareConfig:
    """Everything that defines a comparison run (see ``pyrogen compare --help``)."""

    dataset: str = "digits"
    data_dir: str | None = None
    objectives: list[str] = field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    architecture: str = "burda"
    likelihood: str = "bernoulli"
    z_dim: int | None = None  # None: 50 for MNIST, 16 for 8x8 digits
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    eval_samples: int = 5000
    curve_samples: int = 100
    curve_points: int = 1000
    out: str = "compare-results"
    resume: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}")
        for name in ("epochs", "batch_size", "eval_samples", "curve_samples", "curve_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.z_dim is not None and self.z_dim < 1:
            raise ValueError(f"z_dim must be positive, got {self.z_dim}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.objectives:
            raise ValueError("give at least one objective")
        keys = [parse_objective(o).key for o in self.objectives]
        if len(set(keys)) != len(keys):
            raise ValueError(f"objectives repeat: {self.objectives}")
        torch.device(self.device)  # raises on a malformed device string

    def identity(self) -> dict[str, Any]:
        """The settings a checkpoint must share with the run that resumes it."""
        return {k: v for k, v in asdict(self).items() if k not in _RESUMABLE | {"objectives"}}


class Data:
    """Train and test rows on the CPU; binary likelihoods see binarized pixels."""

    def __init__(self, config: CompareConfig) -> None:
        if config.dataset == "digits":
            train = load_digits("train").tensors[0]
            test = load_digits("test").tensors[0]
            self.image_shape: tuple[int, int] = (8, 8)
        else:
            train = load_mnist(config.data_dir, "train").tensors[0]
            test = load_mnist(config.data_dir, "test").tensors[0]
            self.image_shape = (28, 28)
        self.train = train.reshape(train.shape[0], -1).float()
        test = test.reshape(test.shape[0], -1).float()
        self.binary = config.likelihood == "bernoulli"
        if self.binary:  # one fixed draw for the test set (Burda et al.), fresh ones in training
            gen = torch.Generator().manual_seed(10_000 + config.seed)
            test = binarize_bernoulli_fixed(test, generator=gen)
        self.test = test

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """One epoch's shuffled mini-batches, each binarized afresh when drawn."""
        order = torch.randperm(self.train.shape[0], generator=generator)
        for idx in order.split(batch_size):
            x = self.train[idx]
            yield binarize_dynamic(x, generator=generator) if self.binary else x


def _z_dim(config: CompareConfig) -> int:
    if config.z_dim is not None:
        return config.z_dim
    return 50 if config.dataset == "mnist" else 16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rng_state(device: torch.device, data_rng: torch.Generator) -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state(), "data": data_rng.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device, data_rng: torch.Generator) -> None:
    torch.set_rng_state(state["cpu"])
    data_rng.set_state(state["data"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _restore(
    path: Path,
    config: CompareConfig,
    spec: ObjectiveSpec,
    vae: VAE,
    optimizer: torch.optim.Optimizer,
    data_rng: torch.Generator,
    device: torch.device,
) -> dict[str, Any]:
    ckpt = load_checkpoint(path, CHECKPOINT_KIND)
    saved = ckpt.get("config", {})
    mine = config.identity()
    diff = [
        f"{k}: checkpoint {saved.get(k)!r}, this run {v!r}"
        for k, v in mine.items()
        if saved.get(k) != v
    ]
    if ckpt.get("objective") != spec.key:
        diff.append(f"objective: checkpoint {ckpt.get('objective')!r}, this run {spec.key!r}")
    if diff:
        raise CheckpointError(
            f"{path} belongs to a different run ({'; '.join(diff)}): resume with the same "
            "settings, or drop --resume to start afresh"
        )
    if ckpt["epoch"] > config.epochs:
        raise CheckpointError(
            f"{path} has {ckpt['epoch']} epochs done, more than --epochs {config.epochs}"
        )
    try:
        vae.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} does not fit this model: {exc}") from exc
    _set_rng_state(ckpt["rng"], device, data_rng)
    return ckpt


def _train_epoch(
    vae: VAE,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[torch.Tensor],
    device: torch.device,
) -> float:
    """One pass over the batches; returns the mean training bound per data point."""
    total, count = 0.0, 0
    for x in batches:
        x = x.to(device, non_blocking=True)
        value = objective.differentiable_loss(vae.model, vae.guide, x)
        assert isinstance(value, torch.Tensor)  # single-player objectives return one tensor
        loss = value / x.shape[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total -= float(loss.detach()) * x.shape[0]
        count += x.shape[0]
    return total / count


def _fit_one(
    config: CompareConfig, spec: ObjectiveSpec, data: Data, device: torch.device
) -> dict[str, Any]:
    out = Path(config.out)
    path = out / "checkpoints" / f"{spec.key}.pt"
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    data_rng = torch.Generator().manual_seed(config.seed)
    data_shape = (1, *data.image_shape) if config.architecture == "conv" else (data.train.shape[1],)
    vae = build_vae(config.architecture, data_shape, _z_dim(config), config.likelihood)
    vae.to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)
    objective = spec.make()
    history: dict[str, list[float]] = {"train_bound": [], "heldout_ll": [], "seconds": []}
    start = 0
    if config.resume and path.exists():
        ckpt = _restore(path, config, spec, vae, optimizer, data_rng, device)
        history = {k: list(v) for k, v in ckpt["history"].items()}
        start = int(ckpt["epoch"])
        if ckpt.get("result") is not None and start == config.epochs:
            return dict(ckpt["result"])
    # the state a longer run would continue from: the final scoring's draws do not count
    rng_after_training = _rng_state(device, data_rng)
    curve_x = data.test[: config.curve_points].to(device)

    def save(result: dict[str, Any] | None = None) -> None:
        state = {
            "config": config.identity(),
            "objective": spec.key,
            "epoch": len(history["train_bound"]),
            "model": vae.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_after_training,
            "history": history,
            "result": result,
        }
        save_checkpoint(path, CHECKPOINT_KIND, state)

    bar = tqdm(
        range(start, config.epochs),
        initial=start,
        total=config.epochs,
        desc=f"{spec.label:>18}",
        unit="epoch",
        disable=not config.progress,
    )
    for _ in bar:
        batches = data.batches(config.batch_size, data_rng)
        _sync(device)
        t0 = time.perf_counter()
        bound = _train_epoch(vae, objective, optimizer, batches, device)
        _sync(device)
        history["seconds"].append(time.perf_counter() - t0)
        history["train_bound"].append(bound)
        heldout = log_likelihood(
            vae.model,
            vae.guide,
            curve_x,
            num_samples=config.curve_samples,
            particle_chunk=min(config.curve_samples, 500),
            max_plate_nesting=1,
        ).mean
        history["heldout_ll"].append(heldout)
        bar.set_postfix(bound=f"{bound:.2f}", heldout=f"{heldout:.2f}")
        rng_after_training = _rng_state(device, data_rng)
        save()
    bar.close()

    test_x = data.test.to(device)
    ll = log_likelihood(
        vae.model,
        vae.guide,
        test_x,
        num_samples=config.eval_samples,
        particle_chunk=min(config.eval_samples, 500),
        max_plate_nesting=1,
        progress=config.progress,
    )
    units, _ = active_units(vae.guide, test_x)
    samples = vae.sample(36, generator=torch.Generator(device).manual_seed(config.seed))
    result = {
        "objective": spec.key,
        "label": spec.label,
        "test_ll": ll.mean,
        "test_ll_stderr": ll.stderr,
        "test_ll_mc_stderr": ll.mc_stderr,
        "eval_samples": config.eval_samples,
        "train_bound": history["train_bound"][-1] if history["train_bound"] else math.nan,
        "seconds_per_epoch": (
            sum(history["seconds"]) / len(history["seconds"]) if history["seconds"] else math.nan
        ),
        "epochs": config.epochs,
        "active_units": units,
        "history": history,
        "samples": samples.cpu().tolist(),
    }
    save(result)
    return result


def _write_table(results: list[dict[str, Any]], config: CompareConfig, out: Path) -> str:
    k = config.eval_samples
    header = (
        f"| objective | test log p(x), K={k} | ± s.e. | final train bound | s/epoch | "
        "active units |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['test_ll']:.2f} | {r['test_ll_stderr']:.2f} | "
            f"{r['train_bound']:.2f} | {r['seconds_per_epoch']:.3f} | {r['active_units']} |"
        )
    table = "\n".join(lines)
    note = (
        f"{config.dataset}, {config.architecture} VAE (z={_z_dim(config)}, {config.likelihood}), "
        f"{config.epochs} epochs, batch {config.batch_size}, Adam lr {config.lr}, seed "
        f"{config.seed}, device {config.device}. Test log-likelihood in nats per image "
        f"(importance sampling, K={k}); s.e. over test images."
    )
    (out / "results.md").write_text(f"{table}\n\n{note}\n")
    columns = [
        "objective",
        "label",
        "test_ll",
        "test_ll_stderr",
        "test_ll_mc_stderr",
        "eval_samples",
        "train_bound",
        "seconds_per_epoch",
        "epochs",
        "active_units",
    ]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    payload = {
        "config": asdict(config),
        "results": [{k: v for k, v in r.items() if k != "samples"} for r in results],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    return table


def _plot(results: list[dict[str, Any]], config: CompareConfig, data: Data, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for r in results:
        epochs = range(1, len(r["history"]["train_bound"]) + 1)
        axes[0].plot(epochs, r["history"]["train_bound"], label=r["label"])
        axes[1].plot(epochs, r["history"]["heldout_ll"], label=r["label"])
    n_curve = min(config.curve_points, data.test.shape[0])
    axes[0].set(xlabel="epoch", ylabel="nats per image", title="training objective")
    axes[1].set(
        xlabel="epoch",
        ylabel="nats per image",
        title=f"held-out log p(x), K={config.curve_samples}, {n_curve} test images",
    )
    # the first epochs are far below the rest: show the part where the objectives differ
    for ax, key, above in [(axes[0], "train_bound", 3), (axes[1], "heldout_ll", 2)]:
        ax.grid(alpha=0.3)
        finals = [r["history"][key][-1] for r in results if r["history"][key]]
        if finals:
            ax.set_ylim(min(finals) - 8, max(finals) + above)
    axes[1].legend(loc="lower right")
    fig.suptitle(f"{config.dataset}: one {config.architecture} VAE, several objectives")
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)

    h, w = data.image_shape
    cols = min(len(results), 5)
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, results, strict=False):
        imgs = torch.tensor(r["samples"]).reshape(6, 6, h, w)
        tiled = imgs.permute(0, 2, 1, 3).reshape(6 * h, 6 * w)
        ax.imshow(tiled.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{r['label']}\n{r['test_ll']:.1f} nats", fontsize=9)
    fig.suptitle("mean images E[x | z], z from the prior")
    fig.savefig(out / "samples.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def run(config: CompareConfig) -> list[dict[str, Any]]:
    """Train and score every objective of ``config``; write the table and figures."""
    config.validate()
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    specs = [parse_objective(o) for o in config.objectives]
    data = Data(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if not config.resume:
        for spec in specs:
            (out / "checkpoints" / f"{spec.key}.pt").unlink(missing_ok=True)
    results = [_fit_one(config, spec, data, device) for spec in specs]
    table = _write_table(results, config, out)
    _plot(results, config, data, out)
    if config.progress:
        print(table)
        print(f"wrote results.md, results.csv, results.json, curves.png, samples.png to {out}")
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = CompareConfig()
    parser.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    parser.add_argument(
        "--data-dir", default=None, help="folder with the MNIST IDX files (or set PYROGEN_DATA)"
    )
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=list(DEFAULT_OBJECTIVES),
        metavar="NAME",
        help="elbo, iwae[:K], renyi:ALPHA[:K], vrmax[:K] (default: %(default)s)",
    )
    parser.add_argument("--architecture", choices=ARCHITECTURES, default=d.architecture)
    parser.add_argument("--likelihood", choices=LIKELIHOODS, default=d.likelihood)
    parser.add_argument("--z-dim", type=int, default=None, help="default 50 (MNIST), 16 (digits)")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--eval-samples", type=int, default=d.eval_samples, help="K of the final test score"
    )
    parser.add_argument("--curve-samples", type=int, default=d.curve_samples)
    parser.add_argument("--curve-points", type=int, default=d.curve_points)
    parser.add_argument("--out", default=d.out, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoints in --out"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def main(args: argparse.Namespace) -> int:
    names = {f.name for f in fields(CompareConfig)}
    config = CompareConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        run(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"pyrogen compare: error: {exc}", file=sys.stderr)
        return 2
    return 0
