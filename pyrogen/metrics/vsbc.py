r"""Variational simulation-based calibration (Yao, Vehtari, Simpson & Gelman 2018, "Yes, but
did it work?: evaluating variational inference", ICML).

Draw parameters :math:`\theta_0` from the prior and data from the model given them, fit the
guide to those data, and record :math:`p = \Pr_q(\theta < \theta_0)` for every parameter. An
exact posterior makes :math:`p` uniform over replications. The paper's diagnostic is the
*symmetry* of its distribution: a point estimate that is biased in one direction skews it,
which a two-sample Kolmogorov-Smirnov test between :math:`p` and :math:`1 - p` detects. A
guide that is centred but too narrow (or too wide) keeps :math:`p` symmetric and makes it
U-shaped (or peaked) instead, so this module also reports a KS test of uniformity.

The fits are the user's: ``fit(*data)`` may train a guide by SVI, run MCMC, or set a guide
in closed form; replications are independent fits, hence a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from pyrogen.metrics.guide_draws import GuideDraws

__all__ = ["VSBCResult", "vsbc"]


class VSBCResult(NamedTuple):
    r"""VSBC's probabilities and tests.

    Attributes:
        probabilities: per site, :math:`\Pr_q(\theta < \theta_0)`, shape
            ``(replications, *site shape)``.
        symmetry_pvalue: per site, the KS test of :math:`p` against :math:`1 - p` (small:
            asymmetric, a directional bias), one per element of the site.
        uniformity_pvalue: per site, the KS test of :math:`p` against U(0, 1) (small: not
            calibrated; with a large symmetry p-value, a guide too narrow or too wide).
    """

    probabilities: dict[str, Tensor]
    symmetry_pvalue: dict[str, np.ndarray]
    uniformity_pvalue: dict[str, np.ndarray]


def _ks_tests(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import stats

    flat = p.reshape(p.shape[0], -1)
    sym = [stats.ks_2samp(col, 1.0 - col).pvalue for col in flat.T]
    uni = [stats.kstest(col, "uniform").pvalue for col in flat.T]
    return np.reshape(sym, p.shape[1:]), np.reshape(uni, p.shape[1:])


def vsbc(
    simulate: Callable[[int], tuple[dict[str, Tensor], Sequence[Any]]],
    fit: Callable[..., GuideDraws | dict[str, Tensor]],
    num_replications: int = 100,
    sites: Sequence[str] | None = None,
    progress: bool = False,
) -> VSBCResult:
    r"""Run VSBC over ``num_replications`` simulated data sets.

    Args:
        simulate: ``simulate(r) -> (theta0, data)``: for replication ``r`` (use it as a seed),
            the true parameters drawn from the prior (a dict of site values) and the data
            drawn from the model given them (a tuple of the arguments ``fit`` takes).
        fit: ``fit(*data)`` returns draws of the fitted posterior: a
            :class:`~pyrogen.metrics.guide_draws.GuideDraws` or a dict of site values with
            the draws first, ``(S, *site shape)``.
        num_replications: at least 10 (the KS tests need some).
        sites: the sites to check (default: every site of ``theta0``).
        progress: a tqdm bar over replications.

    Example:
        >>> import torch
        >>> def simulate(r):
        ...     g = torch.Generator().manual_seed(r)
        ...     theta = torch.randn((), generator=g)
        ...     return {"mu": theta}, (theta + torch.randn(20, generator=g),)
        >>> def fit(x):  # the exact posterior of mu under N(0, 1) prior, N(mu, 1) data
        ...     n = x.shape[0]
        ...     return {"mu": x.sum() / (n + 1) + torch.randn(1000) / (n + 1) ** 0.5}
        >>> out = vsbc(simulate, fit, num_replications=50)
        >>> out.probabilities["mu"].shape
        torch.Size([50])
    """
    if isinstance(num_replications, bool) or not isinstance(num_replications, int):
        raise TypeError(f"num_replications must be an int, got {num_replications!r}")
    if num_replications < 10:
        raise ValueError(f"num_replications must be at least 10, got {num_replications}")
    rows: dict[str, list[Tensor]] = {}
    replications: Any = range(num_replications)
    if progress:
        from tqdm.auto import tqdm

        replications = tqdm(replications, desc="VSBC", unit="fit")
    for r in replications:
        theta0, data = simulate(r)
        names = list(theta0) if sites is None else list(sites)
        draws = fit(*data)
        samples = draws.samples if isinstance(draws, GuideDraws) else draws
        for name in names:
            if name not in samples or name not in theta0:
                raise KeyError(
                    f"site {name!r} is missing from "
                    + ("the fit's draws" if name not in samples else "theta0")
                    + f" (draws have {sorted(samples)}, theta0 has {sorted(theta0)})"
                )
            value, truth = samples[name].detach(), torch.as_tensor(theta0[name]).detach()
            if value.shape[1:] != truth.shape:
                raise ValueError(
                    f"site {name!r}: draws of shape {tuple(value.shape)} do not match theta0 "
                    f"of shape {tuple(truth.shape)} (draws first)"
                )
            below = (value < truth.to(value.device)).to(torch.float64).mean(0)
            rows.setdefault(name, []).append(below.cpu())
    probabilities = {k: torch.stack(v) for k, v in rows.items()}
    sym, uni = {}, {}
    for name, p in probabilities.items():
        sym[name], uni[name] = _ks_tests(p.numpy())
    return VSBCResult(probabilities, sym, uni)
