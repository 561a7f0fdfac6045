"""Trajectory-length adaptation on the Bayesian logistic regression: ESS per gradient.

The problem of ``mcmc_logistic.py`` (N = 1000, D = 10 + intercept, float32, 500 warm-up
iterations and 500 draws, 64 and 256 chains, seeds 0-2), scored by statistics that do not
depend on the machine's load: the minimum over the 11 parameters of ArviZ's bulk ESS, that per
draw, and per 1,000 gradient evaluations (leapfrog steps summed over chains, warm-up included,
and also for the sampling phase alone), with the adapted step size, trajectory length
(integration time: for pyrogen in the units of its adapted mass matrix, about posterior
standard deviations; for BlackJAX, whose mass matrix is the identity, in the parameters'
units), leapfrog steps per draw, acceptance, max R-hat, divergences and the largest
|mean - reference| in combined Monte Carlo standard errors. Rows: pyrogen's ``sample()`` on
the hand-written potential of ``mcmc_logistic.py`` and on the Pyro model, with the trajectory
criteria of :mod:`pyrogen.inference.mcmc.chees` (and one row at target acceptance 0.8), and
BlackJAX's ChEES-HMC (``chees_adaptation`` with Adam 0.025, then jittered dynamic HMC, as
``mcmc_logistic.py`` runs it; skipped when blackjax does not import). Gradient evaluations
are counted at the potential (pyrogen: every call, which evaluates all chains, including the
step-size search) and from ``num_integration_steps`` (BlackJAX).

Reference: NumPyro NUTS, 16 chains x 10,000 draws, when NumPyro imports, else pyrogen
(64 chains x 5,000 draws, 1,000 warm-up). One torch thread and one XLA thread; wall times go
to the JSON only.

Command (BlackJAX and NumPyro only in the benchmark's environment):

    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/chees_efficiency.py

``--smoke-test`` runs tiny versions of every row in seconds; ``--only`` takes substrings of
row names.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pyrogen.inference.mcmc import ModelPotential, sample  # noqa: E402
from pyrogen.machine import machine  # noqa: E402
from pyrogen.models import logistic_regression  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mcmc_logistic import blackjax_chees as run_blackjax  # noqa: E402
from mcmc_logistic import diagnostics, draws_matrix, hand_potential, hand_start  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="More chains")
N, D = logistic_regression.N, logistic_regression.D
ROOT = Path(__file__).resolve().parent

# pyrogen's settings per row: the previous default, the default, and a lower target acceptance
VARIANTS: dict[str, dict[str, Any]] = {
    "ChEES per gradient (previous default)": {"trajectory_criterion": "chees_per_gradient"},
    "ESS per gradient (default)": {"trajectory_criterion": "ess_per_gradient"},
    "ESS per gradient, target acceptance 0.8": {
        "trajectory_criterion": "ess_per_gradient",
        "target_accept": 0.8,
    },
}


def has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("arviz", "jax", "blackjax", "optax", "numpyro"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


class CountingModelPotential(ModelPotential):
    """The model's potential, counting evaluations (each one a gradient for every chain)."""

    calls = 0

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().__call__(flat)


