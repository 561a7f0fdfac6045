"""KALE on the ring of 8 and the grid of 25 Gaussians and on a thin spiral: the base
generator against its GEBM.

Generalized Energy Based Models (Arbel, Zhou & Gretton, ICLR 2021,
https://arxiv.org/abs/2003.05033) on the PacGAN mixtures of ``benchmarks/gan_modes.py``
(ring: 8 modes on the unit circle, sigma 0.01; grid: 25 modes at {-4, -2, 0, 2, 4}^2, sigma
0.05) and on a density with a sharp feature and no modes, ``pyrogen.data.spiral`` with two
arms of 1.5 turns out to radius 1, 1/3 apart, blurred by sigma 0.02 only; with the networks
of ``gan_modes.py``: a generator 2-256-256-256-2 (ReLU, 2-d latent) and an energy the size
of its critic, 2-400-400-1 (LeakyReLU 0.2). ``pyrogen.inference.KALE`` trains both through
``pyrogen.inference.Trainer`` (the paper's gradient penalty and energy schedule: 5 energy
steps per generator step, 100 at the start and every 500 generator steps; Adam with betas
(0.5, 0.999), the learning rate decaying linearly to 0), then ``--refine-steps`` energy-only
steps on the fixed base at a weaker penalty (the reference code's ``train_mode: energy``;
see :func:`refine` for why). The model is the base generator tilted by the energy, ``Q(dx) ~
e^{-E(x)} G(dx)``; ``pyrogen.inference.GEBM`` samples it in the latent space with kinetic
Langevin (``--sampler-steps`` BAOAB steps of ``--step-size``, friction 1, one chain per
sample from exact base draws). Both sample sets (2,500 points) are scored by modes captured,
the share within 3 sigma of the nearest mode (high quality), the reverse KL of the mode
histogram and MMD^2 to held-out data. The spiral's "modes" are its 20 segments of equal mass
(10 per arm, each 50 of ``pyrogen.data.spiral_curve``'s 1,000 points) and its high quality
is the share within 3 sigma of the curve (99.7 % for exact draws, against 98.9 % for the
mixtures' 2-d components); a second held-out set is scored too, as the ceiling of every
metric. Writes ``samples.png`` (base and GEBM on each data set), ``kale.png`` (the KALE
estimate of the energy steps through training) and ``kale_toys.json``.

    .venv/bin/python examples/kale_toys.py --out runs/kale_toys
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import pyro
import torch
from torch import nn
from tqdm import tqdm

from pyrogen.data import ToyData, grid, ring, spiral, spiral_curve
from pyrogen.inference import GEBM, KALE, Trainer, empty_guide
from pyrogen.metrics import mmd, mode_coverage
from pyrogen.metrics.plots import plot_mode_samples
from pyrogen.models import Generator, mlp

DATASETS = ("ring", "grid", "spiral")
# Adam's learning rate per data set, as benchmarks/gan_modes.py tuned them for its GANs (the
# spiral, at the ring's scale, takes the ring's)
LEARNING_RATES = {"ring": 3e-4, "grid": 1e-3, "spiral": 3e-4}
SPIRAL_NOISE = 0.02
SPIRAL_SEGMENTS = 20  # of equal mass, 10 per arm: the spiral's "modes"
SPIRAL_POINTS = 500  # per arm, at most 0.025 apart: the curve the spiral is scored against


def make_data(name: str, n: int, seed: int) -> ToyData:
    """The data set ``name`` (``DATASETS``) from ``seed``; the spiral's ``centers`` are the
    points of its curve (:func:`pyrogen.data.spiral_curve`), in segments of equal mass."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {DATASETS}")
    gen = torch.Generator().manual_seed(seed)
    if name == "spiral":
        samples = spiral(n, noise=SPIRAL_NOISE, generator=gen).samples
        return ToyData(samples, spiral_curve(SPIRAL_POINTS), SPIRAL_NOISE)
    return ring(n, generator=gen) if name == "ring" else grid(n, generator=gen)


def num_modes(name: str, data: ToyData) -> int:
    """The mixture's modes, or the spiral's segments."""
    assert data.centers is not None
    return SPIRAL_SEGMENTS if name == "spiral" else int(data.centers.shape[0])


