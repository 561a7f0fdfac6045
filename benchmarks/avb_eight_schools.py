"""Eight schools: AVB + adaptive contrast with an implicit guide against Gaussian guides and HMC.

Issue 16's goal: the AVB posterior closer to HMC's than the mean-field guide's, on tau's sd
and on the energy distance. The model is the non-centred eight schools on Rubin's data
(pyrogen.models.eight_schools). The reference is pyrogen's batched HMC (ChEES trajectory,
target acceptance 0.95); the fits are a mean-field Gaussian (AutoNormal) and a full-rank
Gaussian (AutoMultivariateNormal) under Pyro's Trace_ELBO, and AVB with adaptive contrast
(an implicit guide, pyrogen's Trainer). Each fit's draws are scored against HMC's:

- per parameter (mu, tau, theta_1..8): the mean's error and the sd's error, in units of
  HMC's posterior sd;
- the energy distance (pyrogen.metrics.energy_distance) in the sampled coordinates
  (mu, log tau, eta_1..8), each standardised by HMC's sd, with its standard error; two
  halves of the HMC draws (different chains) give the noise floor.

Writes results/avb_eight_schools.{json,md} and docs/images/avb_eight_schools.png:

    .venv/bin/python benchmarks/avb_eight_schools.py

``--smoke-test`` runs every step with tiny budgets.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from torch import Tensor

from pyrogen.inference import AVB, Trainer
from pyrogen.inference.mcmc import sample
from pyrogen.machine import machine, recorded_settings, results_folder
from pyrogen.metrics import energy_distance
from pyrogen.models import eight_schools
from pyrogen.models.eight_schools import ImplicitGuide, LatentCritic, model

ROOT = Path(__file__).resolve().parent
PARAMS = ["mu", "tau"] + [f"theta_{j + 1}" for j in range(eight_schools.SCHOOLS)]
Draws = dict[str, Tensor]  # site -> (num_draws, *shape)


def flat_draws(values: dict[str, Tensor], num: int) -> Draws:
    """``mu, tau (num,)``, ``eta, theta (num, 8)`` from any leading shape."""
    out = {}
    for name in ("mu", "tau", "eta", "theta"):
        v = values[name].detach()
        shape = (num, eight_schools.SCHOOLS) if name in ("eta", "theta") else (num,)
        out[name] = v.reshape(shape)
    return out


def reference(args: argparse.Namespace, y: Tensor) -> tuple[Draws, dict[str, Any]]:
    g = torch.Generator().manual_seed(args.seed)
    result = sample(
        model=model,
        model_args=(y,),
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.draws,
        generator=g,
        progress=False,
    )
    idata = result.to_arviz()
    import arviz as az

    summary = az.summary(idata, var_names=["mu", "tau", "eta"])
    info = {
        "chains": args.chains,
        "warmup": args.warmup,
        "draws_per_chain": args.draws,
        "seconds": result.wall_time,
        "max_rhat": float(summary["r_hat"].max()),
        "min_ess_bulk": float(summary["ess_bulk"].min()),
        "divergences": int(result.stats["diverging"].sum()),
    }
    return flat_draws(result.samples, args.chains * args.draws), info


def gaussian_fit(kind: str, args: argparse.Namespace, y: Tensor) -> tuple[Draws, dict[str, Any]]:
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    guide = (AutoNormal if kind == "mean-field" else AutoMultivariateNormal)(model)
    optim = pyro.optim.ClippedAdam({"lr": args.vi_lr, "lrd": args.vi_lrd})
    elbo = Trace_ELBO(num_particles=args.vi_particles, vectorize_particles=True)
    svi = SVI(model, guide, optim, elbo)
    start = time.perf_counter()
    losses = [svi.step(y) for _ in range(args.vi_steps)]
    seconds = time.perf_counter() - start
    num = args.num_draws
    with torch.no_grad():
        sites = ["mu", "tau", "eta", "theta"]
        values = Predictive(model, guide=guide, num_samples=num, parallel=True, return_sites=sites)(
            y
        )
    tail = sum(losses[-200:]) / len(losses[-200:])
    return flat_draws(values, num), {"seconds": seconds, "final_elbo": -tail}


def avb_fit(args: argparse.Namespace, y: Tensor, seed: int) -> tuple[Draws, dict[str, Any]]:
    pyro.clear_param_store()
    torch.manual_seed(seed)
    guide = ImplicitGuide()
    avb = AVB(
        LatentCritic(),
        critic_steps=args.critic_steps,
        adaptive_contrast=True,
        contrast_particles=args.contrast_particles,
    )
    trainer = Trainer(
        avb,
        model,
        guide,
        optimizers={
            "critic": (torch.optim.Adam, {"lr": args.critic_lr}),
            "model": (torch.optim.Adam, {"lr": args.avb_lr}),
        },
        progress=False,
    )
    start = time.perf_counter()
    history = trainer.fit(y, args.avb_iterations, 1, seed=seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        rows = y.expand(args.num_draws, -1)
        trace = pyro.poutine.trace(guide).get_trace(rows)
        values = {k: trace.nodes[k]["value"] for k in ("mu", "tau", "eta")}
        values["theta"] = values["mu"].unsqueeze(-1) + values["tau"].unsqueeze(-1) * values["eta"]
    tail = history["elbo"][-200:]
    return flat_draws(values, args.num_draws), {
        "seconds": seconds,
        "final_elbo": sum(tail) / len(tail),
    }


def columns(d: Draws) -> Tensor:
    """``(num, 10)``: mu, tau, theta_1..8."""
    return torch.cat([d["mu"][:, None], d["tau"][:, None], d["theta"]], -1)


def sampled_coordinates(d: Draws) -> Tensor:
    """``(num, 10)``: mu, log tau, eta_1..8, the coordinates HMC and the guides sample."""
    return torch.cat([d["mu"][:, None], d["tau"].log()[:, None], d["eta"]], -1)


def score(draws: Draws, ref: Draws, num: int, g: torch.Generator) -> dict[str, Any]:
    ref_cols, cols = columns(ref), columns(draws)
    ref_mean, ref_sd = ref_cols.mean(0), ref_cols.std(0)
    mean_err = (cols.mean(0) - ref_mean) / ref_sd
    sd_err = (cols.std(0) - ref_sd) / ref_sd
    scale = sampled_coordinates(ref).std(0)
    a = sampled_coordinates(draws) / scale
    b = sampled_coordinates(ref) / scale
    ia = torch.randperm(a.shape[0], generator=g)[:num]
    ib = torch.randperm(b.shape[0], generator=g)[:num]
    ed = energy_distance(a[ia], b[ib])
    return {
        "mean_error": dict(zip(PARAMS, mean_err.tolist(), strict=True)),
        "sd_error": dict(zip(PARAMS, sd_err.tolist(), strict=True)),
        "max_abs_mean_error": float(mean_err.abs().max()),
        "max_abs_sd_error": float(sd_err.abs().max()),
        "tau_sd_error": float(sd_err[1]),
        "energy_distance": ed.value,
        "energy_distance_se": ed.stderr,
    }


def noise_floor(ref: Draws, chains: int, num: int, g: torch.Generator) -> dict[str, float]:
    """Energy distance between the first and second half of HMC's chains."""
    scale = sampled_coordinates(ref).std(0)
    x = (sampled_coordinates(ref) / scale).reshape(chains, -1, 2 + eight_schools.SCHOOLS)
    half = chains // 2
    a, b = x[:half].reshape(-1, x.shape[-1]), x[half:].reshape(-1, x.shape[-1])
    ia = torch.randperm(a.shape[0], generator=g)[:num]
    ib = torch.randperm(b.shape[0], generator=g)[:num]
    ed = energy_distance(a[ia], b[ib])
    return {"energy_distance": ed.value, "energy_distance_se": ed.stderr}


