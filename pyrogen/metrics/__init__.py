"""Measurements: log-likelihood estimates (importance sampling; AIS for RBMs), sample quality
(mode coverage, MMD), a guide's draws and their PSIS diagnostics, and ArviZ export."""

from pyrogen.metrics.ais import (
    AISResult,
    RBMLogLikelihood,
    ais_log_partition,
    base_log_partition,
    base_rate_bias,
    default_betas,
    exact_samples,
    rbm_log_likelihood,
    reverse_ais_log_partition,
)
from pyrogen.metrics.arviz import PyroStatsRecorder, to_arviz
from pyrogen.metrics.guide_draws import GuideDraws, draw_guide
from pyrogen.metrics.likelihood import (
    FittedGaussianGuide,
    LogLikelihood,
    active_units,
    active_units_from_draws,
    log_likelihood,
)
from pyrogen.metrics.posterior_comparison import (
    PosteriorComparison,
    compare_posteriors,
    plot_forest,
)
from pyrogen.metrics.psis import khat_threshold, psis_khat, psis_moments, psis_smooth
from pyrogen.metrics.sample_quality import (
    MMD,
    EnergyDistance,
    ModeCoverage,
    energy_distance,
    median_bandwidth,
    mmd,
    mode_coverage,
)
from pyrogen.metrics.vsbc import VSBCResult, vsbc

__all__ = [
    "AISResult",
    "EnergyDistance",
    "FittedGaussianGuide",
    "GuideDraws",
    "LogLikelihood",
    "MMD",
    "ModeCoverage",
    "PosteriorComparison",
    "PyroStatsRecorder",
    "RBMLogLikelihood",
    "VSBCResult",
    "active_units",
    "active_units_from_draws",
    "ais_log_partition",
    "base_log_partition",
    "base_rate_bias",
    "compare_posteriors",
    "default_betas",
    "draw_guide",
    "energy_distance",
    "exact_samples",
    "khat_threshold",
    "log_likelihood",
    "median_bandwidth",
    "mmd",
    "mode_coverage",
    "plot_forest",
    "psis_khat",
    "psis_moments",
    "psis_smooth",
    "rbm_log_likelihood",
    "reverse_ais_log_partition",
    "to_arviz",
    "vsbc",
]