def plotted_centers(name: str, data: ToyData) -> list[list[float]]:
    """The crosses drawn over the samples: the modes, or every 25th point of the curve."""
    assert data.centers is not None
    return data.centers[:: 25 if name == "spiral" else 1].tolist()


def score(
    samples: torch.Tensor, data: ToyData, held_out: torch.Tensor, groups: int | None = None
) -> dict[str, Any]:
    """Mode coverage (VEEGAN/PacGAN rules) and MMD^2 to held-out data; ``groups``: count
    modes and their histogram over that many equal groups of consecutive centres (the
    spiral's segments)."""
    assert data.centers is not None and data.std is not None
    cov = mode_coverage(samples, data.centers, data.std)
    modes, reverse_kl = cov.modes, cov.reverse_kl
    if groups is not None and groups != data.centers.shape[0]:
        counts = cov.counts.view(groups, -1).sum(1).double()
        modes = int((counts > 0).sum())
        p = counts[counts > 0] / counts.sum()
        reverse_kl = float((p * (p * groups).log()).sum()) if counts.sum() > 0 else math.inf
    return {
        "modes": modes,
        "high_quality": cov.high_quality,
        "reverse_kl": reverse_kl,
        "mmd": mmd(samples, held_out).value,
    }


class Fitted(NamedTuple):
    """A trained KALE model and its data."""

    generator: Generator
    energy: nn.Module
    kale: KALE
    data: ToyData
    held_out: torch.Tensor
    history: dict[str, list[float]]
    seconds: float
    lr: float
    dataset: str

    @property
    def groups(self) -> int:
        """The modes (the spiral's segments) that scoring counts."""
        return num_modes(self.dataset, self.data)


def fit(
    dataset: str,
    seed: int,
    iterations: int,
    *,
    lr: float | None = None,
    energy_lr: float | None = None,
    batch_size: int = 256,
    hidden: int = 256,
    energy_hidden: int = 400,
    penalty: float = 1.0,
    energy_steps: int = 5,
    warmup_steps: int = 100,
    num_held_out: int = 2500,
    device: str = "cpu",
    progress: bool = True,
    state: str | Path | None = None,
) -> Fitted:
    """Trains KALE on one data set: 100,000 points (seed ``1000 + seed``), a held-out set
    (seed ``2000 + seed``), the networks built after ``torch.manual_seed(seed)``, the
    protocol of ``benchmarks/gan_modes.py``. ``state``: a file of the trained state (see
    :func:`save_state`); when it exists the networks are read from it instead of trained
    (with the KALE curve, the seconds and torch's random state at the end of training, so
    what follows draws what it would have), else it is written after training."""
    data = make_data(dataset, 100_000, seed=1000 + seed)
    held_out = make_data(dataset, num_held_out, seed=2000 + seed).samples
    pyro.clear_param_store()
    torch.manual_seed(seed)
    generator = Generator(mlp([2, hidden, hidden, hidden, 2]), latent_dim=2, event_shape=(2,))
    energy = mlp([2, energy_hidden, energy_hidden, 1], activation=lambda: nn.LeakyReLU(0.2))
    generator, energy = generator.to(device), energy.to(device)
    kale = KALE(energy, penalty=penalty, energy_steps=energy_steps, warmup_steps=warmup_steps)
    rate = LEARNING_RATES[dataset] if lr is None else lr
    rates = {"generator": rate, "critic": rate if energy_lr is None else energy_lr}
    optimizers = {
        role: (cls, {**kwargs, "lr": rates[role]})
        for role, (cls, kwargs) in kale.default_optimizers.items()
    }

    def decay(trainer: Trainer) -> None:  # every learning rate linearly to 0
        trainer.decay_learning_rates(trainer.iteration, iterations)

    if state is not None and Path(state).exists():
        saved = torch.load(state, map_location=device, weights_only=True)
        generator.load_state_dict(saved["generator"])
        energy.load_state_dict(saved["energy"])
        kale.log_normaliser.load_state_dict(saved["log_normaliser"])
        torch.set_rng_state(saved["rng"])
        history = {"kale": saved["kale"].tolist()}
        seconds = float(saved["seconds"])
        return Fitted(generator, energy, kale, data, held_out, history, seconds, rate, dataset)
    trainer = Trainer(kale, generator, optimizers=optimizers, callback=decay, progress=progress)
    start = time.perf_counter()
    history = trainer.fit(data.samples.to(device), iterations, batch_size, seed=seed)
    seconds = time.perf_counter() - start
    fitted = Fitted(generator, energy, kale, data, held_out, history, seconds, rate, dataset)
    if state is not None:
        save_state(fitted, state)
    return fitted


