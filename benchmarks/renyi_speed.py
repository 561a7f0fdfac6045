"""Speed of one Rényi/IWAE training step: hand-written PyTorch vs Pyro vs pyrogen.

One MNIST VAE (encoder 784-400-50 Gaussian, decoder 50-400-784 Bernoulli logits, batch 128,
Adam lr 1e-3) is trained side by side with several implementations of the same bound:

* ``hand``: a hand-written PyTorch loop (ELBO for K=1, IWAE bound for K>1, particles as a
  leading tensor dimension);
* ``pyro``: ``pyro.infer.SVI`` with ``Trace_ELBO`` (K=1) or vectorized ``RenyiELBO(alpha=0)``;
* ``pyrogen-svi``: ``pyro.infer.SVI`` with ``pyrogen.inference.RenyiBound``;
* ``pyrogen-svi-fused``: the same with ``pyrogen.optim.FusedOptim(torch.optim.Adam)`` in place
  of ``pyro.optim.Adam`` (one torch optimiser for all parameters, not one per parameter);
* ``pyrogen-module``: ``RenyiBound(...)(model, guide)`` used as a ``torch.nn.Module`` with a
  plain ``torch.optim.Adam``;
* ``pyrogen-recorded``: the same loss through ``pyrogen.inference.RecordedLoss``, which
  records the loss and its gradients once per batch shape and replays the torch operations
  (bit for bit the module form's values and gradients, without Pyro's Python per step);
* ``pyrogen-svi-recorded``: ``pyro.infer.SVI`` with ``RecordedObjective(RenyiBound(...))``
  and ``FusedOptim`` (the same replay inside SVI; bit for bit SVI's steps);
* ``pyrogen-recorded-inductor``, ``pyrogen-svi-recorded-inductor``: the two above with
  ``mode="inductor"``: the record is fused by ``torch.compile`` (values and gradients within
  rounding of the eager ones, the same random draws);
* ``hand-compiled``: the hand-written loss under ``torch.compile`` (forward and backward
  fused; inductor's own random numbers), a reference for what compiling buys a hand loop.

The compiled methods compile during their warm-up steps; the table gives each method's
warm-up seconds, compiling included (a once-per-shape cost, kept out of the timed rounds).

Every method gets fresh networks from the same seed, is warmed up, and is then timed for
``--repeats`` rounds of ``--steps`` steps in a rotating order. Times are reported in
milliseconds per step and as ratios to ``hand`` (same round, same K).

Run from the project root::

    .venv/bin/python benchmarks/renyi_speed.py

Results go to ``benchmarks/results/renyi_speed.{json,md}`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import datetime as dt
import itertools
import json
import math
import os
import platform
import pstats
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrogen.data import load_mnist
from pyrogen.inference import RenyiBound
from pyrogen.inference.recording import RecordedLoss, RecordedObjective
from pyrogen.optim import FusedOptim

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
DEFAULT_OUT = PROJECT_ROOT / "benchmarks" / "results"
ALL_METHODS = (
    "hand",
    "pyro",
    "pyrogen-svi",
    "pyrogen-svi-fused",
    "pyrogen-module",
    "pyrogen-recorded",
    "pyrogen-svi-recorded",
    "pyrogen-recorded-inductor",
    "pyrogen-svi-recorded-inductor",
    "hand-compiled",
)
# compiled during the warm-up (seconds each); gpu.py's smoke test leaves them out
COMPILED_METHODS = ("pyrogen-recorded-inductor", "pyrogen-svi-recorded-inductor", "hand-compiled")
X_DIM = 784
HIDDEN_DIM = 400
Z_DIM = 50
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

StepFn = Callable[[torch.Tensor], float]


# --------------------------------------------------------------------------------------
# Networks, model and guide
# --------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """784-400-50 Gaussian encoder: returns ``(loc, scale)`` of q(z|x)."""

    def __init__(self, x_dim: int = X_DIM, hidden_dim: int = HIDDEN_DIM, z_dim: int = Z_DIM):
        super().__init__()
        self.fc1 = nn.Linear(x_dim, hidden_dim)
        self.fc_loc = nn.Linear(hidden_dim, z_dim)
        self.fc_scale = nn.Linear(hidden_dim, z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.softplus(self.fc1(x))
        return self.fc_loc(hidden), torch.exp(self.fc_scale(hidden))


class Decoder(nn.Module):
    """50-400-784 decoder: returns Bernoulli logits of p(x|z)."""

    def __init__(self, x_dim: int = X_DIM, hidden_dim: int = HIDDEN_DIM, z_dim: int = Z_DIM):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, x_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.softplus(self.fc1(z)))


class VAEModel(nn.Module):
    """Pyro model p(z) p(x|z); ``forward(x)`` is the model."""

    def __init__(self, decoder: Decoder, name: str, z_dim: int = Z_DIM):
        super().__init__()
        self.decoder = decoder
        self.name = name
        self.z_dim = z_dim

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self.decoder)
        batch = x.shape[0]
        with pyro.plate("data", batch):
            prior = dist.Normal(x.new_zeros(batch, self.z_dim), x.new_ones(batch, self.z_dim))
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


class VAEGuide(nn.Module):
    """Pyro guide q(z|x); ``forward(x)`` is the guide."""

    def __init__(self, encoder: Encoder, name: str):
        super().__init__()
        self.encoder = encoder
        self.name = name

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def hand_loss(encoder: Encoder, decoder: Decoder, x: torch.Tensor, k: int) -> torch.Tensor:
    """Negative ELBO (k=1) or negative IWAE bound (k>1), summed over the batch."""
    loc, scale = encoder(x)
    if k == 1:
        eps = torch.randn_like(loc)
    else:
        eps = torch.randn((k, *loc.shape), dtype=loc.dtype, device=loc.device)
    z = loc + scale * eps  # (B, D) or (K, B, D)
    logits = decoder(z)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        -1
    )
    log_pz = (-0.5 * z.pow(2) - HALF_LOG_2PI).sum(-1)
    log_qz = (-0.5 * eps.pow(2) - torch.log(scale) - HALF_LOG_2PI).sum(-1)
    log_w = log_px + log_pz - log_qz
    if k == 1:
        return -log_w.sum()
    return -(torch.logsumexp(log_w, dim=0) - math.log(k)).sum()


# --------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------


@dataclass
class Method:
    """Per-method state created once and kept across rounds."""

    name: str
    k: int
    step: StepFn
    modules: list[nn.Module]
    init_params: list[torch.Tensor] = field(default_factory=list)
    warmup_s: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.name} K={self.k}"

    def param_change(self) -> float:
        """Max abs change of any network parameter since construction."""
        now = [p.detach() for m in self.modules for p in m.parameters()]
        return max((a - b).abs().max().item() for a, b in zip(now, self.init_params, strict=True))


def _fresh_networks(seed: int, device: str = "cpu") -> tuple[Encoder, Decoder]:
    torch.manual_seed(seed)
    return Encoder().to(device), Decoder().to(device)


def adam_step(loss_of: Callable[[torch.Tensor], torch.Tensor], params: list[Any]) -> StepFn:
    """A training step with a plain ``torch.optim.Adam`` (lr 1e-3) over ``params``: the loss
    ``loss_of(x)``, its gradient, one update; returns the loss."""
    opt = torch.optim.Adam(params, lr=1e-3)

    def step(x: torch.Tensor) -> float:
        opt.zero_grad()
        loss = loss_of(x)
        loss.backward()
        opt.step()
        return loss.item()

    return step


_METHOD_COUNT = itertools.count()


def recorded_adam_step(recorded: RecordedLoss, params: list[Any]) -> StepFn:
    """:func:`adam_step` with the loss and gradients replayed by ``recorded``."""
    opt = torch.optim.Adam(params, lr=1e-3)

    def step(x: torch.Tensor) -> float:
        opt.zero_grad()
        loss = recorded.backward(x)
        opt.step()
        return loss.item()

    return step


def make_method(
    name: str, k: int, seed: int, pyrogen_kwargs: dict[str, Any], device: str = "cpu"
) -> Method:
    """Build networks (same seed for every method), optimizer and the step function."""
    encoder, decoder = _fresh_networks(seed, device)
    # Names unique per call: the param store is not cleared between rounds, and a second
    # set of methods in the same process (gpu.py's two batch sizes) must not find the first
    # set's parameters under its names.
    tag = f"{name.replace('-', '_')}_k{k}_{next(_METHOD_COUNT)}"
    model = VAEModel(decoder, f"decoder_{tag}")
    guide = VAEGuide(encoder, f"encoder_{tag}")
    step: StepFn

    if name in ("hand", "hand-compiled"):
        params = list(encoder.parameters()) + list(decoder.parameters())

        def loss_of(x: torch.Tensor) -> torch.Tensor:
            return hand_loss(encoder, decoder, x, k)

        step = adam_step(torch.compile(loss_of) if name == "hand-compiled" else loss_of, params)

    elif name in (
        "pyro",
        "pyrogen-svi",
        "pyrogen-svi-fused",
        "pyrogen-svi-recorded",
        "pyrogen-svi-recorded-inductor",
    ):
        loss_obj: pyro.infer.ELBO
        if name == "pyro":
            if k == 1:
                loss_obj = pyro.infer.Trace_ELBO()
            else:
                loss_obj = pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True)
        elif name == "pyrogen-svi-recorded":
            loss_obj = RecordedObjective(_make_renyi_bound(k, pyrogen_kwargs))
        elif name == "pyrogen-svi-recorded-inductor":
            loss_obj = RecordedObjective(_make_renyi_bound(k, pyrogen_kwargs), "inductor")
        else:
            loss_obj = _make_renyi_bound(k, pyrogen_kwargs)
        adam: pyro.optim.PyroOptim
        if name.startswith(("pyrogen-svi-fused", "pyrogen-svi-recorded")):
            adam = FusedOptim(torch.optim.Adam, {"lr": 1e-3})
        else:
            adam = pyro.optim.Adam({"lr": 1e-3})  # type: ignore[attr-defined]
        svi = pyro.infer.SVI(model, guide, adam, loss=loss_obj)

        def step(x: torch.Tensor) -> float:
            return float(svi.step(x))

    elif name in ("pyrogen-module", "pyrogen-recorded", "pyrogen-recorded-inductor"):
        loss_fn = _make_renyi_bound(k, pyrogen_kwargs)(model, guide)
        params = list(loss_fn.parameters())
        expected = sum(p.numel() for m in (encoder, decoder) for p in m.parameters())
        if sum(p.numel() for p in params) != expected:
            raise RuntimeError(
                f"RenyiBound(model, guide).parameters() has {sum(p.numel() for p in params)} "
                f"elements, expected {expected} (encoder + decoder)"
            )
        if name == "pyrogen-module":
            step = adam_step(loss_fn, params)
        else:
            mode = "inductor" if name.endswith("inductor") else "trace"
            step = recorded_adam_step(RecordedLoss(loss_fn, params, mode), params)

    else:
        raise ValueError(f"unknown method {name!r}")

    modules: list[nn.Module] = [encoder, decoder]
    init = [p.detach().clone() for m in modules for p in m.parameters()]
    return Method(name=name, k=k, step=step, modules=modules, init_params=init)


def _make_renyi_bound(k: int, pyrogen_kwargs: dict[str, Any]) -> RenyiBound:
    alpha = 1.0 if k == 1 else 0.0
    return RenyiBound(alpha=alpha, num_particles=k, **pyrogen_kwargs)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def load_train_images(data_dir: Path) -> tuple[torch.Tensor, str]:
    """MNIST training images as floats in [0, 1], shape (n, 784), and the loader used."""
    images = load_mnist(root=data_dir).tensors[0].reshape(-1, X_DIM).float()
    return images, "pyrogen.data.load_mnist"


def make_batches(
    images: torch.Tensor,
    n_batches: int,
    batch_size: int,
    gen: torch.Generator,
    device: str = "cpu",
) -> list[torch.Tensor]:
    """Random minibatches, dynamically binarized with ``torch.bernoulli`` (on the CPU, then
    moved to ``device`` outside the timed region)."""
    batches = []
    for _ in range(n_batches):
        idx = torch.randint(images.shape[0], (batch_size,), generator=gen)
        batches.append(torch.bernoulli(images[idx], generator=gen).to(device))
    return batches


# --------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def run_steps(method: Method, batches: Sequence[torch.Tensor]) -> tuple[float, list[float], float]:
    """Run one step per batch; returns (ms per step, losses, minor page faults per step).

    The param store is not cleared between rounds: every method registers its networks under
    its own names, and a cleared store sent the recorded SVI method back to an eager step
    and a new record every round, a cost no training run pays."""
    losses = []
    faults = minor_faults()
    start = time.perf_counter()
    for x in batches:
        losses.append(method.step(x))
    elapsed = time.perf_counter() - start
    faults = minor_faults() - faults
    return 1e3 * elapsed / len(batches), losses, faults / len(batches)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def steady_allocator() -> bool:
    """Ask glibc to keep freed memory (no heap trimming) and to serve blocks up to 32 MiB
    from the heap, not from fresh mmaps: each step then reuses the pages of the last, and
    no method pays for page faults that depend on the order of its allocations. Returns
    whether glibc took both settings (False elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30)) and bool(
            libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
        )
    except (OSError, AttributeError):
        return False


