"""The data, and each objective fitted on the :class:`~pyrogen.inference.Trainer`, then scored.

Every objective starts from the same initial weights (``torch.manual_seed(seed)`` before the
VAE is built) and sees the same mini-batches: the trainer's data generator, seeded with
``seed``, draws each pass's order and then each batch's dynamic binarization
(:meth:`Data.transform`). After each pass an epoch callback logs the training bound, the
held-out estimate and the seconds the pass took (``trainer.log``, so they are checkpointed
with the rest). The trainer's checkpoint also carries the run's settings and, once the fit
is scored, its result: a resumed run refuses a checkpoint of other settings, and reuses a
finished result instead of training again. The final scoring draws from a forked random
state, so a finished checkpoint continues (a longer ``--epochs``) exactly as an
uninterrupted run.

**AVB rows** (``avb``, ``avb-ac``): the Gaussian VAE is built as for the other rows, from the
same seed, and its decoder kept, so every row starts from the same decoder; an implicit
encoder (:class:`~pyrogen.models.avb_mnist.NoiseEncoder`, or
:class:`~pyrogen.models.avb_mnist.BasisNoiseEncoder` for adaptive contrast) and an
:class:`~pyrogen.models.avb_mnist.InnerProductCritic` are built after it, smaller for the 8x8
digits than for MNIST. Both roles train with Adam at ``lr`` on the same stream of batches as
the other rows; the trainer steps the critic and then the model each on its own batch, so an
AVB epoch makes half the model updates of the others. The guide has no density: the
held-out estimates weigh particles from a diagonal Gaussian fitted per image to 64 guide
draws (:class:`~pyrogen.metrics.FittedGaussianGuide`, still a stochastic lower bound of
``log p(x)``), active units come from those draws' means
(:func:`~pyrogen.metrics.active_units_from_draws`), and the training column is the AVB
objective's ELBO estimate with the critic for ``log q``, which is not a bound.

**Self-contrastive rows** (``sc[:NU[:K]]``): the Gaussian VAE of every row, trained by
:class:`~pyrogen.inference.SelfContrastive`: logistic regression of each batch against
``NU`` times as many samples of a frozen copy of the VAE, the ``K``-particle IWAE bound
standing in for the log-density of both. The first copy is taken at the first update, so
it is the VAE's initial weights (the rows' common start); the trainer's end-of-epoch hook
renews it after epochs 5, 10, ... (``noise_refreshes`` in the history counts the copies
taken), and its checkpoints hold the copy, so a resumed run scores against the same noise.
The loss minimised is the classifier's, which is no bound: the training column is the
VAE's own bound on the data rows of its training batches (computed by that loss, the
ELBO's single-draw estimate at ``K = 1``, as the ELBO row reports its own), and the
NCE loss per data point and the classifier's accuracy per pass are in the history
(``nce_loss``, ``nce_accuracy``). The held-out estimates use the VAE's guide, as for the
bound rows.

Under ``torchrun`` (``torchrun --nproc_per_node=N -m pyrogen compare ...``: the command line
opens the process group) the trainer runs data-parallel, ``--batch-size`` rows per rank; the
held-out estimates split the test images among the ranks
(:func:`~pyrogen.distributed.log_likelihood_distributed`), and rank 0 alone writes the
checkpoints, the table and the figures.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyrogen import distributed as ddp
from pyrogen.checkpoint import CheckpointError, load_checkpoint
from pyrogen.compare.config import CompareConfig, ObjectiveSpec, parse_objective
from pyrogen.compare.report import plot, write_table
from pyrogen.data import binarize_bernoulli_fixed, binarize_dynamic, load_digits, load_mnist
from pyrogen.inference import SelfContrastive, Trainer
from pyrogen.inference.trainer import KIND as TRAINER_KIND
from pyrogen.metrics import (
    FittedGaussianGuide,
    active_units,
    active_units_from_draws,
    log_likelihood,
)
from pyrogen.models import VAE, build_vae
from pyrogen.models.avb_mnist import (
    BasisNoiseEncoder,
    ImplicitVAE,
    InnerProductCritic,
    NoiseEncoder,
)
from pyrogen.warnings import PyrogenWarning

__all__ = ["Data", "run"]

_CURVE_KEYS = ("train_bound", "heldout_ll", "seconds")
_SC_KEYS = ("nce_loss", "nce_accuracy", "noise_refreshes")  # the self-contrastive rows' too
# The AVB networks per dataset: MNIST the sizes of benchmarks/avb_mnist.py (the paper's
# 300-unit encoders and 128-unit basis networks, a 300-unit critic with 256 features);
# the 8x8 digits the Gaussian encoder's 200 units and a smaller basis and critic.
_AVB_SIZES = {
    "mnist": {"hidden": 300, "basis_width": 128, "critic_hidden": 300, "features": 256},
    "digits": {"hidden": 200, "basis_width": 64, "critic_hidden": 128, "features": 64},
}
_FIT_DRAWS = 64  # guide draws per image for the fitted Gaussian (as the AVB benchmark's AIS)


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

    def transform(
        self, batch: tuple[Tensor, ...], generator: torch.Generator
    ) -> tuple[Tensor, ...]:
        """A training batch as the model sees it (the trainer's ``transform``): binarized
        afresh with the trainer's data generator. That generator is on the CPU, and so is
        the draw, so a run sees the same batches on every device."""
        if not self.binary:
            return batch
        (x,) = batch
        return (binarize_dynamic(x.cpu(), generator=generator).to(x.device),)


class _Fit(Trainer):
    """The trainer, with the comparison's settings (and, once scored, its result) in every
    checkpoint it writes, and the seconds spent writing them (not training time)."""

    def __init__(self, meta: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meta = meta
        self.saving = 0.0

    def state(self) -> dict[str, Any]:
        return {**super().state(), "compare": self.meta}

    def save(self) -> None:
        start = time.perf_counter()
        super().save()
        self.saving += time.perf_counter() - start


def _rng_state(device: torch.device) -> list[Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_state(states: list[Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _saved_result(path: Path, config: CompareConfig, spec: ObjectiveSpec) -> Any:
    """Check that the checkpoint at ``path`` belongs to this run; its result if finished."""
    state = load_checkpoint(path, TRAINER_KIND)
    meta = state.get("compare") or {}
    saved = meta.get("config", {})
    diff = [
        f"{k}: checkpoint {saved.get(k)!r}, this run {v!r}"
        for k, v in config.identity().items()
        if saved.get(k) != v
    ]
    if meta.get("objective") != spec.key:
        diff.append(f"objective: checkpoint {meta.get('objective')!r}, this run {spec.key!r}")
    if diff:
        raise CheckpointError(
            f"{path} belongs to a different run ({'; '.join(diff)}): resume with the same "
            "settings, or drop --resume to start afresh"
        )
    if state["epoch"] > config.epochs:
        raise CheckpointError(
            f"{path} has {state['epoch']} epochs done, more than --epochs {config.epochs}"
        )
    return meta.get("result") if state["epoch"] == config.epochs else None


def _avb_networks(
    config: CompareConfig, vae: VAE, adaptive_contrast: bool
) -> tuple[ImplicitVAE, InnerProductCritic]:
    """The AVB rows' VAE, sharing ``vae``'s decoder (and pixel scales) with an implicit
    encoder built now, and its critic."""
    sizes = _AVB_SIZES[config.dataset]
    z_dim, x_dim = vae.z_dim, vae.x_dim
    encoder: nn.Module
    if adaptive_contrast:  # the paper's code: 16 noise vectors at z = 8, 32 at z = 32
        encoder = BasisNoiseEncoder(
            z_dim,
            num_basis=max(16, z_dim),
            x_dim=x_dim,
            hidden=sizes["hidden"],
            basis_width=sizes["basis_width"],
        )
    else:
        encoder = NoiseEncoder(z_dim, x_dim=x_dim, hidden=sizes["hidden"])
    implicit = ImplicitVAE(encoder, vae.decoder, x_dim, z_dim, vae.likelihood, name=vae.name)
    if vae.likelihood == "gaussian":
        implicit.noise = vae.noise
    critic = InnerProductCritic(
        z_dim, x_dim=x_dim, hidden=sizes["critic_hidden"], features=sizes["features"]
    )
    return implicit, critic


def _fit_one(
    config: CompareConfig, spec: ObjectiveSpec, data: Data, device: torch.device
) -> dict[str, Any]:
    path = Path(config.out) / "checkpoints" / f"{spec.key}.pt"
    if config.resume and path.exists():
        result = _saved_result(path, config, spec)
        if result is not None:
            return dict(result)
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    data_shape = (1, *data.image_shape) if config.architecture == "conv" else (data.train.shape[1],)
    vae = build_vae(config.architecture, data_shape, config.latent_dim, config.likelihood)
    net: VAE = vae  # the VAE trained: the Gaussian one, or the AVB rows' implicit one
    critic: InnerProductCritic | None = None
    if spec.implicit:  # built after the Gaussian VAE: the decoder is every row's
        net, critic = _avb_networks(config, vae, spec.adaptive_contrast)
        critic.to(device)
    net.to(device)
    # The trainer finds the parameters by running the guide and model once, which draws
    # random numbers; the optimiser is built right after, before any resume, so putting the
    # random state back there keeps the run's draws those of a plain loop from the seed.
    # (AVB's critic role is built first, from the critic alone: it draws nothing.)
    before_probe = _rng_state(device)

    def adam(params: list[Tensor]) -> torch.optim.Optimizer:
        _set_rng_state(before_probe, device)
        return torch.optim.Adam(params, lr=config.lr)

    def critic_adam(params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=config.lr)

    if isinstance(net, ImplicitVAE):
        implicit = net

        def score_guide() -> Any:  # a fresh one per estimate: it holds nothing
            return FittedGaussianGuide(implicit.posterior_draws, num_draws=_FIT_DRAWS)

    else:

        def score_guide() -> Any:
            return net.guide

    rank, world = ddp.rank_and_world()
    n, size = data.train.shape[0], config.batch_size
    # a step sees world * size rows under torchrun; drop_last=False: the last holds the rest
    steps = math.ceil(n / (world * size))
    rows = [world * size] * (steps - 1) + [n - world * size * (steps - 1)]
    curve_x = data.test[: config.curve_points].to(device)
    clock = [time.perf_counter()]

    def pass_mean(values: list[float]) -> float:
        """The last pass's mean per data point, from its batches' means."""
        return sum(v * r for v, r in zip(values[-steps:], rows, strict=True)) / n

    def end_of_epoch(trainer: Trainer) -> None:
        assert isinstance(trainer, _Fit)
        _sync(device)  # the pass's training time: no held-out estimate, no checkpoints
        trainer.log("seconds", time.perf_counter() - clock[0] - trainer.saving)
        trainer.saving = 0.0
        if spec.implicit:
            # AVB's ELBO estimate (the critic for log q) per data point, the mean of the
            # model updates of the iterations since the last pass ended (an iteration steps
            # the critic and the model on two batches: a pass may end in either)
            done = trainer.history.get("pass_iterations", [0])
            losses = trainer.history["model"][int(done[-1]) : trainer.iteration]
            trainer.log("pass_iterations", trainer.iteration)
            trainer.log("train_bound", -sum(losses) / len(losses))
        elif spec.contrastive:
            # the VAE's bound on the data rows (computed inside the NCE loss), not the loss
            trainer.log("train_bound", pass_mean(trainer.history["log_model_data"]))
            trainer.log("nce_loss", pass_mean(trainer.history["model"]))
            trainer.log("nce_accuracy", pass_mean(trainer.history["accuracy"]))
            assert isinstance(trainer.objective, SelfContrastive)
            trainer.log("noise_refreshes", trainer.objective.num_refreshes)
        else:  # the pass's bound per data point
            trainer.log("train_bound", -pass_mean(trainer.history["model"]))
        heldout = _log_likelihood(
            net.model,
            score_guide(),
            curve_x,
            num_samples=config.curve_samples,
            particle_chunk=min(config.curve_samples, 500),
            max_plate_nesting=1,
            seed=config.seed + 7919 * trainer.epoch,
        )
        trainer.log("heldout_ll", heldout.mean)
        clock[0] = time.perf_counter()

    optimizers: dict[str, Any] = {"model": adam}
    if critic is not None:
        optimizers["critic"] = critic_adam
    trainer = _Fit(
        {"config": config.identity(), "objective": spec.key, "result": None},
        spec.make(critic) if critic is not None else spec.make(),
        net.model,
        net.guide,
        optimizers=optimizers,
        checkpoint=path,
        epoch_callback=end_of_epoch,
        progress=config.progress,
    )
    if config.progress and rank == 0:
        tqdm.write(f"{spec.label}: {config.epochs} epochs", file=sys.stderr)
    try:
        with warnings.catch_warnings():  # the trainer's advice to call fit again: see run()
            warnings.filterwarnings("ignore", "interrupted after", PyrogenWarning)
            trainer.fit(
                data.train.to(device),
                num_epochs=config.epochs,
                batch_size=size,
                seed=config.seed,
                drop_last=False,
                transform=data.transform,
            )
    except CheckpointError as exc:  # the settings matched, the saved parameters do not
        raise CheckpointError(f"{exc}; objective {spec.label}") from exc

    # The scoring's draws come from a forked state: the checkpoint keeps the state after
    # training, from which a longer --epochs goes on as an uninterrupted run would.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        test_x = data.test.to(device)
        ll = _log_likelihood(
            net.model,
            score_guide(),
            test_x,
            num_samples=config.eval_samples,
            particle_chunk=min(config.eval_samples, 500),
            max_plate_nesting=1,
            progress=config.progress,
            seed=config.seed,
        )
        if isinstance(net, ImplicitVAE):
            units, _ = active_units_from_draws(net.posterior_draws, test_x, _FIT_DRAWS)
        else:
            units, _ = active_units(net.guide, test_x)
        samples = net.sample(36, generator=torch.Generator(device).manual_seed(config.seed))
    keys = _CURVE_KEYS + (_SC_KEYS if spec.contrastive else ())
    history = {k: list(trainer.history.get(k, [])) for k in keys}
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
        "implicit": spec.implicit,
        "contrastive": spec.contrastive,
        "history": history,
        "samples": samples.cpu().tolist(),
    }
    trainer.meta["result"] = result
    trainer.save()
    return result


def _log_likelihood(model: Any, guide: Any, x: Tensor, seed: int, **kwargs: Any) -> Any:
    """The held-out estimate: from torch's global generator in one process (as before), the
    test rows split among the ranks under torchrun."""
    if ddp.is_distributed():
        return ddp.log_likelihood_distributed(model, guide, x, seed=seed, **kwargs)
    return log_likelihood(model, guide, x, **kwargs)


def run(config: CompareConfig) -> list[dict[str, Any]]:
    """Train and score every objective of ``config``; write the table and figures.

    Raises:
        KeyboardInterrupt: on Ctrl-C or SIGTERM, once the objective being fitted has saved
            its checkpoint; ``resume=True`` (``--resume``) then continues from it.
    """
    config.validate()
    if config.threads:
        # One thread by default: these networks are small, and torch's default threads
        # spin against any other busy process (20-45x slower epochs on 2 cores, measured).
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    specs = [parse_objective(o) for o in config.objectives]
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    existing = [s.key for s in specs if (out / "checkpoints" / f"{s.key}.pt").exists()]
    if existing and not (config.resume or config.overwrite):
        raise ValueError(
            f"{out / 'checkpoints'} holds a run of {', '.join(existing)}: pass --resume to "
            "continue it or --overwrite to start again"
        )
    data = Data(config)
    rank, _ = ddp.rank_and_world()
    if rank == 0:  # under torchrun, rank 0 writes; the others wait for it
        out.mkdir(parents=True, exist_ok=True)
        if config.overwrite:
            for key in existing:
                (out / "checkpoints" / f"{key}.pt").unlink()
    if ddp.is_distributed():
        torch.distributed.barrier()
    results = []
    for spec in specs:
        try:
            results.append(_fit_one(config, spec, data, device))
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"interrupted while fitting {spec.label}; the checkpoints in "
                f"{out / 'checkpoints'} continue it with resume=True (--resume)"
            ) from None
    if rank != 0:
        return results
    table = write_table(results, config, out)
    plot(results, config, data.image_shape, data.test.shape[0], out)
    # the result is printed whatever the progress setting (which only hides the bars)
    print(table)
    print(f"wrote results.md, results.csv, results.json, curves.png, samples.png to {out}")
    return results