def refine(
    fitted: Fitted,
    steps: int,
    penalty: float,
    lr: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> float:
    """Energy-only KALE steps with the base generator fixed (the reference code's
    ``train_mode: energy``), at a weaker gradient penalty than in the joint phase. The
    joint phase needs the paper's penalty: at 0.01 the energy of the data falls to -50
    within the first 200 steps while the generator is still a blob, and the KALE loss
    overflows. With the base fixed, the energy only has to approach the log-ratio
    ``-log dP/dG`` of a base that already covers the modes, and a weak penalty lets it be
    steep across a mode 0.05 wide. Appends the KALE estimate of each step to the history
    and returns the seconds taken."""
    kale, generator = fitted.kale, fitted.generator
    x = fitted.data.samples.to(generator._zero.device)
    kale.penalty = float(penalty)
    params = [*kale.energy.parameters(), *kale.log_normaliser.parameters()]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
    rows = torch.Generator().manual_seed(seed)
    curve = fitted.history.setdefault("kale", [])
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc="energy only", disable=not progress):
        batch = x[torch.randint(x.shape[0], (batch_size,), generator=rows)]
        opt.zero_grad()  # the generated points are detached in the energy's loss
        loss = kale.role_loss("critic", generator, empty_guide, batch) / batch_size
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the energy-only KALE loss is {float(loss)}")
        loss.backward()
        opt.step()
        curve.append(kale.stats["kale"])
    return time.perf_counter() - start


def save_state(fitted: Fitted, path: str | Path) -> None:
    """Writes the state of the generator, the energy and the log-normaliser, the KALE curve,
    the seconds of training and torch's random state (atomically: a stopped run leaves no
    half-written file)."""
    modules = {"generator": fitted.generator, "energy": fitted.energy}
    modules["log_normaliser"] = fitted.kale.log_normaliser
    state: dict[str, Any] = {k: v.state_dict() for k, v in modules.items()}
    state |= {"kale": torch.tensor(fitted.history.get("kale", []), dtype=torch.float64)}
    state |= {"seconds": fitted.seconds, "rng": torch.get_rng_state()}
    tmp = Path(path).with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def gebm_key(beta: float) -> str:
    """The result key of the GEBM sampled at ``beta``: ``gebm`` for the model itself."""
    return "gebm" if beta == 1.0 else f"gebm_beta{beta:g}"


def sample_both(
    fitted: Fitted,
    num_samples: int,
    sampler_steps: int,
    step_size: float,
    seed: int,
    betas: tuple[float, ...] = (1.0,),
) -> dict[str, Any]:
    """Scores of ``num_samples`` draws of the base generator and of the GEBM (kinetic
    Langevin in the latent space), with their seconds and the samples; one GEBM entry per
    ``beta`` (:func:`gebm_key`: ``beta`` > 1 samples the colder ``p(z) e^{-beta E(G(z))}``,
    which sharpens the tilt)."""
    generator, energy = fitted.generator, fitted.energy
    held_out = fitted.held_out.cpu()
    start = time.perf_counter()
    base = generator.sample(num_samples)
    base_seconds = time.perf_counter() - start
    gebm = GEBM(generator, energy, model_args=(None, 1))
    modes = generator.training, energy.training
    generator.eval()
    energy.eval()
    out: dict[str, Any] = {
        "base": {
            **score(base.cpu(), fitted.data, held_out, fitted.groups),
            "seconds": base_seconds,
            "samples": base.cpu().tolist(),
        }
    }
    for beta in betas:
        start = time.perf_counter()
        tilted = gebm.sample(
            num_samples,
            num_steps=sampler_steps,
            step_size=step_size,
            beta=beta,
            generator=torch.Generator(device=generator._zero.device).manual_seed(seed),
        )
        out[gebm_key(beta)] = {
            **score(tilted.x.cpu(), fitted.data, held_out, fitted.groups),
            "seconds": time.perf_counter() - start,
            "sampler_steps": sampler_steps,
            "step_size": step_size,
            "beta": beta,
            "samples": tilted.x.cpu().tolist(),
        }
    out["gebm_sir"] = resampled(fitted, num_samples, seed)
    generator.train(modes[0])
    energy.train(modes[1])
    return out


