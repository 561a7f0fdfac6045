r"""Generative problems: every family that fits a generator or an energy, on one problem, at
one budget, scored the same way.

A problem owns its data, its networks and its metrics; a family is a name the problem knows
how to fit. Two kinds are registered in :data:`GENERATIVE_PROBLEMS`:

* ``ring`` and ``grid``: the PacGAN mixtures (8 modes on the unit circle, sd 0.01; 25 on
  :math:`\{-4, \dots, 4\}^2`, sd 0.05). Families: every adversarial objective by name with
  its options (:func:`~pyrogen.inference.gan.parse_adversarial`: ``gan``, ``gan-minimax``,
  ``hinge``, ``wgan``, ``wgan-gp``, ``pacgan2``, ``gan+r1=0.1+ema=0.999``...) and ``kale``
  (:class:`~pyrogen.inference.kale.KALE`, scored twice: its base generator and the
  :class:`~pyrogen.inference.gebm.GEBM`'s latent-space samples). Every family trains the same
  generator from the same initial weights (``torch.manual_seed(seed)`` before it is built)
  on the same data; metrics: modes captured, share of high-quality samples, reverse KL of
  the mode histogram (:func:`~pyrogen.metrics.mode_coverage`) and MMD to held-out data.
* ``rbm-digits``: a :class:`~pyrogen.models.BernoulliRBM` with 16 hidden units on
  scikit-learn's digits (64 pixels, binarized once by a Bernoulli draw). Families: ``cd-K``
  and ``pcd-K`` (:class:`~pyrogen.inference.ContrastiveDivergence`) and ``nce``
  (:class:`~pyrogen.inference.NCE` against the training pixels' marginals, log Z learned).
  With 16 hidden units log Z is exact by enumeration, so the test log-likelihood is exact;
  the AIS estimate (:func:`~pyrogen.metrics.ais_log_partition`) is shown beside it, and for
  NCE its learned log Z.

Budgets (:class:`GenerativeBudget`) are iterations (one generator or model update each,
with the objective's own critic steps) or gradient evaluations (every role's updates
counted, so a WGAN's five critic steps per generator step and KALE's energy phases are paid
for: each family runs as many iterations as the budget buys), and optionally seconds:
training runs in chunks and stops at the first chunk past the time. Every learning rate
decays linearly to 0 over the iterations (the protocol of ``benchmarks/gan_modes.py``).
Each row states its iterations, gradient evaluations (critic and generator updates) and
seconds. Finished families are kept
in the output folder (``fits/<family>.json``) and not run again by the same command.

Example::

    from pyrogen.compare.generative import GenerativeBudget, run_generative

    result = run_generative("ring", ["gan", "gan+r1=0.1+ema=0.999", "kale"],
                            GenerativeBudget(iterations=2000), out="runs/ring")
    print(result.markdown())
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyrogen.data import ToyData, grid, load_digits, ring
from pyrogen.data.binarize import binarize_bernoulli_fixed
from pyrogen.inference import KALE, NCE, ContrastiveDivergence, Trainer, empty_guide
from pyrogen.inference.gan import ADVERSARIAL, make_adversarial, parse_adversarial
from pyrogen.inference.gebm import GEBM
from pyrogen.metrics import mmd, mode_coverage
from pyrogen.metrics.ais import ais_log_partition, base_rate_bias, rbm_log_likelihood
from pyrogen.models import BernoulliRBM, Generator, mlp

__all__ = [
    "GENERATIVE_PROBLEMS",
    "GenerativeBudget",
    "GenerativeResult",
    "run_generative",
]


@dataclass(frozen=True)
class GenerativeBudget:
    """What every family gets: ``iterations`` generator (or model) updates, cut at
    ``seconds`` of training when given; ``batch_size`` rows per update; ``seed`` for the
    initial weights, the data order and the scores."""

    iterations: int = 2000
    seconds: float | None = None
    batch_size: int | None = None  # None: the problem's own (256 mixtures, 100 RBM)
    seed: int = 0
    gradient_evaluations: int | None = None

    def describe(self) -> str:
        """The budget in words, for the tables."""
        if self.gradient_evaluations is not None:
            text = f"{self.gradient_evaluations:,} gradient evaluations per family"
        else:
            text = f"{self.iterations:,} iterations per family"
        if self.seconds is not None:
            text += f", cut at {self.seconds:g} s of training"
        return text

    def check(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise ValueError(f"iterations must be an int, got {self.iterations!r}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.gradient_evaluations is not None and (
            isinstance(self.gradient_evaluations, bool)
            or not isinstance(self.gradient_evaluations, int)
            or self.gradient_evaluations < 1
        ):
            raise ValueError(
                f"gradient_evaluations must be a positive int, got {self.gradient_evaluations!r}"
            )


@dataclass
class GenerativeResult:
    """The rows (one dict per scored model), the columns to show and the files written."""

    problem: str
    rows: list[dict[str, Any]]
    columns: list[str]
    budget: GenerativeBudget
    files: list[Path] = field(default_factory=list)

    def markdown(self) -> str:
        head = ["family", *self.columns, "iterations", "gradient evals", "seconds"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r["family"], *(_fmt(r.get(c)) for c in self.columns)]
            cells += [str(r["iterations"]), str(r["gradient_evaluations"]), f"{r['seconds']:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            f"Problem {self.problem}; budget {self.budget.describe()}, seed {self.budget.seed}."
        )
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
    return str(value)


def _train(
    trainer: Trainer, data: Tensor, budget: GenerativeBudget, batch_size: int, chunk: int = 50
) -> tuple[int, float]:
    """Runs ``trainer`` up to the budget (:func:`_iterations`) in chunks of ``chunk``
    iterations (the clock is read between chunks; every learning rate decays linearly to 0
    over the budget's iterations, set at the start of each chunk); returns the iterations
    done and the seconds spent."""
    start = time.perf_counter()
    total = _iterations(trainer, budget)
    done = 0
    while done < total:
        trainer.decay_learning_rates(done, total)
        done = min(done + chunk, total)
        trainer.fit(data, done, batch_size, seed=budget.seed)
        if budget.seconds is not None and time.perf_counter() - start >= budget.seconds:
            break
    return trainer.iteration, time.perf_counter() - start


def _gradient_evaluations(trainer: Trainer, iterations: int) -> int:
    """Updates of every role over ``iterations`` iterations, as the trainer scheduled them."""
    return sum(sum(trainer.steps_at(i).values()) for i in range(iterations))


def _iterations(trainer: Trainer, budget: GenerativeBudget) -> int:
    """The iterations ``trainer`` may run: ``budget.iterations``, or as many as
    ``budget.gradient_evaluations`` pays for (every role's updates counted as the trainer
    schedules them, so a critic's extra steps and KALE's energy phases count)."""
    if budget.gradient_evaluations is None:
        return budget.iterations
    spent, done = 0, 0
    while True:
        step = sum(trainer.steps_at(done).values())
        if spent + step > budget.gradient_evaluations:
            break
        spent, done = spent + step, done + 1
    if done < 1:
        raise ValueError(
            f"a budget of {budget.gradient_evaluations} gradient evaluations is less than one "
            f"iteration ({sum(trainer.steps_at(0).values())} updates)"
        )
    return done


class MixtureProblem:
    """``ring`` or ``grid``: a generator 2-H-H-H-2 (ReLU, 2-d latent) and a critic (2 pack)-C-
    C-1 (LeakyReLU 0.2), 20,000 training points, 2,500 held-out points and 2,500 scored
    samples."""

    columns = ["modes", "high_quality_%", "reverse_kl", "mmd2"]
    default_families = ("gan", "gan+r1=0.1+ema=0.999", "wgan-gp", "kale")
    batch_size = 256
    #: Adam's learning rate for the adversarial objectives (benchmarks/gan_modes.py's: 1e-3
    #: collapsed GAN and hinge on the ring); WGAN keeps RMSProp 5e-5, KALE Adam 1e-4.
    adam_lr = {"ring": 3e-4, "grid": 1e-3}

    def __init__(
        self,
        name: str,
        hidden: int = 128,
        critic_hidden: int = 128,
        num_scored: int = 2500,
        gebm_steps: int = 100,
    ) -> None:
        if name not in ("ring", "grid"):
            raise ValueError(f"a mixture problem is 'ring' or 'grid', got {name!r}")
        self.name = name
        self.hidden, self.critic_hidden = hidden, critic_hidden
        self.num_scored, self.gebm_steps = num_scored, gebm_steps
        self.description = (
            "8 Gaussians on a circle (PacGAN): adversarial objectives and KALE"
            if name == "ring"
            else "25 Gaussians on a 5x5 grid (PacGAN): adversarial objectives and KALE"
        )
        self.families = {
            "<adversarial>[+r1=G][+r2=G][+ema=D]": "any of " + ", ".join(ADVERSARIAL),
            "kale": "KALE energy on the generator; its base and GEBM samples scored",
        }

    def check_family(self, family: str) -> None:
        if family != "kale":
            parse_adversarial(family)

    def _data(self, n: int, seed: int) -> ToyData:
        gen = torch.Generator().manual_seed(seed)
        return ring(n, generator=gen) if self.name == "ring" else grid(n, generator=gen)

    def _score(self, x: Tensor, data: ToyData, held_out: Tensor) -> dict[str, Any]:
        assert data.std is not None and data.centers is not None
        cov = mode_coverage(x, data.centers, data.std)
        return {
            "modes": f"{cov.modes}/{data.centers.shape[0]}",
            "modes_captured": cov.modes,
            "num_modes": int(data.centers.shape[0]),
            "high_quality_%": 100 * cov.high_quality,
            "reverse_kl": cov.reverse_kl,
            "mmd2": mmd(x, held_out).value,
            "samples": x.tolist(),
            "centers": data.centers.tolist(),
        }

    def fit(self, family: str, budget: GenerativeBudget, progress: bool) -> list[dict[str, Any]]:
        data = self._data(20_000, 1000 + budget.seed)
        held_out = self._data(self.num_scored, 2000 + budget.seed).samples
        pyro.clear_param_store()
        torch.manual_seed(budget.seed)  # the same generator weights for every family
        net = mlp([2, self.hidden, self.hidden, self.hidden, 2])
        generator = Generator(net, latent_dim=2, event_shape=(2,))
        batch = budget.batch_size or self.batch_size
        if family == "kale":
            energy = mlp(
                [2, self.critic_hidden, self.critic_hidden, 1], activation=lambda: nn.LeakyReLU(0.2)
            )
            objective: Any = KALE(energy)
            ema = None
        else:
            name, penalties, ema = parse_adversarial(family)
            pack = ADVERSARIAL[name][1].get("pack", 1)
            critic = mlp(
                [2 * pack, self.critic_hidden, self.critic_hidden, 1],
                activation=lambda: nn.LeakyReLU(0.2),
            )
            objective = make_adversarial(name, critic, **penalties)
        optimizers = {}
        for role, (cls, kwargs) in objective.default_optimizers.items():
            if cls is torch.optim.Adam and family != "kale":
                kwargs = {**kwargs, "lr": self.adam_lr[self.name]}
            optimizers[role] = (cls, kwargs)
        trainer = Trainer(objective, generator, optimizers=optimizers, progress=progress, ema=ema)
        iterations, seconds = _train(trainer, data.samples, budget, batch)
        cost = {
            "iterations": iterations,
            "gradient_evaluations": _gradient_evaluations(trainer, iterations),
            "seconds": seconds,
        }
        torch.manual_seed(budget.seed + 1)
        rows = []
        label = f"{family} (base generator)" if family == "kale" else family
        scored = self._score(generator.sample(self.num_scored), data, held_out)
        rows.append({"family": label, **cost, **scored})
        if family == "kale":
            start = time.perf_counter()
            gebm = GEBM(generator, energy, model_args=(torch.zeros(1, 2),))
            draws = gebm.sample(
                self.num_scored,
                num_steps=self.gebm_steps,
                step_size=0.05,
                generator=torch.Generator().manual_seed(budget.seed),
            )
            sampling = time.perf_counter() - start
            row = {"family": f"kale (GEBM, {self.gebm_steps} kinetic Langevin steps)", **cost}
            row["seconds"] = seconds + sampling
            rows.append(row | self._score(draws.x.detach(), data, held_out))
        return rows

    def figure(self, rows: list[dict[str, Any]], path: Path) -> Path | None:
        from pyrogen.metrics.plots import plot_mode_samples

        runs = [
            {
                "dataset": self.name,
                "objective": r["family"],
                "iterations": r["iterations"],
                "samples": r["samples"],
                "centers": r["centers"],
                "modes": r["modes_captured"],
                "num_modes": r["num_modes"],
                "high_quality": r["high_quality_%"] / 100,
            }
            for r in rows
            if "samples" in r
        ]
        if not runs:
            return None
        plot_mode_samples(runs, path)
        return path


class RBMDigitsProblem:
    """``rbm-digits``: BernoulliRBM(64, 16) on the digits' 1,500 training images (binarized
    once, Bernoulli draws with the grey level as probability), scored on the 297 test images.
    SGD, learning rate 0.05, momentum 0.9, batches of 100 (the visible biases start at the
    logits of the training marginals, Hinton 2010)."""

    name = "rbm-digits"
    description = "an RBM with 16 hidden units on binarized digits: CD-k, PCD-k, NCE (exact log Z)"
    columns = ["test_ll", "test_ll_ais", "log_z", "learned_log_z"]
    default_families = ("cd-1", "cd-10", "pcd-1", "nce")
    batch_size = 100
    families = {
        "cd-K": "contrastive divergence with K Gibbs steps (CD-1, CD-10...)",
        "pcd-K": "persistent CD, 100 persistent chains",
        "nce": "noise-contrastive estimation against the pixel marginals, log Z learned",
    }

    def check_family(self, family: str) -> None:
        self._k(family)

    @staticmethod
    def _k(family: str) -> tuple[str, int]:
        if family == "nce":
            return "nce", 0
        kind, _, k = family.partition("-")
        if kind in ("cd", "pcd") and k.isdigit() and int(k) >= 1:
            return kind, int(k)
        raise ValueError(f"unknown family {family!r} for rbm-digits; families: cd-K, pcd-K, nce")

    def _data(self) -> tuple[Tensor, Tensor]:
        binary = []
        for i, x in enumerate((load_digits("train").tensors[0], load_digits("test").tensors[0])):
            binary.append(binarize_bernoulli_fixed(x, torch.Generator().manual_seed(7 + i)))
        return binary[0], binary[1]

    def fit(self, family: str, budget: GenerativeBudget, progress: bool) -> list[dict[str, Any]]:
        kind, k = self._k(family)
        train, test = self._data()
        pyro.clear_param_store()
        torch.manual_seed(budget.seed)
        rbm = BernoulliRBM(64, 16, init_scale=0.01)
        with torch.no_grad():
            rbm.visible_bias.copy_(base_rate_bias(train, smoothing=0.01))
        nce = None
        if kind == "nce":
            marginals = train.mean(0).clamp(0.01, 0.99)
            nce = NCE(
                dist.Bernoulli(probs=marginals).to_event(1), nu=1.0, learn_log_normalizer=True
            )

            def model(x: Tensor) -> None:
                pyro.module("rbm", rbm)
                rbm.model(x)

            trainer = Trainer(
                nce,
                model,
                empty_guide,
                optimizers={"model": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9})},
                progress=progress,
            )
        else:
            cd = ContrastiveDivergence(
                rbm,
                k=k,
                persistent=kind == "pcd",
                num_chains=100 if kind == "pcd" else None,
                generator=torch.Generator().manual_seed(budget.seed + 1),
            )
            trainer = Trainer(
                cd,
                rbm.model,
                empty_guide,
                optimizers={"model": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9})},
                progress=progress,
            )
        iterations, seconds = _train(trainer, train, budget, budget.batch_size or self.batch_size)
        log_z = float(rbm.log_partition())
        ais = ais_log_partition(
            rbm,
            base_bias=base_rate_bias(train, smoothing=0.01),
            betas=torch.linspace(0, 1, 2001, dtype=torch.float64),
            num_runs=100,
            generator=torch.Generator().manual_seed(budget.seed),
        )
        exact = rbm_log_likelihood(rbm, test, log_z)
        estimated = rbm_log_likelihood(rbm, test, ais)
        learned = None
        if nce is not None:
            assert nce.normalizer is not None
            learned = float(nce.normalizer.log_Z.detach())
        gibbs = k if kind != "nce" else 0
        return [
            {
                "family": family,
                "iterations": iterations,
                # one gradient per update; CD's Gibbs steps are counted apart
                "gradient_evaluations": iterations,
                "gibbs_steps_per_update": gibbs,
                "seconds": seconds,
                "test_ll": exact.mean,
                "test_ll_se": exact.stderr,
                "test_ll_ais": estimated.mean,
                "log_z": log_z,
                "log_z_ais": float(ais.log_z),
                "learned_log_z": learned,
            }
        ]

    def figure(self, rows: list[dict[str, Any]], path: Path) -> Path | None:
        return None


#: name -> a function building the problem.
GENERATIVE_PROBLEMS: dict[str, Callable[[], MixtureProblem | RBMDigitsProblem]] = {
    "ring": lambda: MixtureProblem("ring"),
    "grid": lambda: MixtureProblem("grid"),
    "rbm-digits": RBMDigitsProblem,
}


def run_generative(
    problem: str | MixtureProblem | RBMDigitsProblem,
    families: Sequence[str] | None = None,
    budget: GenerativeBudget | None = None,
    out: str | Path = "runs/compare-generative",
    progress: bool = True,
) -> GenerativeResult:
    """Fits every family on ``problem`` (a name in :data:`GENERATIVE_PROBLEMS`, or a problem
    built with other sizes) at ``budget`` and writes ``results.{md,csv,json}`` (and
    ``samples.png`` for the mixtures) to ``out``; a family whose fit is already in
    ``out/fits`` with the same problem and budget is read, not run again."""
    if isinstance(problem, str):
        if problem not in GENERATIVE_PROBLEMS:
            raise ValueError(
                f"unknown generative problem {problem!r}; choose from {list(GENERATIVE_PROBLEMS)}"
            )
        prob = GENERATIVE_PROBLEMS[problem]()
    else:
        prob = problem
    budget = budget or GenerativeBudget()
    budget.check()
    families = list(families or prob.default_families)
    if not families:
        raise ValueError("no families given")
    for family in families:
        prob.check_family(family)
    out = Path(out)
    fits = out / "fits"
    fits.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for family in families:
        path = fits / f"{family}.json"
        identity = {"problem": prob.name, "family": family, "budget": asdict(budget)}
        identity["sizes"] = {k: v for k, v in vars(prob).items() if isinstance(v, int)}
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("identity") == identity:
                rows += saved["rows"]
                continue
        fitted = prob.fit(family, budget, progress)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"identity": identity, "rows": fitted}, default=float))
        tmp.replace(path)
        rows += fitted
    result = GenerativeResult(prob.name, rows, list(prob.columns), budget)
    result.files = _write(out, prob, result)
    return result


def _write(out: Path, prob: Any, result: GenerativeResult) -> list[Path]:
    scalar = [{k: v for k, v in r.items() if k not in ("samples", "centers")} for r in result.rows]
    md = out / "results.md"
    md.write_text(result.markdown() + "\n")
    js = out / "results.json"
    js.write_text(
        json.dumps(
            {"problem": result.problem, "budget": asdict(result.budget), "rows": scalar},
            indent=1,
            default=float,
        )
        + "\n"
    )
    cs = out / "results.csv"
    names = list(dict.fromkeys(k for r in scalar for k in r))
    with cs.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(scalar)
    files = [md, cs, js]
    figure = prob.figure(result.rows, out / "samples.png")
    if figure is not None:
        files.append(figure)
    return files