def figure(fits: dict[str, Draws], ref: Draws, first_avb: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"mean-field": "tab:orange", "full-rank": "tab:green"}
    fits = {k: v for k, v in fits.items() if not k.startswith("avb") or k == first_avb}
    colours[first_avb] = "tab:blue"
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    ref_log_tau = ref["tau"].log()
    bins = torch.linspace(-6.0, 4.0, 61).tolist()
    axes[0].hist(ref_log_tau.tolist(), bins=bins, density=True, color="0.75", label="HMC")
    for name, d in fits.items():
        axes[0].hist(
            d["tau"].log().tolist(),
            bins=bins,
            density=True,
            histtype="step",
            lw=1.6,
            color=colours[name],
            label=name,
        )
    axes[0].set_xlabel("log tau")
    axes[0].set_title("posterior of log tau")
    axes[0].legend(fontsize=8)
    n = 2000
    for ax, (name, d) in zip(axes[1:], fits.items(), strict=True):
        ax.scatter(ref_log_tau[:n], ref["theta"][:n, 0], s=3, color="0.7", label="HMC")
        ax.scatter(d["tau"][:n].log(), d["theta"][:n, 0], s=3, color=colours[name], label=name)
        ax.set_xlabel("log tau")
        ax.set_ylabel("theta_1")
        ax.set_xlim(-6.0, 4.0)
        ax.set_ylim(-30.0, 60.0)  # the same window in every panel
        ax.set_title(f"{name} over HMC")
        ax.legend(fontsize=8, markerscale=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(out: dict[str, Any], args: argparse.Namespace) -> str:
    ref = out["reference"]
    methods = list(out["fits"])
    lines = [
        "# Eight schools: AVB + adaptive contrast against Gaussian guides and HMC",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/avb_eight_schools.py`. "
        "Rubin's data, non-centred, mu ~ N(0, 5^2), tau ~ HalfCauchy(5).",
        "",
        f"Reference: pyrogen HMC, {ref['chains']} chains x {ref['draws_per_chain']} draws "
        f"after {ref['warmup']} warm-up (ChEES, target acceptance 0.95), {ref['seconds']:.0f} "
        f"s; max R-hat {ref['max_rhat']:.3f}, min bulk ESS {ref['min_ess_bulk']:.0f}, "
        f"{ref['divergences']} divergences.",
        f"Gaussian guides: Pyro Trace_ELBO, {args.vi_particles} particles, {args.vi_steps} "
        f"steps of ClippedAdam (lr {args.vi_lr}, decay {args.vi_lrd} per step). AVB + AC: "
        f"seeds {' '.join(map(str, args.avb_seeds))}; implicit guide (mu, log tau, eta) = "
        "A eps + b + f(eps), eps ~ N(0, I_16); critic "
        f"2 x 128 ELU on the standardised latents; {args.contrast_particles} draws per step, "
        f"{args.critic_steps} critic steps per step, {args.avb_iterations} steps, Adam "
        f"{args.critic_lr} (critic) / {args.avb_lr} (guide). Each fit scored on "
        f"{args.num_draws} draws.",
        "",
        "Errors in units of HMC's posterior sd (mean: (m - m_HMC) / sd_HMC; sd: sd / sd_HMC "
        "- 1). Energy distance in (mu, log tau, eta) standardised by HMC's sd, "
        f"{args.energy_points} draws a side, +- its standard error.",
        "",
        "| fit | tau sd error | max abs mean error | max abs sd error | energy distance | "
        "ELBO | s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in methods:
        s = out["fits"][name]
        lines.append(
            f"| {name} | {s['tau_sd_error']:+.3f} | {s['max_abs_mean_error']:.3f} | "
            f"{s['max_abs_sd_error']:.3f} | {s['energy_distance']:.4f} +- "
            f"{s['energy_distance_se']:.4f} | {s['final_elbo']:.2f} | {s['seconds']:.0f} |"
        )
    floor = out["noise_floor"]
    lines.append(
        f"| HMC half vs half | | | | {floor['energy_distance']:.4f} +- "
        f"{floor['energy_distance_se']:.4f} | | |"
    )
    lines += ["", "Per parameter (mean error / sd error):", ""]
    lines.append("| parameter | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---:|" * len(methods))
    for p in PARAMS:
        cells = [
            f"{out['fits'][m]['mean_error'][p]:+.2f} / {out['fits'][m]['sd_error'][p]:+.2f}"
            for m in methods
        ]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    mf = out["fits"]["mean-field"]
    avb = [out["fits"][m] for m in methods if m.startswith("avb")]
    closer_tau = sum(abs(a["tau_sd_error"]) < abs(mf["tau_sd_error"]) for a in avb)
    closer_ed = sum(a["energy_distance"] < mf["energy_distance"] for a in avb)
    lines += [
        "",
        f"Goal (AVB closer to HMC than mean-field on tau's sd and the energy distance): "
        f"closer on tau's sd in {closer_tau} of {len(avb)} AVB seeds, on the energy distance "
        f"in {closer_ed} of {len(avb)}. The figure shows the first seed.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=2500)
    parser.add_argument("--vi-steps", type=int, default=5000)
    parser.add_argument("--vi-particles", type=int, default=16)
    parser.add_argument("--vi-lr", type=float, default=0.02)
    parser.add_argument("--vi-lrd", type=float, default=0.9995)
    parser.add_argument("--avb-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--avb-iterations", type=int, default=3000)
    parser.add_argument("--contrast-particles", type=int, default=512)
    parser.add_argument("--critic-steps", type=int, default=5)
    parser.add_argument("--critic-lr", type=float, default=1e-3)
    parser.add_argument("--avb-lr", type=float, default=3e-4)
    parser.add_argument("--num-draws", type=int, default=20_000)
    parser.add_argument("--energy-points", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (smoke test: a temp one)"
    )
    parser.add_argument("--figure", type=Path, default=ROOT.parent / "docs" / "images")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args(argv)
    args.out = results_folder(args.out, ROOT / "results", args.smoke_test)
    if args.smoke_test:
        args.chains, args.warmup, args.draws = 4, 30, 25
        args.vi_steps, args.avb_iterations, args.contrast_particles = 5, 3, 16
        args.num_draws, args.energy_points = 200, 100
    torch.set_num_threads(args.threads)
    y = eight_schools.data()
    ref, ref_info = reference(args, y)
    runs: dict[str, Callable[[], tuple[Draws, dict[str, Any]]]] = {
        "mean-field": lambda: gaussian_fit("mean-field", args, y),
        "full-rank": lambda: gaussian_fit("full-rank", args, y),
    }
    for seed in args.avb_seeds:
        runs[f"avb-ac seed {seed}"] = lambda seed=seed: avb_fit(args, y, seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    fits, scores = {}, {}
    for name, run in runs.items():
        draws, info = run()
        fits[name] = draws
        scores[name] = info | score(draws, ref, args.energy_points, g)
        print(name, {k: v for k, v in scores[name].items() if not isinstance(v, dict)})
    out = {
        "reference": ref_info,
        "fits": scores,
        "noise_floor": noise_floor(ref, args.chains, args.energy_points, g),
        "settings": recorded_settings(vars(args), ROOT.parent),
    }
    text = markdown(out, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "avb_eight_schools.md").write_text(text)
    (args.out / "avb_eight_schools.json").write_text(json.dumps(out, indent=2))
    figure(fits, ref, f"avb-ac seed {args.avb_seeds[0]}", args.figure / "avb_eight_schools.png")
    print(text)
    return out


if __name__ == "__main__":
    main()