SIR_PROPOSALS = 400_000


def resampled(fitted: Fitted, num_samples: int, seed: int) -> dict[str, Any]:
    """Scores of ``num_samples`` draws of the GEBM by sampling importance resampling from
    ``SIR_PROPOSALS`` base draws (:meth:`pyrogen.inference.GEBM.resample`): the model
    itself, without a chain's error, when the effective sample size is large; the latent
    chains' draws are checked against it."""
    gebm = GEBM(fitted.generator, fitted.energy, model_args=(None, 1))
    modes = fitted.generator.training, fitted.energy.training
    fitted.generator.eval()
    fitted.energy.eval()
    start = time.perf_counter()
    rng = torch.get_rng_state()  # the proposals' draws leave the rest of the run's as they were
    torch.manual_seed(4000 + seed)
    out = gebm.resample(num_samples, SIR_PROPOSALS, generator=torch.Generator().manual_seed(seed))
    torch.set_rng_state(rng)
    seconds = time.perf_counter() - start
    fitted.generator.train(modes[0])
    fitted.energy.train(modes[1])
    return {
        **score(out.x.cpu(), fitted.data, fitted.held_out.cpu(), fitted.groups),
        "seconds": seconds,
        "ess": out.ess,
        "num_proposals": out.num_proposals,
        "beta": 1.0,
    }


