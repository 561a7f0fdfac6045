"""Bayesian logistic regression: pyrogen's batched HMC against Pyro NUTS and NumPyro NUTS.

N = 1000 rows, D = 10 features plus an intercept, data simulated from a fixed seed;
coefficients ~ Normal(0, 1), intercept ~ Normal(0, 5); float32; 500 warm-up iterations for
every sampler. For every configuration and seed: bulk ESS (ArviZ, rank-normalised), minimum
over the 11 parameters, divided by the total wall time (model set-up, compilation, warm-up
and sampling); max R-hat; divergences; and the largest distance of a posterior mean from a
long reference run, in units of the combined Monte Carlo standard error. Seeds run in turn
and, within a seed, configurations in a rotated order, so that ratios are side by side.

Also: the throughput of HMC for 10,000 chains of a 64-dimensional latent under a small MLP
potential (KALE's use), in chain-steps per second, on CPU and on CUDA when present.

Command (NumPyro, BlackJAX and JAX only in the benchmark's own environment, never in
pyrogen's; measured with jax 0.10.2, numpyro 0.22.0, blackjax 1.7.1, optax 0.2.8):

    python -m venv .venv-bench
    .venv-bench/bin/pip install -c constraints.txt -e . numpyro jax blackjax
    .venv-bench/bin/python benchmarks/mcmc_logistic.py

BlackJAX's ChEES-HMC runs at pyrogen's chain counts on a hand-written log density (its rows
are skipped without blackjax). Without NumPyro the NumPyro rows are skipped (and the
reference is a long pyrogen run, which the report says). ``--smoke-test`` runs tiny
versions of everything in seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from pyrogen.inference.mcmc import hmc, sample
from pyrogen.models import logistic_regression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pyrogen.machine import machine  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="More chains")
N, D = logistic_regression.N, logistic_regression.D
ROOT = Path(__file__).resolve().parent


make_data = logistic_regression.data  # the data and model live in the library
pyro_model = logistic_regression.model


def draws_matrix(samples: dict[str, Any]) -> np.ndarray:
    """(chain, draw, 11): coefficients then intercept."""
    coef = np.asarray(samples["coef"], dtype=np.float64)
    intercept = np.asarray(samples["intercept"], dtype=np.float64)
    return np.concatenate([coef, intercept[..., None]], -1)


def diagnostics(draws: np.ndarray) -> dict[str, np.ndarray]:
    import arviz as az

    ds = az.convert_to_dataset(draws)
    return {
        "ess": az.ess(ds, method="bulk")["x"].values,
        "tail_ess": az.ess(ds, method="tail")["x"].values,
        "rhat": az.rhat(ds)["x"].values,
        "mean": draws.mean((0, 1)),
        "mcse": az.mcse(ds)["x"].values,
    }


# --------------------------------------------------------------------------- runners
def hand_potential(xt: torch.Tensor, yt: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's posterior as a hand-written batched potential of ``(chains, D + 1)``."""

    def potential(z: torch.Tensor) -> torch.Tensor:
        logits = z[:, :D] @ xt.T + z[:, D:]
        loglik = yt * logits - torch.nn.functional.softplus(logits)
        prior = 0.5 * (z[:, :D] ** 2).sum(-1) + 0.5 * (z[:, D] / 5) ** 2
        return prior - loglik.sum(-1)

    return potential


def hand_start(chains: int, gen: torch.Generator) -> torch.Tensor:
    """The hand potential's chains start uniform on [-2, 2]^(D + 1)."""
    return torch.rand(chains, D + 1, generator=gen, device=gen.device) * 4 - 2


