r"""Fits of one posterior side by side: per parameter, each fit's mean and sd against a
reference (a long MCMC run, or exact moments), in units of the reference's sd, with PSIS
:math:`\hat k` for guides; and an ArviZ forest plot of all of them.

A fit is whatever gives draws of the model's sites: a guide's
:class:`~pyrogen.metrics.guide_draws.GuideDraws`, pyrogen's
:class:`~pyrogen.inference.mcmc.MCMCResult`, a finished ``pyro.infer.MCMC``, or a dict of
draws with the draws first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyro.infer
import torch

from pyrogen.inference.mcmc.result import MCMCResult
from pyrogen.metrics.guide_draws import GuideDraws
from pyrogen.metrics.psis import psis_khat

__all__ = ["PosteriorComparison", "compare_posteriors", "fit_draws", "plot_forest"]

Moments = Mapping[str, tuple[Any, Any]]


class PosteriorComparison(NamedTuple):
    """The fits' errors against the reference.

    Attributes:
        rows: one per fit and parameter element: ``fit``, ``parameter`` (site and index),
            ``mean``, ``sd``, ``mean_error`` ((mean - reference mean) / reference sd),
            ``sd_error`` (sd / reference sd - 1), ``khat`` (guides with one weight per
            draw, else None).
        summary: one per fit: the largest absolute mean and sd errors over the parameters,
            and k-hat.
    """

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]

    def markdown(self) -> str:
        """The summary as a markdown table."""
        lines = [
            "| fit | max abs mean error (ref sd) | max abs sd error (relative) | k-hat |",
            "|---|---:|---:|---:|",
        ]
        for s in self.summary:
            khat = "-" if s["khat"] is None else f"{s['khat']:.2f}"
            lines.append(
                f"| {s['fit']} | {s['max_abs_mean_error']:.3f} | {s['max_abs_sd_error']:.3f} "
                f"| {khat} |"
            )
        return "\n".join(lines) + "\n"


def fit_draws(fit: Any) -> dict[str, np.ndarray]:
    """Site -> ``(draws, *shape)`` as float64, chains pooled."""
    if isinstance(fit, GuideDraws):
        samples = fit.samples
        return {k: v.detach().double().cpu().numpy() for k, v in samples.items()}
    if isinstance(fit, MCMCResult):
        return {
            k: v.detach().double().cpu().numpy().reshape(-1, *v.shape[2:])
            for k, v in fit.samples.items()
        }
    if isinstance(fit, pyro.infer.MCMC):
        return {k: v.detach().double().cpu().numpy() for k, v in fit.get_samples().items()}
    if isinstance(fit, Mapping):
        return {k: np.asarray(torch.as_tensor(v).double().cpu()) for k, v in fit.items()}
    raise TypeError(
        "a fit must be GuideDraws, an MCMCResult, a pyro.infer.MCMC or a dict of draws; got "
        f"{type(fit).__name__}"
    )


def _moments(draws: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {k: (v.mean(0), v.std(0)) for k, v in draws.items()}


def _index_names(site: str, shape: tuple[int, ...]) -> list[str]:
    if not shape:
        return [site]
    return [f"{site}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]


def compare_posteriors(
    fits: Mapping[str, Any],
    reference: str | Moments,
    sites: Sequence[str] | None = None,
) -> PosteriorComparison:
    """Every fit's per-parameter mean and sd against the reference.

    Args:
        fits: name -> fit (see the module's docstring).
        reference: the name of one of ``fits`` (its moments are the reference; it gets rows
            too, with errors 0), or exact moments: site -> (mean, sd).
        sites: the sites to compare (default: the reference's).

    Example:
        >>> import torch
        >>> out = compare_posteriors(
        ...     {"a": {"mu": torch.randn(4000)}, "b": {"mu": 0.5 + torch.randn(4000)}},
        ...     reference={"mu": (0.0, 1.0)},
        ... )
        >>> [s["fit"] for s in out.summary]
        ['a', 'b']
    """
    if not fits:
        raise ValueError("no fits to compare")
    draws = {name: fit_draws(fit) for name, fit in fits.items()}
    if isinstance(reference, str):
        if reference not in draws:
            raise KeyError(f"reference {reference!r} is not one of the fits {sorted(draws)}")
        ref = _moments(draws[reference])
    else:
        ref = {
            k: (np.asarray(m, dtype=np.float64), np.asarray(s, dtype=np.float64))
            for k, (m, s) in reference.items()
        }
    names = list(ref) if sites is None else list(sites)
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for fit_name, one_fit_draws in draws.items():
        fit = fits[fit_name]
        khat = None
        if isinstance(fit, GuideDraws) and fit.log_weight.numel() == fit.num_samples:
            khat = float(psis_khat(fit.log_weight.reshape(-1)))  # one weight per draw
        moments = _moments(one_fit_draws)
        mean_errors, sd_errors = [], []
        for site in names:
            if site not in moments or site not in ref:
                raise KeyError(
                    f"site {site!r} is missing from "
                    + (f"fit {fit_name!r}" if site not in moments else "the reference")
                )
            mean, sd = moments[site]
            ref_mean, ref_sd = (np.broadcast_to(a, mean.shape) for a in ref[site])
            if mean.shape != ref_mean.shape:
                raise ValueError(f"site {site!r}: shapes {mean.shape} and {ref_mean.shape}")
            for i, label in zip(
                np.ndindex(*mean.shape), _index_names(site, mean.shape), strict=True
            ):
                me = float((mean[i] - ref_mean[i]) / ref_sd[i])
                se = float(sd[i] / ref_sd[i] - 1.0)
                mean_errors.append(abs(me))
                sd_errors.append(abs(se))
                rows.append(
                    {
                        "fit": fit_name,
                        "parameter": label,
                        "mean": float(mean[i]),
                        "sd": float(sd[i]),
                        "mean_error": me,
                        "sd_error": se,
                        "khat": khat,
                    }
                )
        summary.append(
            {
                "fit": fit_name,
                "max_abs_mean_error": max(mean_errors, default=math.nan),
                "max_abs_sd_error": max(sd_errors, default=math.nan),
                "khat": khat,
            }
        )
    return PosteriorComparison(rows, summary)


def plot_forest(
    fits: Mapping[str, Any],
    path: str | Path,
    sites: Sequence[str] | None = None,
    hdi_prob: float = 0.9,
) -> Path:
    """ArviZ's forest plot of every fit side by side (one colour per fit, chains pooled),
    saved to ``path``."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyrogen.metrics.arviz import _from_dict

    data, num_params = [], 0
    for fit in fits.values():
        draws = fit_draws(fit)
        kept = {k: v for k, v in draws.items() if sites is None or k in sites}
        num_params = max(num_params, sum(int(np.prod(v.shape[1:])) for v in kept.values()))
        data.append(_from_dict({"posterior": {k: v[None] for k, v in kept.items()}}))
    axes = az.plot_forest(
        data,
        model_names=list(fits),
        combined=True,
        hdi_prob=hdi_prob,
        figsize=(7, 1.0 + 0.22 * num_params * len(fits)),
    )
    fig = np.ravel(axes)[0].get_figure()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
