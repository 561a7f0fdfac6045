"""Cost of running a model that does not broadcast (``X @ w``) under torch.func.vmap,
against the same model written to broadcast (``(X * w).sum(-1)``) under a pyro.plate.

Bayesian linear regression, ``w ~ N(0, I_D)``, ``b ~ N(0, 1)``, ``y ~ N(X w + b, 0.5)``,
written both ways, evaluated on the path pyrogen picks for each (the ``X @ w`` model gets
``"vmap"``, the broadcasting one ``"plate"``; the script asserts it):

* many-chain MCMC: ``ModelPotential`` potential energy and gradient for ``--chains`` chains
  (one ``potential_and_grad`` call), against a hand-written batched torch potential, the
  broadcasting model forced onto vmap (the path's cost apart from how the model is
  written) and, for scale, the per-chain loop (``batching="loop"``);
* vectorized particles: ``IWAE(K)`` loss and backward with a mean-field guide, against the
  sequential particles (``vectorize_particles=False``) on the same ``X @ w`` model, the
  broadcasting model forced onto vmap, and the
  guide's share of the vmap path (``K`` guide runs one by one, as the vmap path draws them,
  against one run under a particle plate).

Every method is warmed up, then timed for ``--rounds`` rounds of ``--calls`` calls in a
rotated order (round r starts at method r mod M); the report gives calls per second and the
ratio to the reference method of the same round (median, min and max over rounds).

Run from the project root, on one thread (the script sets torch's, and records both)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nonbroadcasting.py

Results go to ``benchmarks/results/nonbroadcasting.{json,md}`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from pyrogen.inference import IWAE
from pyrogen.inference.importance import in_plate
from pyrogen.inference.mcmc import ModelPotential
from pyrogen.inference.mcmc.state import potential_and_grad
from pyrogen.machine import machine, recorded_settings, results_folder

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = PROJECT_ROOT / "benchmarks" / "results"
NOISE = 0.5


def matmul_model(X: torch.Tensor, y: torch.Tensor | None = None) -> None:
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(X @ w + b, NOISE), obs=y)


def broadcasting_model(X: torch.Tensor, y: torch.Tensor | None = None) -> None:
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal((X * w).sum(-1) + b, NOISE), obs=y)


def guide(X: torch.Tensor, y: torch.Tensor | None = None) -> None:
    d = X.shape[1]
    loc = pyro.param("loc", torch.zeros(d))
    scale = pyro.param("scale", torch.ones(d), constraint=dist.constraints.positive)
    pyro.sample("w", dist.Normal(loc, scale).to_event(1))
    b_loc = pyro.param("b_loc", torch.tensor(0.0))
    pyro.sample(
        "b",
        dist.Normal(
            b_loc, pyro.param("b_scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        ),
    )


def hand_potential(X: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same potential written by hand in torch: (chains, D + 1) -> (chains,)."""
    normal = torch.distributions.Normal(0.0, 1.0)

    def u(z: torch.Tensor) -> torch.Tensor:
        w, b = z[:, :-1], z[:, -1:]
        mean = w @ X.T + b
        lik = torch.distributions.Normal(mean, NOISE).log_prob(y).sum(1)
        return -(normal.log_prob(z).sum(1) + lik)

    return u


