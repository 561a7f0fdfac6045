"""Mean-field guides of a correlated Gaussian: the ELBO, the Rényi sweep, IWAE and a full-rank
guide, against the closed forms, with PSIS k-hat for each fit and a contour figure.

The target is N((0, 1), [[1, .9], [.9, 1]]) (``pyrogen.models.correlated_gaussian``). A
mean-field guide fitted by the ELBO has variances 1 / Lambda_ii = 0.19; minimizing KL(p || q)
would give the marginals, 1; the Rényi bound moves between them as alpha goes from 1 to 0
(closed form in the module's docstring). IWAE (alpha = 0) at K particles has no closed
form: its guide widens towards the marginals as K grows. Each fit: K = 1000 particles, Adam
lr 0.02 cut by 0.3 at each third of 3000 steps, the iterates averaged over the last third.

    .venv/bin/python examples/correlated_gaussian.py --out runs/correlated_gaussian

Writes ``fits.json`` and ``correlated_gaussian.png`` (both panels) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from pyrogen.inference import RenyiBound  # noqa: E402
from pyrogen.inference.fit import fit_guide  # noqa: E402
from pyrogen.metrics import draw_guide, khat_threshold, psis_khat  # noqa: E402
from pyrogen.models.correlated_gaussian import (  # noqa: E402
    CorrelatedGaussian,
    FullRankGuide,
    MeanFieldGuide,
)


def ellipse(ax, mean, cov, radius, **kw) -> None:  # type: ignore[no-untyped-def]
    """The contour of a 2-d Gaussian at ``radius`` standard deviations."""
    vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=float))
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))
    w, h = 2 * radius * np.sqrt(vals[::-1])
    ax.add_patch(Ellipse(tuple(np.asarray(mean, dtype=float)), w, h, angle=angle, fill=False, **kw))


def main(args: argparse.Namespace) -> list[dict[str, object]]:
    problem = CorrelatedGaussian()
    steps = 60 if args.smoke_test else args.num_steps
    k = 20 if args.smoke_test else args.num_particles
    draws = 200 if args.smoke_test else args.khat_draws
    fits: list[tuple[str, float | None, torch.nn.Module]] = [
        (f"mean-field, Rényi alpha = {a:g}" if a != 1 else "mean-field, ELBO", a, MeanFieldGuide(2))
        for a in args.alphas
    ]
    fits.append(("mean-field, IWAE (alpha = 0)", 0.0, MeanFieldGuide(2)))
    fits.append(("full-rank, ELBO", None, FullRankGuide(2)))
    rows: list[dict[str, object]] = []
    for name, alpha, guide in fits:
        pyro.clear_param_store()
        objective = RenyiBound(1.0 if alpha is None else alpha, k, max_plate_nesting=0)
        fit = fit_guide(problem.model, guide, objective, num_steps=steps, lr=0.02, seed=args.seed)
        closed: float | None
        if alpha is None:
            closed = float(problem.cov[0, 0])  # the exact posterior is in the family
        elif alpha > 0:
            closed = problem.renyi_variance_2d(alpha)
        else:
            closed = None
        pyro.set_rng_seed(args.seed + 1)
        khat = float(psis_khat(draw_guide(problem.model, guide, num_samples=draws)))
        rows.append(
            {
                "fit": name,
                "alpha": alpha,
                "means": fit.average[:2].tolist(),
                "variances": fit.average[2:].tolist(),
                "variance_se": fit.stderr[2:].tolist(),
                "closed_form_variance": closed,
                "khat": khat,
                "seconds": fit.seconds,
                "guide": guide,
            }
        )
        print(
            f"{name:34s} var {fit.average[2]:.3f} {fit.average[3]:.3f} "
            f"(closed form {closed if closed is None else round(closed, 3)}), k-hat {khat:.2f}"
        )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    for r in (1, 2):
        ellipse(left, problem.mean, problem.cov, r, color="black", lw=2 if r == 1 else 1)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(rows)))
    for row, colour in zip(rows, colours, strict=True):
        guide = row["guide"]
        if isinstance(guide, FullRankGuide):
            tril = guide.scale_tril().detach()
            cov = (tril @ tril.T).numpy()
        else:
            cov = np.diag(row["variances"])
        ellipse(left, row["means"], cov, 1, color=colour, ls="--", label=row["fit"])
    left.set(xlim=(-2.6, 2.6), ylim=(-1.6, 3.6), aspect="equal", xlabel="z1", ylabel="z2")
    left.set_title("target (black, 1 and 2 sd) and fitted guides (1 sd)")
    left.legend(fontsize=7, loc="lower right")
    alphas = np.linspace(0.02, 1.0, 50)
    right.plot(
        alphas, [problem.renyi_variance_2d(float(a)) for a in alphas], "k-", label="closed form"
    )
    right.axhline(0.19, color="grey", ls=":", label="KL(q||p): 1/Lambda_ii = 0.19")
    right.axhline(1.0, color="grey", ls="--", label="KL(p||q): marginals, 1")
    for row, colour in zip(rows, colours, strict=True):
        if row["alpha"] is None:
            continue
        var = float(np.mean(row["variances"]))
        right.errorbar(
            row["alpha"], var, yerr=5 * float(np.max(row["variance_se"])), fmt="o", color=colour
        )
    top = max([1.1] + [1.05 * max(r["variances"]) for r in rows if r["alpha"] is not None])
    right.set(xlabel="alpha", ylabel="fitted variance (mean of both)", ylim=(0, top))
    right.set_title(f"mean-field variance vs alpha, K = {k} (alpha = 0: IWAE)")
    right.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(out / "correlated_gaussian.png", dpi=110)
    plt.close(fig)
    for row in rows:
        del row["guide"]
    payload = {"khat_threshold": khat_threshold(draws), "khat_draws": draws, "fits": rows}
    (out / "fits.json").write_text(json.dumps(payload, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--num-steps", type=int, default=3000)
    parser.add_argument("--num-particles", type=int, default=1000)
    parser.add_argument("--khat-draws", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/correlated_gaussian")
    parser.add_argument("--smoke-test", action="store_true")
    main(parser.parse_args())
