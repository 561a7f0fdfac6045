"""What defines a comparison run: :class:`CompareConfig` and the objective names."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from pyrogen.inference import AVB, IWAE, Objective, RenyiBound, SelfContrastive, VRMax
from pyrogen.models import ARCHITECTURES, LIKELIHOODS

__all__ = ["DATASETS", "DEFAULT_OBJECTIVES", "CompareConfig", "ObjectiveSpec", "parse_objective"]

DEFAULT_OBJECTIVES = ("elbo", "iwae:5", "renyi:0.5", "renyi:-1", "vrmax")
SC_REFRESH_EVERY = 5  # epochs between the self-contrastive rows' switches of their noise
DATASETS = ("digits", "mnist")
# Settings a resumed run may change: the rest must match the checkpoint.
_RESUMABLE = {"epochs", "out", "resume", "overwrite", "progress", "data_dir", "threads"}


@dataclass(frozen=True)
class ObjectiveSpec:
    """A parsed objective name: a file-safe key, a label for tables and a factory.

    ``make()`` builds a bound of the Gaussian VAE, or for the self-contrastive rows
    (``contrastive``) an NCE loss whose noise is a frozen copy of that VAE; for the AVB rows
    (``implicit``) it takes the critic, ``make(critic)``, and the VAE's guide is an implicit
    encoder (see :mod:`pyrogen.compare.run`)."""

    key: str
    label: str
    make: Callable[..., Objective]
    implicit: bool = False  # AVB: an implicit guide and a critic
    adaptive_contrast: bool = False  # AVB with adaptive contrast (its encoder's moments)
    contrastive: bool = False  # self-contrastive NCE: the loss is a classifier's, not a bound


def _positive_int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got {text!r}")
    return value


def _positive_real(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive, finite number, got {text!r}")
    return value


def _avb(adaptive_contrast: bool) -> Callable[[nn.Module], Objective]:
    """AVB with ``critic``: one critic update per model update, and with adaptive contrast
    one draw per row (the basis encoder gives its own moments)."""

    def make(critic: nn.Module) -> Objective:
        return AVB(critic, critic_steps=1, adaptive_contrast=adaptive_contrast)

    return make


def parse_objective(name: str) -> ObjectiveSpec:
    """``elbo``, ``iwae[:K]``, ``renyi:ALPHA[:K]``, ``vrmax[:K]``, ``avb``, ``avb-ac`` or
    ``sc[:NU[:K]]`` -> :class:`ObjectiveSpec`.

    ``sc[:NU[:K]]`` is self-contrastive NCE (:class:`~pyrogen.inference.SelfContrastive`):
    ``NU`` noise samples per data point (default 1), the VAE's ``K``-particle IWAE bound
    (default 1: the ELBO) standing in for its log-density and its frozen copy's, the copy
    renewed after every 5 epochs; the first copy is the VAE's initial weights."""
    parts = name.strip().lower().split(":")
    head, rest = parts[0], parts[1:]
    usage = "objectives are elbo, iwae[:K], renyi:ALPHA[:K], vrmax[:K], avb, avb-ac, sc[:NU[:K]]"
    if head in ("avb", "avb-ac"):
        if rest:
            raise ValueError(f"{head} takes no :K or other setting, got {name!r}; {usage}")
        ac = head == "avb-ac"
        return ObjectiveSpec(
            "avb_ac" if ac else "avb",
            "AVB + AC" if ac else "AVB",
            _avb(ac),
            implicit=True,
            adaptive_contrast=ac,
        )
    # One plate (the data) in every VAE: saying so skips the plate-depth probe.
    nest = 1
    if head == "sc":
        if len(rest) > 2:
            raise ValueError(f"sc takes at most NU and K (sc[:NU[:K]]), got {name!r}")
        nu = _positive_real(rest[0], "sc's NU (noise samples per data point)") if rest else 1.0
        k = _positive_int(rest[1], "sc's K (particles of the bound)") if len(rest) == 2 else 1
        return ObjectiveSpec(
            f"sc_{nu:g}_{k}",
            f"Self-contrastive ν={nu:g} (K={k})",
            lambda: SelfContrastive(
                nu=nu,
                refresh_every=SC_REFRESH_EVERY,
                num_particles=k,
                bound="iwae",
                max_plate_nesting=nest,
            ),
            contrastive=True,
        )
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


def check_device(name: str) -> torch.device:
    """``name`` as a torch device that this machine has, or a ValueError saying why not."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"device {name!r} is not a torch device (cpu, cuda, cuda:1, mps)"
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: torch sees no CUDA device on this machine")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s)")
        return device
    if device.type == "mps" and torch.backends.mps.is_available():
        return device
    raise ValueError(f"device {name!r} is not available here (use cpu or cuda)")


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
    threads: int = 1  # torch's intra-op threads; 0 leaves torch's default
    eval_samples: int = 5000
    curve_samples: int = 100
    curve_points: int = 1000
    out: str = "compare-results"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    @property
    def latent_dim(self) -> int:
        """``z_dim``, or the dataset's default: 50 for MNIST, 16 for the 8x8 digits."""
        if self.z_dim is not None:
            return self.z_dim
        return 50 if self.dataset == "mnist" else 16

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
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads must be 0 (torch's default) or more, got {self.threads!r}")
        check_device(self.device)
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: pick one")

    def identity(self) -> dict[str, Any]:
        """The settings a checkpoint must share with the run that resumes it."""
        return {k: v for k, v in asdict(self).items() if k not in _RESUMABLE | {"objectives"}}