def peak_memory(method: Method, x: torch.Tensor) -> dict[str, Any]:
    """Tensor memory of one training step of ``method`` on batch ``x``: torch's profiler
    follows every CPU tensor the step allocates or frees (the networks' parameters, their
    gradients, the optimiser's state, the activations), and the memory timeline gives the
    total at the step's start and at its peak (MiB); an ``error`` where its data-flow
    analysis refuses the trace (it does for Pyro's SVI step)."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU],
        profile_memory=True,
        record_shapes=True,
        with_stack=True,
    ) as prof:
        method.step(x)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated, still the CPU timeline
        try:
            prof.export_memory_timeline(os.path.join(tmp, "timeline.json"), device="cpu")
        except AssertionError as exc:  # the profiler's data-flow analysis refused the trace
            return {"error": f"torch's memory timeline failed: {exc}"[:200]}
        _, sizes = json.loads(Path(tmp, "timeline.json").read_text())
    totals = [sum(categories) / 2**20 for categories in sizes]
    return {"start_mib": totals[0], "peak_mib": max(totals)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int, device: str = "cpu") -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    return {
        "gpu": gpu,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _portable(arg: str) -> str:
    """Replace absolute paths by project-relative ones (or a placeholder)."""
    if os.path.isabs(arg):
        path = Path(arg).resolve()
        if path.is_relative_to(PROJECT_ROOT.parent):
            return os.path.relpath(path, PROJECT_ROOT)
        return f"<outside-project>/{path.name}"
    if arg.startswith("--") and "=" in arg:
        flag, value = arg.split("=", 1)
        return f"{flag}={_portable(value)}"
    return arg


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(
        [".venv/bin/python", "benchmarks/renyi_speed.py", *(_portable(a) for a in argv)]
    )


def summarize(
    methods: list[Method],
    times: dict[str, list[float]],
    losses: dict[str, list[float]],
    batch_size: int,
    faults: dict[str, list[float]],
) -> list[dict[str, Any]]:
    rows = []
    for m in methods:
        hand_label = f"hand K={m.k}"
        ms = times[m.label]
        row: dict[str, Any] = {
            "method": m.name,
            "K": m.k,
            "median_ms_per_step": statistics.median(ms),
            "ms_per_step_rounds": ms,
            "minor_faults_per_step": statistics.median(faults[m.label]),
            # loss of the last timed round, averaged over its steps, per data point
            "final_loss_per_datapoint": statistics.fmean(losses[m.label]) / batch_size,
            "max_param_change": m.param_change(),
            "warmup_s": m.warmup_s,
        }
        if hand_label in times:
            ratios = [a / b for a, b in zip(ms, times[hand_label], strict=True)]
            row["ratio_to_hand"] = {
                "median": statistics.median(ratios),
                "min": min(ratios),
                "max": max(ratios),
                "rounds": ratios,
            }
        rows.append(row)
    return rows


def markdown(report: dict[str, Any]) -> str:
    mach = report["machine"]
    cfg = report["config"]
    load = report["load_average"]
    lines = [
        "# Rényi / IWAE training-step speed",
        "",
        f"Device: {cfg.get('device', 'cpu')}"
        + (f" ({mach['gpu']})" if mach.get("gpu") else "")
        + f". Machine: {mach['cpu']}, {mach['cpu_count']} cores, torch threads "
        f"{mach['torch_threads']}; Python {mach['python']}, torch {mach['torch']}, "
        f"Pyro {mach['pyro']}; {mach['date']}. Load average before/after: "
        f"{load['before']:.2f} / {load['after']:.2f}.",
        "",
        f"VAE 784-{HIDDEN_DIM}-{Z_DIM} (Gaussian encoder, Bernoulli decoder), batch "
        f"{cfg['batch_size']}, Adam lr 1e-3, data: {cfg['data']}. {cfg['warmup']} warm-up "
        f"steps, then {cfg['repeats']} rounds x {cfg['steps']} steps per method in rotating "
        f"order; ratio = method ms / hand ms in the same round and K. Pyro validation: "
        f"{'on' if cfg['pyro_validation'] else 'off'}; pyrogen kwargs: "
        f"`{json.dumps(cfg['pyrogen_kwargs'])}`. Allocator: "
        + (
            "glibc kept steady (no trimming, no mmap below 32 MiB)."
            if cfg.get("steady_allocator")
            else "as the process starts (glibc's defaults)."
        )
        + f" Wall time {report['wall_time_s']:.1f} s.",
        "",
        "Command:",
        "",
        "```",
        report["command"],
        "```",
        "",
        "| method | K | median ms/step | ratio to hand: median [min, max] | final loss / point "
        "| step's peak tensor memory (MiB) | page faults / step | warm-up s |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        r = row.get("ratio_to_hand")
        ratio = f"{r['median']:.2f} [{r['min']:.2f}, {r['max']:.2f}]" if r else "n/a"
        mem = f"{row['memory']['peak_mib']:.1f}" if "peak_mib" in row.get("memory", {}) else "n/a"
        lines.append(
            f"| {row['method']} | {row['K']} | {row['median_ms_per_step']:.2f} | {ratio} | "
            f"{row['final_loss_per_datapoint']:.2f} | {mem} | "
            f"{row['minor_faults_per_step']:.0f} | {row.get('warmup_s', float('nan')):.1f} |"
        )
    lines += [
        "",
        "Ratio: median, min and max over rounds of the per-round ratio (not a ratio of the "
        "medians). Final loss / point: the negative bound per data point, averaged over the "
        "steps of the last round (a sanity check that all methods optimise the same bound). "
        "Step's peak tensor memory: the most CPU tensor memory alive during one training "
        "step after the timed rounds (parameters, gradients, the optimiser's state and the "
        "activations), from torch's profiler memory timeline. Page faults / step: the "
        "process's minor page faults during a round, per step, median over rounds (memory "
        "the allocator returned to the system and touches again; each costs a few "
        "microseconds). Warm-up s: the method's untimed warm-up steps, its first step's "
        "recording or compiling included.",
        "",
    ]
    return "\n".join(lines)


def profile_methods(methods: list[Method], batches: Sequence[torch.Tensor], top: int = 15) -> None:
    """Print the top cProfile entries (cumulative and own time) of every method."""
    for m in methods:
        prof = cProfile.Profile()
        pyro.clear_param_store()
        prof.enable()
        for x in batches:
            m.step(x)
        prof.disable()
        for key in ("cumulative", "tottime"):
            print(f"\n=== cProfile {m.label} ({len(batches)} steps), top {top} by {key}")
            pstats.Stats(prof, stream=sys.stdout).sort_stats(key).print_stats(top)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="MNIST gz folder")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default benchmarks/results; a temp folder with --smoke-test)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds")
    p.add_argument("--steps", type=int, default=50, help="steps per method per round")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up steps per method")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--ks", type=str, default="1,5", help="comma-separated particle counts")
    p.add_argument(
        "--methods", type=str, default=",".join(ALL_METHODS), help="comma-separated methods"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=str, default="cpu", help="torch device, e.g. cuda")
    p.add_argument(
        "--pyrogen-kwargs", type=str, default="{}", help="JSON dict passed to RenyiBound(...)"
    )
    p.add_argument("--no-validation", action="store_true", help="pyro.enable_validation(False)")
    p.add_argument(
        "--steady-allocator",
        action="store_true",
        help="glibc mallopt: no heap trimming, no mmap below 32 MiB (see steady_allocator)",
    )
    p.add_argument("--name", default="renyi_speed", help="stem of the result files")
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the peak tensor memory of a step (CPU, torch's profiler, after timing)",
    )
    p.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="after timing, cProfile this many steps of each method and print the top entries",
    )
    p.add_argument(
        "--smoke-test", action="store_true", help="tiny run (2 rounds x 3 steps), seconds"
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(args: argparse.Namespace) -> dict[str, Any]:
    wall_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    if args.smoke_test:
        args.repeats, args.steps, args.warmup = 2, 3, 1
    out_dir: Path = args.out or (
        Path(tempfile.mkdtemp(prefix="renyi_speed_")) if args.smoke_test else DEFAULT_OUT
    )
    torch.set_num_threads(args.threads)
    pyro.enable_validation(not args.no_validation)
    steady = steady_allocator() if args.steady_allocator else False
    if args.steady_allocator and not steady:
        print("--steady-allocator: glibc refused mallopt (or this is not glibc); allocator as is")
    pyrogen_kwargs = json.loads(args.pyrogen_kwargs)
    if not isinstance(pyrogen_kwargs, dict):
        raise SystemExit("--pyrogen-kwargs must be a JSON object")
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in names:
        if name not in ALL_METHODS:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(ALL_METHODS)}")

    # ---- data (outside every timed region) ----
    data_dir: Path = args.data_dir
    if data_dir.is_dir():
        images, loader = load_train_images(data_dir)
        data_desc = f"binarized MNIST train ({images.shape[0]} images, {loader})"
    elif args.smoke_test:
        images = torch.rand(1024, X_DIM, generator=torch.Generator().manual_seed(args.seed))
        data_desc = "fake uniform random images (smoke test, MNIST folder absent)"
    else:
        raise SystemExit(
            f"MNIST folder not found: {data_dir}\n"
            "Expected train-images-idx3-ubyte.gz there; pass --data-dir or use --smoke-test."
        )
    print(f"data: {data_desc}")

    # ---- per-method state, created once ----
    methods = [
        make_method(name, k, args.seed, pyrogen_kwargs, args.device) for k in ks for name in names
    ]
    gen = torch.Generator().manual_seed(args.seed + 1)
    warm = make_batches(images, args.warmup, args.batch_size, gen, args.device)
    for m in methods:
        start = time.perf_counter()
        run_steps(m, warm)
        m.warmup_s = time.perf_counter() - start

    # ---- timed rounds, rotating order ----
    times: dict[str, list[float]] = {m.label: [] for m in methods}
    faults: dict[str, list[float]] = {m.label: [] for m in methods}
    losses: dict[str, list[float]] = {}
    n = len(methods)
    for r in range(args.repeats):
        batches = make_batches(images, args.steps, args.batch_size, gen, args.device)
        for i in range(n):
            m = methods[(r + i) % n]
            ms, step_losses, step_faults = run_steps(m, batches)
            times[m.label].append(ms)
            faults[m.label].append(step_faults)
            losses[m.label] = step_losses
        print(
            f"round {r + 1}/{args.repeats}: "
            + ", ".join(f"{lbl} {v[-1]:.2f} ms" for lbl, v in times.items())
        )

    results = summarize(methods, times, losses, args.batch_size, faults)
    if args.device == "cpu" and not args.no_memory:
        x = make_batches(images, 1, args.batch_size, gen, args.device)[0]
        for m, row in zip(methods, results, strict=True):
            row["memory"] = peak_memory(m, x)
    for row in results:
        if row["max_param_change"] == 0.0:
            raise RuntimeError(f"{row['method']} K={row['K']} did not update its networks")

    report: dict[str, Any] = {
        "benchmark": "renyi_speed",
        "command": command_line(getattr(args, "argv", sys.argv[1:])),
        "machine": machine_info(args.threads, args.device),
        "config": {
            "batch_size": args.batch_size,
            "ks": ks,
            "methods": names,
            "repeats": args.repeats,
            "steps": args.steps,
            "warmup": args.warmup,
            "seed": args.seed,
            "device": args.device,
            "lr": 1e-3,
            "architecture": f"{X_DIM}-{HIDDEN_DIM}-{Z_DIM} softplus, scale=exp, Bernoulli",
            "data": data_desc,
            "pyro_validation": not args.no_validation,
            "pyrogen_kwargs": pyrogen_kwargs,
            "smoke_test": args.smoke_test,
            "steady_allocator": steady,
        },
        "results": results,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
    }
    report["wall_time_s"] = time.perf_counter() - wall_start

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / f"{args.name}.md").write_text(markdown(report))
    print()
    print(markdown(report))
    print(f"wrote {out_dir / (args.name + '.json')} and {out_dir / (args.name + '.md')}")

    if args.profile_steps > 0:
        profile_methods(
            methods, make_batches(images, args.profile_steps, args.batch_size, gen, args.device)
        )
    return report


if __name__ == "__main__":
    main(parse_args())