def train(
    dataset: str,
    seed: int,
    iterations: int,
    *,
    refine_steps: int = 0,
    refine_penalty: float = 0.001,
    refine_lr: float = 1e-4,
    sampler_steps: int = 200,
    step_size: float = 0.03,
    num_scored: int = 2500,
    progress: bool = True,
    betas: tuple[float, ...] = (1.0,),
    save: str | Path | None = None,
    joint: str | Path | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Trains KALE on one data set (:func:`fit`, ``kwargs`` passed on), then
    ``refine_steps`` energy-only steps (:func:`refine`), and scores ``num_scored`` draws of
    the base generator and of the GEBM. Returns the scores, the seconds of training and of
    each sampler, the KALE curve (the estimate at the last energy step of each generator
    iteration, then at every energy-only step) and the samples. ``save``: a file for the
    trained networks' state (:func:`save_state`), so that other samplers can be tried on
    them without training again; ``joint``: the same after the joint phase, read instead of
    training when it exists (:func:`fit`), so that energy-only phases can be compared on
    one joint phase."""
    fitted = fit(
        dataset, seed, iterations, num_held_out=num_scored, progress=progress, state=joint, **kwargs
    )
    seconds = fitted.seconds
    if refine_steps > 0:
        seconds += refine(
            fitted, refine_steps, refine_penalty, refine_lr, seed=seed, progress=progress
        )
    if save is not None:
        save_state(fitted, save)
    scored = sample_both(fitted, num_scored, sampler_steps, step_size, seed, betas)
    gebm = GEBM(fitted.generator, fitted.energy, model_args=(None, 1))
    # a second held-out set, scored as the samples are: each metric's ceiling
    reference = make_data(dataset, num_scored, seed=3000 + seed).samples
    return {
        "dataset": dataset,
        "seed": seed,
        "iterations": iterations,
        "refine_steps": refine_steps,
        "refine_penalty": refine_penalty,
        "lr": fitted.lr,
        "seconds": seconds,
        "num_modes": fitted.groups,
        "centers": plotted_centers(dataset, fitted.data),
        **scored,
        "data": score(reference, fitted.data, fitted.held_out.cpu(), fitted.groups),
        "log_normalizer": gebm.log_normalizer(20_000).value,
        "kale": fitted.history.get("kale", []),
    }


def _mean_curve(values: list[float], width: int) -> tuple[list[int], list[float]]:
    """Means over consecutive windows of ``width`` iterations (the raw estimate is one
    batch's, noisy)."""
    xs, ys = [], []
    for i in range(0, len(values), width):
        window = [v for v in values[i : i + width] if math.isfinite(v)]
        if window:
            xs.append(i + len(window))
            ys.append(sum(window) / len(window))
    return xs, ys


def plot_kale(runs: list[dict[str, Any]], path: Path) -> None:
    """The KALE estimate through training, one line per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for run in runs:
        xs, ys = _mean_curve(run["kale"], max(1, len(run["kale"]) // 100))
        ax.plot(xs, ys, label=run["dataset"])
    ax.set_xlabel("generator iteration")
    ax.set_ylabel("KALE (batch estimate, window mean)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs as ``plot_mode_samples`` draws them: one panel for the base generator and
    one for its GEBM."""
    panels = []
    for run in runs:
        for key, name in (("base", "KALE base generator"), ("gebm", "GEBM")):
            panels.append(
                {
                    "dataset": run["dataset"],
                    "objective": name,
                    "iterations": run["iterations"],
                    "centers": run["centers"],
                    "num_modes": run["num_modes"],
                    **run[key],
                }
            )
    return panels


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for d in args.datasets.split(","):
        run = train(
            d,
            args.seed,
            args.num_iterations,
            lr=args.lr,
            batch_size=args.batch_size,
            hidden=args.hidden,
            energy_hidden=args.energy_hidden,
            warmup_steps=args.warmup_steps,
            refine_steps=args.refine_steps,
            refine_penalty=args.refine_penalty,
            sampler_steps=args.sampler_steps,
            step_size=args.step_size,
            num_scored=args.num_scored,
            device=args.device,
            progress=not args.smoke_test,
        )
        for key in ("base", "gebm"):
            r = run[key]
            print(
                f"{d:>4} {key:>4}: {r['modes']:>2}/{run['num_modes']} modes, "
                f"{100 * r['high_quality']:5.1f}% high quality, reverse KL "
                f"{r['reverse_kl']:.3f}, MMD^2 {r['mmd']:.2e} ({r['seconds']:.1f} s to sample)"
            )
        runs.append(run)
    plot_mode_samples(figure_runs(runs), out / "samples.png", None, DATASETS)
    plot_kale(runs, out / "kale.png")
    summary = []
    for run in runs:
        r = {k: v for k, v in run.items() if k != "centers"}
        r["base"] = {k: v for k, v in run["base"].items() if k != "samples"}
        r["gebm"] = {k: v for k, v in run["gebm"].items() if k != "samples"}
        summary.append(r)
    (out / "kale_toys.json").write_text(json.dumps(summary, indent=1))
    return runs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument(
        "--num-iterations", type=int, default=1500, help="joint KALE iterations (generator updates)"
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256, help="generator width (3 layers)")
    p.add_argument("--energy-hidden", type=int, default=400, help="energy width (2 layers)")
    p.add_argument(
        "--lr", type=float, default=None, help="Adam learning rate (default: ring 3e-4, grid 1e-3)"
    )
    p.add_argument("--warmup-steps", type=int, default=100, help="energy steps of a long phase")
    p.add_argument(
        "--refine-steps", type=int, default=1000, help="energy-only steps after the joint phase"
    )
    p.add_argument(
        "--refine-penalty", type=float, default=0.001, help="gradient penalty of those steps"
    )
    p.add_argument("--sampler-steps", type=int, default=200, help="kinetic Langevin steps")
    p.add_argument("--step-size", type=float, default=0.03, help="kinetic Langevin step size")
    p.add_argument("--num-scored", type=int, default=2500, help="samples scored (PacGAN: 2500)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/kale_toys")
    p.add_argument("--smoke-test", action="store_true")
    return p


if __name__ == "__main__":
    args = parser().parse_args()
    if args.smoke_test:
        args.num_iterations, args.hidden, args.energy_hidden = 6, 16, 16
        args.batch_size, args.num_scored, args.warmup_steps, args.sampler_steps = 64, 200, 3, 10
        args.refine_steps = min(args.refine_steps, 3)
    main(args)