def run_pyrogen(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    chains: int,
    draws: int,
    warmup: int,
    target: str,
    device: str = "cpu",
    compile: str = "none",
    target_accept: float | None = None,
    full_mass: bool = False,
) -> tuple[np.ndarray, int, float]:
    """``target_accept``: ``sample``'s (``None``: HMC's default, 0.95); ``full_mass``:
    ``sample``'s (a dense mass matrix, pooled over chains). Wall time includes
    moving the data to ``device``, recording and compiling the potential (``compile``:
    ``sample``'s ``compile_potential``) and, on CUDA, waiting for the last kernel (the draws
    are copied back to the host inside the timed region)."""
    start = time.perf_counter()
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    if target == "model":
        result = sample(
            model=pyro_model,
            model_args=(xt, yt),
            num_chains=chains,
            num_warmup=warmup,
            num_samples=draws,
            generator=gen,
            progress=False,
            compile_potential=compile,
            target_accept=target_accept,
            full_mass=full_mass,
        )
        out = draws_matrix({k: v.cpu().numpy() for k, v in result.samples.items()})
    else:  # the same posterior as a hand-written batched potential
        result = sample(
            hand_potential(xt, yt),
            hand_start(chains, gen),
            num_warmup=warmup,
            num_samples=draws,
            generator=gen,
            progress=False,
            compile_potential=compile,
            target_accept=target_accept,
            full_mass=full_mass,
        )
        out = result.samples["z"].cpu().numpy().astype(np.float64)
    wall = time.perf_counter() - start
    return out, int(result.stats["diverging"].sum()), wall


