"""Scaling of the data-parallel Trainer from 1 to 2 processes (gloo, CPU).

A Burda VAE (784-200-200-50, tanh) under IWAE (K = 5) on synthetic binary rows shaped like
MNIST (no download), fitted by :class:`~pyrogen.inference.Trainer`; each setting runs
``--steps`` iterations after ``--warmup`` untimed ones, ``--rounds`` times in a rotated
order, one torch thread per process:

* ``1 process, batch B``: the per-rank work alone;
* ``1 process, batch 2B``: the global batch of two ranks, on one core (the reference for
  strong scaling);
* ``1 process, batch 2B, 2 threads``: the same, with both cores to one process;
* ``2 processes x batch B``: data-parallel, gradients summed by one ``all_reduce`` per step
  (timed apart, on rank 0: the wait for the slower rank is part of it).

Rows per second of each against the 1-process batch-2B reference is the speedup the second
core buys. The load average (``/proc/loadavg``) is recorded before and after: other jobs on
the machine take cores from the ranks.

Run from the project root (the script starts its own processes; it sets one thread each)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distributed.py

Results go to ``benchmarks/results/distributed.{json,md}`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyro
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyrogen.inference import IWAE, Trainer
from pyrogen.machine import machine, recorded_settings
from pyrogen.models import build_vae

ROOT = Path(__file__).resolve().parents[1]


def _data(rows: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(10, 784, generator=g) ** 3  # ten "digit" templates
    return torch.bernoulli(probs[torch.randint(10, (rows,), generator=g)], generator=g)


def _fit(batch_size: int, warmup: int, steps: int, threads: int) -> dict[str, float]:
    """Times ``steps`` iterations after ``warmup``; under a process group, also the seconds
    spent in the gradients' all_reduce (rank 0)."""
    torch.set_num_threads(threads)
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = build_vae("burda", (784,), 50, "bernoulli")
    trainer = Trainer(
        IWAE(num_particles=5, max_plate_nesting=1), vae.model, vae.guide, progress=False
    )
    reduce_seconds = [0.0]
    if trainer.distributed:
        inner = trainer._all_reduce_grads

        def timed(role: str, value: torch.Tensor) -> float:
            start = time.perf_counter()
            out = inner(role, value)
            reduce_seconds[0] += time.perf_counter() - start
            return out

        trainer._all_reduce_grads = timed  # type: ignore[method-assign]
    data = _data(20_000)
    trainer.fit(data, warmup, batch_size)
    reduce_seconds[0] = 0.0
    if trainer.distributed:
        dist.barrier()
    start = time.perf_counter()
    trainer.fit(data, warmup + steps, batch_size)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "reduce_seconds": reduce_seconds[0]}


def _entry(rank: int, store: str, out: str, args: tuple[Any, ...]) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=300),
    )
    try:
        result = _fit(*args)
        if rank == 0:
            torch.save(result, Path(out) / "result.pt")
    finally:
        dist.destroy_process_group()


def _two_processes(batch_size: int, warmup: int, steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        store = str(Path(out) / f"store-{uuid.uuid4().hex}")
        mp.start_processes(
            _entry, (store, out, (batch_size, warmup, steps, 1)), nprocs=2, start_method="fork"
        )
        result: dict[str, float] = torch.load(Path(out) / "result.pt")
        return result


def _load() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100, help="B, rows per rank")
    parser.add_argument("--steps", type=int, default=60, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, rotated order")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--smoke-test", action="store_true", help="tiny sizes, one round")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.batch_size, args.steps, args.warmup, args.rounds = 10, 2, 1, 1
    b, steps, warmup = args.batch_size, args.steps, args.warmup
    settings = {
        "1 process, batch B": (b, 1, lambda: _fit(b, warmup, steps, 1)),
        "1 process, batch 2B": (2 * b, 1, lambda: _fit(2 * b, warmup, steps, 1)),
        "1 process, batch 2B, 2 threads": (2 * b, 1, lambda: _fit(2 * b, warmup, steps, 2)),
        "2 processes x batch B": (2 * b, 2, lambda: _two_processes(b, warmup, steps)),
    }
    names = list(settings)
    load_before = _load()
    times: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(args.rounds):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            times[name].append(settings[name][2]())
            print(f"round {r}: {name}: {times[name][-1]['seconds']:.2f} s", file=sys.stderr)
    load_after = _load()
    reference = "1 process, batch 2B"
    rows: list[dict[str, Any]] = []
    for name in names:
        global_rows, processes, _ = settings[name]
        secs = [t["seconds"] for t in times[name]]
        median = statistics.median(secs)
        ref = statistics.median(t["seconds"] for t in times[reference])
        rows.append(
            {
                "setting": name,
                "processes": processes,
                "rows_per_step": global_rows,
                "steps_per_s": steps / median,
                "rows_per_s": steps * global_rows / median,
                "speedup_vs_1_process_2B": ref / median,
                "seconds_median": median,
                "seconds_min": min(secs),
                "seconds_max": max(secs),
                "all_reduce_share": (
                    statistics.median(t["reduce_seconds"] / t["seconds"] for t in times[name])
                    if processes > 1
                    else None
                ),
            }
        )
    payload = {
        "benchmark": "distributed",
        "machine": machine().replace(
            f"{torch.get_num_threads()} torch threads", "1 torch thread per process unless stated"
        ),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distributed.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "settings": recorded_settings(vars(args), ROOT),
        "workload": "Burda VAE 784-200-200-50 (tanh), IWAE K=5, Bernoulli rows, float32",
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distributed.json").write_text(json.dumps(payload, indent=1) + "\n")
    md = [
        "# Data-parallel Trainer: 1 to 2 processes",
        "",
        f"Machine: {payload['machine']}; {payload['cpu_count']} cores; "
        f"OMP_NUM_THREADS={payload['omp_num_threads']}. Command: `{payload['command'].strip()}`.",
        f"Load average (1, 5, 15 min) before {load_before}, after {load_after}.",
        "",
        f"{payload['workload']}; B = {b} rows per rank; {steps} timed iterations after "
        f"{warmup} untimed, {args.rounds} rounds in a rotated order (median, min, max).",
        "",
        "| setting | rows/step | steps/s | rows/s | speedup vs 1 process, 2B "
        "| s, median (min-max) | all_reduce share |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        share = "" if row["all_reduce_share"] is None else f"{row['all_reduce_share']:.0%}"
        md.append(
            f"| {row['setting']} | {row['rows_per_step']} | {row['steps_per_s']:.2f} | "
            f"{row['rows_per_s']:.0f} | {row['speedup_vs_1_process_2B']:.2f} | "
            f"{row['seconds_median']:.2f} ({row['seconds_min']:.2f}-{row['seconds_max']:.2f}) | "
            f"{share} |"
        )
    (args.out / "distributed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return payload


if __name__ == "__main__":
    main()