def mcmc_methods(
    X: torch.Tensor, y: torch.Tensor, chains: int
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    vmapped = ModelPotential(matmul_model, (X, y))
    plated = ModelPotential(broadcasting_model, (X, y))
    looped = ModelPotential(matmul_model, (X, y), batching="loop")
    plated_vmapped = ModelPotential(broadcasting_model, (X, y), batching="vmap")
    paths = {"X @ w": vmapped.batching, "(X * w).sum(-1)": plated.batching}
    assert paths == {"X @ w": "vmap", "(X * w).sum(-1)": "plate"}, paths
    z = torch.randn(chains, vmapped.dim, generator=torch.Generator().manual_seed(0))
    hand = hand_potential(X, y)
    torch.testing.assert_close(vmapped(z), plated(z), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(vmapped(z), hand(z), rtol=1e-4, atol=1e-3)
    methods = {
        "hand-batched torch potential": lambda: potential_and_grad(hand, z),
        "(X * w).sum(-1), plate": lambda: potential_and_grad(plated, z),
        "X @ w, vmap": lambda: potential_and_grad(vmapped, z),
        "(X * w).sum(-1), vmap (forced)": lambda: potential_and_grad(plated_vmapped, z),
        "X @ w, loop": lambda: potential_and_grad(looped, z),
    }
    return methods, paths


def iwae_methods(
    X: torch.Tensor, y: torch.Tensor, k: int
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    pyro.clear_param_store()
    objectives = {
        "(X * w).sum(-1), plate": (IWAE(k), broadcasting_model),
        "X @ w, vmap": (IWAE(k), matmul_model),
        "X @ w, sequential particles": (IWAE(k, vectorize_particles=False), matmul_model),
        "(X * w).sum(-1), vmap (forced)": (IWAE(k), broadcasting_model),
    }
    forced = objectives["(X * w).sum(-1), vmap (forced)"][0]
    forced.particle_path.keep(broadcasting_model, guide, "vmap")

    def step(objective: IWAE, model: Callable[..., None]) -> Callable[[], None]:
        def run() -> None:
            objective.differentiable_loss(model, guide, X, y).backward()

        return run

    methods = {name: step(obj, model) for name, (obj, model) in objectives.items()}
    for run in methods.values():
        run()  # the probe runs here, once
    paths = {
        name: obj.particle_path.get(model, guide)
        for name, (obj, model) in objectives.items()
        if obj.vectorize_particles
    }
    expected = {"(X * w).sum(-1), plate": "plate", "X @ w, vmap": "vmap"}
    assert paths == {**expected, "(X * w).sum(-1), vmap (forced)": "vmap"}, paths
    del paths["(X * w).sum(-1), vmap (forced)"]

    def guide_one_by_one() -> None:
        for _ in range(k):
            poutine.trace(guide).get_trace(X, y)

    def guide_plated() -> None:
        poutine.trace(in_plate(guide, "particles", k, -2)).get_trace(X, y)

    methods["guide alone, K runs one by one"] = guide_one_by_one
    methods["guide alone, one run under a particle plate"] = guide_plated
    return methods, paths


def time_rounds(
    methods: dict[str, Callable[[], Any]], rounds: int, calls: dict[str, int], warmup: int
) -> dict[str, list[float]]:
    """Calls per second of each method, per round, in a rotated order."""
    for run in methods.values():
        for _ in range(warmup):
            run()
    names = list(methods)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run, n = methods[name], calls[name]
            start = time.perf_counter()
            for _ in range(n):
                run()
            rates[name].append(n / (time.perf_counter() - start))
    return rates


def summarise(rates: dict[str, list[float]], reference: str) -> list[dict[str, Any]]:
    rows = []
    for name, per_round in rates.items():
        ratios = [ref / rate for ref, rate in zip(rates[reference], per_round, strict=True)]
        rows.append(
            {
                "method": name,
                "calls_per_s": statistics.median(per_round),
                "cost_vs_reference_median": statistics.median(ratios),
                "cost_vs_reference_min": min(ratios),
                "cost_vs_reference_max": max(ratios),
                "calls_per_s_per_round": per_round,
            }
        )
    return rows


def table(rows: list[dict[str, Any]], reference: str) -> str:
    lines = [
        f"| method | calls/s | cost x `{reference}` (median) | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['calls_per_s']:.1f} | "
            f"{row['cost_vs_reference_median']:.2f} | {row['cost_vs_reference_min']:.2f} | "
            f"{row['cost_vs_reference_max']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-data", type=int, default=200, help="rows N (default 200)")
    parser.add_argument("--dim", type=int, default=3, help="coefficients D (default 3)")
    parser.add_argument("--chains", type=int, default=256, help="MCMC chains (default 256)")
    parser.add_argument("--particles", type=int, default=8, help="IWAE particles K (default 8)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--calls", type=int, default=50, help="calls per round (default 50)")
    parser.add_argument("--loop-calls", type=int, default=2, help="calls per round, MCMC loop")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--smoke-test", action="store_true", help="a tiny run (for the tests)")
    args = parser.parse_args(argv)
    args.out = results_folder(args.out, DEFAULT_OUT, args.smoke_test)
    if args.smoke_test:
        args.rounds, args.calls, args.loop_calls, args.warmup, args.chains = 2, 2, 1, 1, 16
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    pyro.enable_validation(True)
    g = torch.Generator().manual_seed(args.seed)
    X = torch.randn(args.num_data, args.dim, generator=g)
    y = X @ torch.randn(args.dim, generator=g) + NOISE * torch.randn(args.num_data, generator=g)

    mcmc, mcmc_paths = mcmc_methods(X, y, args.chains)
    calls = {n: args.loop_calls if n.endswith("loop") else args.calls for n in mcmc}
    mcmc_rows = summarise(
        time_rounds(mcmc, args.rounds, calls, args.warmup), "(X * w).sum(-1), plate"
    )
    iwae, iwae_paths = iwae_methods(X, y, args.particles)
    calls = dict.fromkeys(iwae, args.calls)
    iwae_rows = summarise(
        time_rounds(iwae, args.rounds, calls, args.warmup), "(X * w).sum(-1), plate"
    )

    settings = recorded_settings(vars(args), PROJECT_ROOT)
    payload = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nonbroadcasting.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "settings": settings,
        "paths": {"mcmc": mcmc_paths, "iwae": iwae_paths},
        "mcmc": mcmc_rows,
        "iwae": iwae_rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nonbroadcasting.json").write_text(json.dumps(payload, indent=1) + "\n")
    md = [
        "# A model that does not broadcast: vmap against the plate",
        "",
        f"Machine: {payload['machine']}; OMP_NUM_THREADS={payload['omp_num_threads']}. "
        f"Command: `{payload['command'].strip()}`.",
        "",
        f"Bayesian linear regression, N = {args.num_data}, D = {args.dim} + intercept, float32, "
        f"validation on. The same model written with `X @ w` (pyrogen picks `vmap`) and with "
        f"`(X * w).sum(-1)` (pyrogen keeps the `plate`). {args.rounds} rounds of "
        f"{args.calls} calls in a rotated order, after {args.warmup} untimed calls; cost is "
        f"time per call over the plate's in the same round, median (min, max) over rounds.",
        "",
        f"## Many-chain MCMC: potential and gradient of {args.chains} chains per call",
        "",
        table(mcmc_rows, "(X * w).sum(-1), plate"),
        "",
        f"## Vectorized particles: IWAE, K = {args.particles}, loss and backward per call",
        "",
        table(iwae_rows, "(X * w).sum(-1), plate"),
        "",
        "The vmap path draws the guide one particle at a time (the draws of sequential "
        "particles; torch.func.vmap cannot draw from torch.distributions), so the guide rows "
        "show what that costs against one guide run under a particle plate.",
        "",
    ]
    (args.out / "nonbroadcasting.md").write_text("\n".join(md))
    print("\n".join(md))
    return payload


if __name__ == "__main__":
    main()