def run_pyrogen_first(
    x: np.ndarray, y: np.ndarray, seed: int, **kw: Any
) -> tuple[np.ndarray, int, float]:
    """:func:`run_pyrogen` (``kw`` are its keywords) as a new user's first run: in a fresh
    process (torch and Pyro imported before the clock starts, as JAX is for its rows) with an
    empty compile cache, so the wall time includes torch.compile's own first start and
    compiling from nothing. The child makes the same data."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "inductor")}
        out = Path(tmp) / "run.npz"
        spec = {"seed": seed, "threads": torch.get_num_threads(), "out": str(out), **kw}
        subprocess.run(
            [sys.executable, __file__, "--first-run", json.dumps(spec)], env=env, check=True
        )
        saved = np.load(out)
        return saved["draws"], int(saved["divergences"]), float(saved["wall"])


def first_run_child(spec: dict[str, Any]) -> None:
    """The child of :func:`run_pyrogen_first`: one run, saved as ``draws, divergences, wall``."""
    torch.set_num_threads(spec.pop("threads"))
    out = spec.pop("out")
    pyro.enable_validation(False)
    x, y, _ = make_data()
    d, div, wall = run_pyrogen(x, y, **spec)
    np.savez(out, draws=d, divergences=div, wall=wall)


def run_pyro(
    x: np.ndarray, y: np.ndarray, seed: int, chains: int, draws: int, warmup: int, jit: bool
) -> tuple[np.ndarray, int, float]:
    from pyro.infer import MCMC, NUTS

    pyro.set_rng_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    start = time.perf_counter()
    kernel = NUTS(pyro_model, jit_compile=jit, ignore_jit_warnings=True)
    mcmc = MCMC(
        kernel,
        num_samples=draws,
        warmup_steps=warmup,
        num_chains=chains,
        disable_progbar=True,
        mp_context=None,
    )
    mcmc.run(xt, yt)
    wall = time.perf_counter() - start
    samples = {k: v.numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    divergences = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    return draws_matrix(samples), divergences, wall


def run_numpyro(
    x: np.ndarray, y: np.ndarray, seed: int, chains: int, draws: int, warmup: int
) -> tuple[np.ndarray, int, float]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import MCMC, NUTS

    def model(x: Any, y: Any) -> None:
        coef = numpyro.sample("coef", ndist.Normal(0.0, 1.0).expand([D]).to_event(1))
        intercept = numpyro.sample("intercept", ndist.Normal(0.0, 5.0))
        with numpyro.plate("data", N):
            numpyro.sample("y", ndist.Bernoulli(logits=x @ coef + intercept), obs=y)

    start = time.perf_counter()
    mcmc = MCMC(
        NUTS(model),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized" if chains > 1 else "sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), jnp.asarray(x), jnp.asarray(y), extra_fields=("diverging",))
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    wall = time.perf_counter() - start
    divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return draws_matrix({k: np.asarray(v) for k, v in samples.items()}), divergences, wall


def run_blackjax(
    x: np.ndarray, y: np.ndarray, seed: int, **kw: Any
) -> tuple[np.ndarray, int, float]:
    """BlackJAX's ChEES-HMC (:func:`blackjax_chees`, ``kw`` its keywords): draws,
    divergences, wall time."""
    out = blackjax_chees(x, y, seed, **kw)
    return out["draws"], out["divergences"], out["wall"]


def blackjax_chees(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    chains: int,
    draws: int,
    warmup: int,
    mass: str | None = None,
) -> dict[str, Any]:
    """BlackJAX's ChEES-HMC (Hoffman, Radul & Sountsov 2021): ``chees_adaptation`` for the
    step size and trajectory length (Adam 0.025 on the criterion, Halton jitter) over all
    chains (``mass``: its ``mass_matrix_estimation``, ``None`` for the identity metric, its
    default, or ``"diagonal"``, estimated over the chains in the last half of warm-up),
    then jittered dynamic HMC, vmapped over chains and scanned over draws, on a
    hand-written log density (the model's priors N(0, 1) and N(0, 5^2)). Returns the draws
    ``(chain, draw, 11)``, the wall time, divergences, acceptance, the adapted step size and
    trajectory length, and the leapfrog steps (gradients) per chain of warm-up and sampling
    (``benchmarks/chees_efficiency.py`` reads those)."""
    import blackjax
    import jax
    import jax.numpy as jnp
    import optax

    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def logdensity(theta: Any) -> Any:
        coef, intercept = theta[:D], theta[D]
        logits = xj @ coef + intercept
        prior = -0.5 * jnp.sum(coef**2) - 0.5 * (intercept / 5.0) ** 2
        return prior + jnp.sum(yj * logits - jnp.logaddexp(0.0, logits))

    start = time.perf_counter()
    k_init, k_warm, k_run = jax.random.split(jax.random.PRNGKey(seed), 3)
    init = jax.random.uniform(k_init, (chains, D + 1), minval=-2.0, maxval=2.0)
    adaptation = blackjax.chees_adaptation(logdensity, chains, mass_matrix_estimation=mass)
    (states, parameters), warm_info = adaptation.run(
        k_warm, init, step_size=0.1, optim=optax.adam(0.025), num_steps=warmup
    )
    step = jax.vmap(blackjax.dynamic_hmc(logdensity, **parameters).step)

    def transition(states: Any, key: Any) -> tuple[Any, tuple[Any, ...]]:
        states, info = step(jax.random.split(key, chains), states)
        return states, (
            states.position,
            info.num_integration_steps,
            info.acceptance_rate,
            info.is_divergent,
        )

    _, (positions, steps, accept, divergent) = jax.lax.scan(
        transition, states, jax.random.split(k_run, draws)
    )
    jax.block_until_ready(positions)
    wall = time.perf_counter() - start
    warm_steps = np.asarray(warm_info.info.num_integration_steps).sum(0).mean()
    sampling = float(np.asarray(steps).sum(0).mean())
    eps = float(parameters["step_size"])
    return {
        "draws": np.asarray(positions, dtype=np.float64).transpose(1, 0, 2),
        "wall": wall,
        "grads_per_chain": float(warm_steps) + sampling + 1.0,  # + the start's gradient
        "sampling_grads_per_chain": sampling,
        "step_size": eps,
        "trajectory_length": eps * float(parameters["integration_steps_params"][0]),
        "acceptance": float(np.asarray(accept).mean()),
        "divergences": int(np.asarray(divergent).sum()),
    }


def configurations(args: argparse.Namespace) -> list[dict[str, Any]]:
    w = args.warmup
    confs: list[dict[str, Any]] = []
    for chains, draws in args.pyrogen_chains:
        for target, compile, mass in itertools.product(
            ("model", "potential"), args.compile, args.mass
        ):
            kw = dict(chains=chains, draws=draws, warmup=w, target=target, compile=compile)
            how = "" if compile == "none" else f", {compile}"
            if mass == "dense":
                kw["full_mass"] = True
                how += ", dense mass"
            if args.target_accept is not None:
                kw["target_accept"] = args.target_accept
                how += f", target acceptance {args.target_accept:g}"
            confs.append(
                {
                    "name": f"pyrogen HMC-ChEES, {chains} chains x {draws}, {target}{how}",
                    "run": run_pyrogen,
                    "kw": kw,
                }
            )
            if compile == "inductor" and args.first_runs:
                confs.append(
                    {
                        "name": f"pyrogen HMC-ChEES, {chains} chains x {draws}, {target}"
                        f"{how}, first run",
                        "run": run_pyrogen_first,
                        "kw": kw,
                    }
                )
    confs.append(
        {
            "name": f"Pyro NUTS, 1 chain x {args.draws}",
            "run": run_pyro,
            "kw": dict(chains=1, draws=args.draws, warmup=w, jit=False),
        }
    )
    confs.append(
        {
            "name": f"Pyro NUTS jit, 1 chain x {args.draws}",
            "run": run_pyro,
            "kw": dict(chains=1, draws=args.draws, warmup=w, jit=True),
        }
    )
    if has_numpyro():
        # NumPyro at pyrogen's own shapes (the same chains and draws: a ratio between them is
        # a speed-up), plus its 1- and 4-chain runs
        shapes = [(1, args.draws), (4, args.draws), *args.pyrogen_chains]
        for chains, draws in shapes:
            confs.append(
                {
                    "name": f"NumPyro NUTS, {chains} chain{'s' * (chains > 1)} x {draws}",
                    "run": run_numpyro,
                    "kw": dict(chains=chains, draws=draws, warmup=w),
                }
            )
    if has_blackjax():
        for chains, draws in args.pyrogen_chains:  # pyrogen's shapes, as NumPyro's
            for mass in (None, "diagonal"):  # its default identity metric, and its option
                confs.append(
                    {
                        "name": f"BlackJAX ChEES-HMC, {chains} chains x {draws}, hand log "
                        f"density{', diagonal mass' if mass else ''}",
                        "run": run_blackjax,
                        "kw": dict(chains=chains, draws=draws, warmup=w, mass=mass),
                    }
                )
    return confs


def has_blackjax() -> bool:
    try:
        import blackjax  # noqa: F401
    except ImportError:
        return False
    return True


def has_numpyro() -> bool:
    try:
        import numpyro  # noqa: F401
    except ImportError:
        return False
    return True


def reference(x: np.ndarray, y: np.ndarray, smoke: bool) -> tuple[dict[str, np.ndarray], str]:
    if has_numpyro():
        chains, draws = (2, 50) if smoke else (16, 10000)
        out, _, wall = run_numpyro(x, y, 12345, chains, draws, 50 if smoke else 1000)
        how = f"NumPyro NUTS, {chains} vectorized chains x {draws} draws, 1000 warm-up"
    else:
        chains, draws = (8, 50) if smoke else (1024, 2000)
        out, _, wall = run_pyrogen(x, y, 12345, chains, draws, 50 if smoke else 1000, "potential")
        how = f"pyrogen HMC (no NumPyro installed), {chains} chains x {draws} draws"
    diag = diagnostics(out)
    return diag, f"{how} ({wall:.0f} s; min bulk ESS {diag['ess'].min():.0f})"


# --------------------------------------------------------------------------- throughput
def throughput(device: str, chains: int, dim: int, steps: int, transitions: int) -> dict[str, Any]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(dim, 256),
        torch.nn.SiLU(),
        torch.nn.Linear(256, 256),
        torch.nn.SiLU(),
        torch.nn.Linear(256, 1),
    ).to(device)
    for p in net.parameters():
        p.requires_grad_(False)

    def potential(z: torch.Tensor) -> torch.Tensor:  # N(0, I) base times an energy, as KALE
        return 0.5 * (z * z).sum(-1) + net(z).squeeze(-1)

    state = hmc.init(torch.randn(chains, dim, device=device), potential)
    state, _ = hmc.step(state, potential, 0.1, steps)  # allocate once before timing
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    accept = 0.0
    for _ in range(transitions):
        state, info = hmc.step(state, potential, 0.1, steps)
        accept += float(info.acceptance_prob.mean())
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return {
        "device": device,
        "chains": chains,
        "dim": dim,
        "mlp": f"{dim}-256-256-1 SiLU",
        "leapfrog_steps": steps,
        "transitions": transitions,
        "seconds": wall,
        "chain_transitions_per_s": chains * transitions / wall,
        "chain_gradients_per_s": chains * transitions * steps / wall,
        "mean_acceptance": accept / transitions,
    }


# --------------------------------------------------------------------------- report
def write(out: Path, payload: dict[str, Any], name: str = "mcmc_logistic") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1))
    lines = [
        "# Bayesian logistic regression: min bulk ESS per second",
        "",
        f"Machine: {payload['machine']}. Command: `{payload['command']}`.",
        f"Median over seeds {payload['seeds']}; N = {N}, D = {D} + intercept, float32, "
        f"{payload['warmup']} warm-up iterations; wall time includes set-up, compilation and "
        "warm-up. Mean error: largest |mean - reference| / combined MCSE over the 11 parameters. "
        f"Reference: {payload['reference']}.",
        "",
        "| sampler | min-ESS/s | x Pyro NUTS | min bulk ESS | min tail ESS | tail-ESS/s | wall s "
        "| max R-hat | divergences | mean error (MCSE) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = payload["rows"][0]["ess_per_s"] if payload["rows"] else 1.0
    for row in payload["rows"]:
        if row["name"].startswith("Pyro NUTS, 1"):
            base = row["ess_per_s"]
    for row in payload["rows"]:
        lines.append(
            f"| {row['name']} | {row['ess_per_s']:.0f} | {row['ess_per_s'] / base:.1f} | "
            f"{row['min_ess']:.0f} | {row.get('min_tail_ess', float('nan')):.0f} | "
            f"{row.get('tail_ess_per_s', float('nan')):.0f} | {row['wall']:.1f} | "
            f"{row['max_rhat']:.3f} | "
            f"{row['divergences']} | {row['max_mean_error']:.2f} |"
        )
    lines += matched_ratios(payload["rows"])
    if payload.get("throughput"):
        lines += [
            "",
            "## Throughput: 10,000 chains, 64-d latent, MLP potential (KALE's use)",
            "",
            "| device | chains | leapfrog steps | chain-transitions/s | chain-gradients/s "
            "| mean acceptance |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for t in payload["throughput"]:
            lines.append(
                f"| {t['device']} | {t['chains']} | {t['leapfrog_steps']} | "
                f"{t['chain_transitions_per_s']:.3g} | {t['chain_gradients_per_s']:.3g} | "
                f"{t['mean_acceptance']:.2f} |"
            )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def matched_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: each pyrogen row's min-ESS/s (bulk, then tail) over NumPyro's and over the
    faster of BlackJAX's rows (identity or diagonal metric) at the same chains and draws,
    seed by seed (the runs of one seed are side by side), median (min-max)."""
    out: list[str] = []
    for row in rows:
        name = row["name"]
        if not name.startswith("pyrogen HMC-ChEES, "):
            continue
        shape = name.split(", ")[1]  # "64 chains x 500"
        numpyro = [r for r in rows if r["name"] == f"NumPyro NUTS, {shape}"]
        blackjax = [r for r in rows if r["name"].startswith(f"BlackJAX ChEES-HMC, {shape},")]
        cells = []
        for key in ("ess_per_s", "tail_ess_per_s"):
            for refs in (numpyro, blackjax):
                best: dict[int, float] = {}  # seed -> the fastest reference run
                for ref in refs:
                    for run in ref["runs"]:
                        best[run["seed"]] = max(best.get(run["seed"], 0.0), run.get(key, 0.0))
                ratios = [
                    run[key] / best[run["seed"]]
                    for run in row["runs"]
                    if best.get(run["seed"], 0.0) > 0 and key in run
                ]
                cells.append(
                    f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                    if ratios
                    else "n/a"
                )
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    if not out:
        return []
    return [
        "",
        "## Matched ratios",
        "",
        "min-ESS/s of each pyrogen row over NumPyro NUTS's and over the faster of BlackJAX "
        "ChEES-HMC's two rows (identity and diagonal metric) at the same chains and draws, "
        "seed by seed; median (min-max) over seeds; bulk ESS (the goal of issue 21: 1.5 "
        "against both), then tail ESS (the 5 % and 95 % quantiles; a sampler whose chains "
        "swing to the far side of the mean gains bulk ESS of the mean that the tails do "
        "not share).",
        "",
        "| pyrogen row | bulk: x NumPyro | bulk: x BlackJAX | tail: x NumPyro | tail: x BlackJAX |",
        "|---|---:|---:|---:|---:|",
        *out,
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1000, help="draws for the 1-4 chain runs")
    parser.add_argument(
        "--pyrogen-chains",
        type=lambda s: tuple(map(int, s.split("x"))),
        nargs="+",
        default=[(64, 500), (256, 500)],
        help="pyrogen runs as CHAINSxDRAWS",
    )
    parser.add_argument("--only", nargs="*", default=None, help="substrings of names to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--throughput-chains", type=int, default=10000)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=None, help="default results/ (--smoke-test: a temporary folder)"
    )
    parser.add_argument(
        "--compile",
        nargs="+",
        default=["none", "trace", "inductor"],
        choices=["none", "trace", "inductor"],
        help="pyrogen rows per compile_potential setting",
    )
    parser.add_argument(
        "--no-first-runs",
        dest="first_runs",
        action="store_false",
        help="skip the inductor rows run in a fresh process with an empty compile cache",
    )
    parser.add_argument(
        "--target-accept",
        type=float,
        default=None,
        help="pyrogen's target acceptance (default: HMC's 0.95; BlackJAX's ChEES targets 0.651)",
    )
    parser.add_argument(
        "--mass",
        nargs="+",
        default=["diag", "dense"],
        choices=["diag", "dense"],
        help="pyrogen rows per mass matrix: diagonal (sample's default) and dense (full_mass)",
    )
    parser.add_argument("--name", default="mcmc_logistic", help="stem of the result files")
    parser.add_argument("--first-run", type=json.loads, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args(argv)
    if args.first_run is not None:  # the child process of run_pyrogen_first
        first_run_child(args.first_run)
        return {}
    if args.out is None:  # a smoke test never writes over the committed results
        args.out = Path(tempfile.mkdtemp()) if args.smoke_test else ROOT / "results"
    if args.smoke_test:
        args.seeds, args.warmup, args.draws = [0], 30, 30
        args.pyrogen_chains = [(8, 20)]
        args.throughput_chains = 100
    torch.set_num_threads(args.threads)
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    torch.set_default_dtype(torch.float32)
    pyro.enable_validation(False)

    x, y, truth = make_data()
    ref, ref_how = reference(x, y, args.smoke_test)
    print(f"reference: {ref_how}", flush=True)
    confs = configurations(args)
    if args.only:
        confs = [c for c in confs if any(s in c["name"] for s in args.only)]
    per: dict[str, list[dict[str, Any]]] = {c["name"]: [] for c in confs}
    for i, seed in enumerate(args.seeds):
        order = confs[i % len(confs) :] + confs[: i % len(confs)]
        for conf in order:
            draws, divergences, wall = conf["run"](x, y, seed, **conf["kw"])
            diag = diagnostics(draws)
            err = np.abs(diag["mean"] - ref["mean"]) / np.sqrt(diag["mcse"] ** 2 + ref["mcse"] ** 2)
            row = {
                "seed": seed,
                "wall": wall,
                "min_ess": float(diag["ess"].min()),
                "ess_per_s": float(diag["ess"].min() / wall),
                "min_tail_ess": float(diag["tail_ess"].min()),
                "tail_ess_per_s": float(diag["tail_ess"].min() / wall),
                "max_rhat": float(diag["rhat"].max()),
                "divergences": divergences,
                "max_mean_error": float(err.max()),
            }
            per[conf["name"]].append(row)
            print(
                f"seed {seed} | {conf['name']}: {row['ess_per_s']:.1f} ESS/s, "
                f"ESS {row['min_ess']:.0f} in {wall:.1f} s, R-hat {row['max_rhat']:.3f}, "
                f"{divergences} div, mean err {row['max_mean_error']:.2f}",
                flush=True,
            )
    rows = []
    for name, runs in per.items():
        med = {
            k: statistics.median(r[k] for r in runs)
            for k in (
                "wall",
                "min_ess",
                "ess_per_s",
                "min_tail_ess",
                "tail_ess_per_s",
                "max_mean_error",
            )
        }
        rows.append(
            {
                "name": name,
                **med,
                "max_rhat": max(r["max_rhat"] for r in runs),
                "divergences": sum(r["divergences"] for r in runs),
                "runs": runs,
            }
        )
    through = []
    if not args.no_throughput:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            t = throughput(device, args.throughput_chains, 64, 10, 3 if args.smoke_test else 20)
            through.append(t)
            print(
                f"throughput {device}: {t['chain_transitions_per_s']:.3g} chain-transitions/s",
                flush=True,
            )
    payload = {
        "machine": machine(),
        "command": "python benchmarks/mcmc_logistic.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "seeds": args.seeds,
        "warmup": args.warmup,
        "reference": ref_how,
        "reference_mean": ref["mean"].tolist(),
        "truth": truth.tolist(),
        "rows": rows,
        "throughput": through,
        "numpyro": has_numpyro(),
    }
    write(args.out, payload, args.name)
    print((args.out / f"{args.name}.md").read_text())
    return payload


if __name__ == "__main__":
    main()