def run_pyrogen(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    chains: int,
    draws: int,
    warmup: int,
    target: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """One run of ``sample()``; the hand potential and the start are mcmc_logistic.py's."""
    start = time.perf_counter()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    calls = [0]
    if target == "model":
        potential = CountingModelPotential(logistic_regression.model, (xt, yt))
        result = sample(
            potential,
            num_chains=chains,
            num_warmup=warmup,
            num_samples=draws,
            generator=gen,
            progress=False,
            **options,
        )
        out = draws_matrix({k: v.numpy() for k, v in result.samples.items()})
        calls[0] = potential.calls
    else:
        hand = hand_potential(xt, yt)

        def potential_fn(z: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            return hand(z)

        result = sample(
            potential_fn,
            hand_start(chains, gen),
            num_warmup=warmup,
            num_samples=draws,
            generator=gen,
            progress=False,
            **options,
        )
        out = result.samples["z"].numpy().astype(np.float64)
    sampling = float(result.stats["num_steps"][0].sum())  # the same for every chain
    assert result.step_size is not None  # HMC
    return {
        "draws": out,
        "wall": time.perf_counter() - start,
        "grads_per_chain": float(calls[0]),
        "sampling_grads_per_chain": sampling,
        "step_size": float(result.step_size.mean()),
        "trajectory_length": result.trajectory_length,
        "acceptance": float(result.stats["acceptance_rate"].mean()),
        "divergences": int(result.stats["diverging"].sum()),
    }


def reference(x: np.ndarray, y: np.ndarray, smoke: bool) -> tuple[dict[str, np.ndarray], str]:
    if has("numpyro"):
        sys.path.insert(0, str(ROOT))
        from mcmc_logistic import run_numpyro

        chains, draws, warmup = (2, 50, 50) if smoke else (16, 10000, 1000)
        out, _, _ = run_numpyro(x, y, 12345, chains, draws, warmup)
        how = f"NumPyro NUTS, {chains} chains x {draws} draws, {warmup} warm-up"
    else:
        chains, draws, warmup = (8, 50, 50) if smoke else (64, 5000, 1000)
        out = run_pyrogen(x, y, 12345, chains, draws, warmup, "potential", {})["draws"]
        how = f"pyrogen HMC (no NumPyro), {chains} chains x {draws} draws, {warmup} warm-up"
    diag = diagnostics(out)
    return diag, f"{how} (min bulk ESS {diag['ess'].min():.0f})"


def configurations(args: argparse.Namespace) -> list[dict[str, Any]]:
    confs: list[dict[str, Any]] = []
    for chains in args.chains:
        for target in args.targets:
            for name, options in VARIANTS.items():
                if target == "model" and "target acceptance" in name:
                    continue  # the same posterior as the potential's row; one is enough
                confs.append(
                    {
                        "name": f"pyrogen, {name}, {target}, {chains} chains",
                        "sampler": "pyrogen",
                        "run": run_pyrogen,
                        "kw": {"chains": chains, "target": target, "options": options},
                    }
                )
        if has("blackjax"):
            confs.append(
                {
                    "name": f"BlackJAX ChEES-HMC, hand log density, {chains} chains",
                    "sampler": "blackjax",
                    "run": run_blackjax,
                    "kw": {"chains": chains},
                }
            )
    if args.only:
        confs = [c for c in confs if any(s in c["name"] for s in args.only)]
    return confs


def score(run: dict[str, Any], ref: dict[str, np.ndarray], chains: int) -> dict[str, Any]:
    diag = diagnostics(run.pop("draws"))
    err = np.abs(diag["mean"] - ref["mean"]) / np.sqrt(diag["mcse"] ** 2 + ref["mcse"] ** 2)
    min_ess = float(diag["ess"].min())
    return {
        **run,
        "min_ess": min_ess,
        "ess_per_1k_grads": 1000 * min_ess / (chains * run["grads_per_chain"]),
        "sampling_ess_per_1k_grads": 1000 * min_ess / (chains * run["sampling_grads_per_chain"]),
        "max_rhat": float(diag["rhat"].max()),
        "max_mean_error": float(err.max()),
    }


# --------------------------------------------------------------------------- report
COLUMNS = [  # key, header, format
    ("min_ess", "min bulk ESS", ".0f"),
    ("ess_per_draw", "ESS / draw", ".2f"),
    ("grads_per_chain", "gradients / chain", ".0f"),
    ("ess_per_1k_grads", "ESS / 1k gradients", ".1f"),
    ("sampling_ess_per_1k_grads", "sampling only", ".1f"),
    ("steps_per_draw", "steps / draw", ".2f"),
    ("step_size", "step size", ".3f"),
    ("trajectory_length", "T", ".2f"),
    ("acceptance", "acceptance", ".3f"),
]


def cell(values: list[float], fmt: str) -> str:
    """Median and range over seeds."""
    med = float(np.median(values))
    if len(values) == 1:
        return f"{med:{fmt}}"
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def write(out: Path, payload: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "chees_efficiency.json").write_text(json.dumps(payload, indent=1))
    lines = [
        "# Trajectory-length adaptation: min bulk ESS per gradient evaluation",
        "",
        f"Machine: {payload['machine']}, {payload['versions']}; {payload['threads']}. "
        f"Command: `{payload['command']}`.",
        f"Bayesian logistic regression of mcmc_logistic.py (N = {N}, D = {D} + intercept, "
        f"float32), {payload['warmup']} warm-up iterations and {payload['draws']} draws per "
        f"chain; median (min-max) over seeds {payload['seeds']}. Gradients: leapfrog steps "
        "per chain, warm-up included (pyrogen: every potential evaluation, with the "
        "step-size search); ESS / 1k gradients divides the min bulk ESS by all chains' "
        "gradients, 'sampling only' by those of the draws alone. T: integration time, for "
        "pyrogen in the units of its adapted diagonal mass matrix (posterior standard "
        "deviations), for BlackJAX (identity mass matrix) in the parameters' units (about "
        "0.1 sd); steps / draw is unit-free. Mean error: largest |mean - reference| / "
        f"combined MCSE. Reference: {payload['reference']}. Wall times are in the JSON only: "
        "they depend on the machine's load, these counts do not.",
        "",
        "| sampler | " + " | ".join(h for _, h, _ in COLUMNS) + " | max R-hat | divergences "
        "| mean error (MCSE) |",
        "|---|" + "---:|" * (len(COLUMNS) + 3),
    ]
    for row in payload["rows"]:
        runs = row["runs"]
        cells = [cell([r[k] for r in runs], fmt) for k, _, fmt in COLUMNS]
        lines.append(
            f"| {row['name']} | "
            + " | ".join(cells)
            + f" | {max(r['max_rhat'] for r in runs):.3f} | "
            f"{sum(r['divergences'] for r in runs)} | "
            f"{max(r['max_mean_error'] for r in runs):.2f} |"
        )
    if not payload["blackjax"]:
        lines += ["", "BlackJAX did not import: its rows are skipped."]
    (out / "chees_efficiency.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chains", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument(
        "--targets", nargs="+", default=["potential", "model"], choices=["potential", "model"]
    )
    parser.add_argument("--only", nargs="*", default=None, help="substrings of row names")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default results/ (a temporary folder with --smoke-test)",
    )
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.seeds, args.chains, args.warmup, args.draws = [0], [8], 30, 20
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    pyro.enable_validation(False)

    x, y, _ = logistic_regression.data()
    ref, ref_how = reference(x, y, args.smoke_test)
    print(f"reference: {ref_how}", flush=True)
    confs = configurations(args)
    per: dict[str, list[dict[str, Any]]] = {c["name"]: [] for c in confs}
    for seed in args.seeds:
        for conf in confs:
            chains = conf["kw"]["chains"]
            run = conf["run"](x, y, seed, draws=args.draws, warmup=args.warmup, **conf["kw"])
            row = {"seed": seed, **score(run, ref, chains)}
            row["ess_per_draw"] = row["min_ess"] / (chains * args.draws)
            row["steps_per_draw"] = row["sampling_grads_per_chain"] / args.draws
            per[conf["name"]].append(row)
            print(
                f"seed {seed} | {conf['name']}: min ESS {row['min_ess']:.0f} "
                f"({row['ess_per_draw']:.2f}/draw), {row['ess_per_1k_grads']:.1f} per 1k "
                f"gradients ({row['sampling_ess_per_1k_grads']:.1f} sampling), step "
                f"{row['step_size']:.3f}, T {row['trajectory_length']:.2f}, accept "
                f"{row['acceptance']:.3f}, R-hat {row['max_rhat']:.3f}, mean err "
                f"{row['max_mean_error']:.2f}",
                flush=True,
            )
    payload = {
        "machine": machine(),
        "versions": versions(),
        "threads": "1 torch thread, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}, XLA_FLAGS='{os.environ.get('XLA_FLAGS')}'",
        "command": "python benchmarks/chees_efficiency.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "seeds": args.seeds,
        "warmup": args.warmup,
        "draws": args.draws,
        "reference": ref_how,
        "reference_mean": ref["mean"].tolist(),
        "variants": VARIANTS,
        "blackjax": has("blackjax"),
        "rows": [{"name": name, "runs": runs} for name, runs in per.items()],
    }
    if args.out is None:  # a smoke test never replaces the committed results
        args.out = Path(tempfile.mkdtemp()) if args.smoke_test else ROOT / "results"
    write(args.out, payload)
    print((args.out / "chees_efficiency.md").read_text())
    return payload


if __name__ == "__main__":
    main()
