r"""Figures of generator runs on the 2-D toy mixtures (``pyrogen.data.ring``, ``grid``).

A *run* is the record a training script keeps of one generator: a dict with

- ``"dataset"``, ``"objective"`` (names), ``"iterations"`` (generator updates);
- ``"samples"`` (``n x 2``, a nested list or a tensor) and ``"centers"`` (the modes'
  centres), ``"modes"``, ``"num_modes"``, ``"high_quality"`` (a share in ``[0, 1]``), as
  :func:`~pyrogen.metrics.mode_coverage` scores them;
- optionally ``"tilted"``: the same keys for draws of that generator tilted by its critic
  (:func:`~pyrogen.inference.tilted_sample`), drawn as a panel of their own;
- for :func:`plot_wasserstein_mmd`, ``"curve"``: lists ``"iteration"``, ``"wasserstein"``
  (the critic's estimate of :math:`W_1`, NaN for critics that give none) and ``"mmd"``.

The figures are written as PNG files with matplotlib's non-interactive backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from pyrogen.metrics.correlation import spearman

__all__ = ["plot_mode_samples", "plot_wasserstein_mmd"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _position(order: Sequence[str] | None, name: str, seen: list[str]) -> tuple[int, int]:
    """Sort key: the place in ``order``, then first appearance for names not in it."""
    if order is not None and name in order:
        return (0, list(order).index(name))
    return (1, seen.index(name))


def plot_mode_samples(
    runs: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    objectives: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
) -> None:
    """One panel per data set (rows) and objective (columns), the samples over the modes'
    centres (red crosses), titled with the modes captured and the high-quality share; a
    run with tilted samples adds an ``"<objective> + tilt"`` panel after its own.

    Args:
        runs: runs as described in the module's docstring (the last of a data set and
            objective wins).
        path: the PNG file to write.
        objectives, datasets: the order of columns and rows; names left out follow in the
            order of first appearance.
    """
    if not runs:
        raise ValueError("no runs to plot")
    seen_objectives = list(dict.fromkeys(r["objective"] for r in runs))
    seen_datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    panels: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(runs, key=lambda r: _position(objectives, r["objective"], seen_objectives)):
        panels[r["dataset"], r["objective"]] = r
        tilted = r.get("tilted")
        if tilted and "samples" in tilted:
            panels[r["dataset"], r["objective"] + " + tilt"] = {**r, **tilted}
    rows = sorted(seen_datasets, key=lambda d: _position(datasets, d, seen_datasets))
    columns = list(dict.fromkeys(o for _, o in panels))
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(2.6 * len(columns), 2.6 * len(rows)), squeeze=False
    )
    for i, d in enumerate(rows):
        for j, o in enumerate(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            run = panels.get((d, o))
            if run is None:
                ax.set_axis_off()
                continue
            s = torch.as_tensor(run["samples"], dtype=torch.float64).reshape(-1, 2)
            c = torch.as_tensor(run["centers"], dtype=torch.float64).reshape(-1, 2)
            ax.scatter(s[:, 0], s[:, 1], s=1, alpha=0.4)
            ax.scatter(c[:, 0], c[:, 1], s=8, c="red", marker="x")
            ax.set_title(
                f"{o} ({d}, {run['iterations']} it.)\n{run['modes']}/{run['num_modes']} modes, "
                f"{100 * run['high_quality']:.0f}% HQ",
                fontsize=8,
            )
            # a margin of about one mode spacing: 1.5 for the unit ring, 5.5 for the grid
            lim = max(1.5, 1.375 * float(c.abs().max()))
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_wasserstein_mmd(
    runs: Sequence[dict[str, Any]], path: str | os.PathLike[str], skip: int = 1
) -> bool:
    """Claim (c) of Wasserstein GAN: the critic's :math:`W_1` estimate against MMD^2 through
    training, one panel per run whose curve has a finite estimate, titled with their
    Spearman correlation over the evaluations after the first ``skip`` (which come before
    the critic's first fit).

    Returns:
        whether a figure was written (no run with a :math:`W_1` estimate: none).
    """
    if skip < 0:
        raise ValueError(f"skip must be non-negative, got {skip}")
    chosen = [r for r in runs if any(math.isfinite(float(v)) for v in r["curve"]["wasserstein"])]
    if not chosen:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 3.4), squeeze=False)
    for ax, run in zip(axes[0], chosen, strict=True):
        c = run["curve"]
        ax.plot(c["iteration"], c["wasserstein"], "b.-", label="critic's W1 estimate")
        ax.set_xlabel("generator iteration")
        ax.set_ylabel("held-out W1 estimate", color="b")
        ax2 = ax.twinx()
        ax2.semilogy(c["iteration"], [max(v, 1e-6) for v in c["mmd"]], "r--", label="MMD^2")
        ax2.set_ylabel("MMD^2 vs held-out data", color="r")
        w1, mmd2 = c["wasserstein"][skip:], c["mmd"][skip:]
        rho = spearman(w1, mmd2) if len(w1) >= 2 else math.nan
        ax.set_title(f"{run['objective']} on {run['dataset']}: Spearman {rho:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
