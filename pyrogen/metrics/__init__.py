"""Measurements: log-likelihood estimates, sample quality (mode coverage, MMD) and ArviZ
export."""

from pyrogen.metrics.arviz import PyroStatsRecorder, to_arviz
from pyrogen.metrics.likelihood import LogLikelihood, active_units, log_likelihood
from pyrogen.metrics.sample_quality import MMD, ModeCoverage, median_bandwidth, mmd, mode_coverage

__all__ = [
    "MMD",
    "LogLikelihood",
    "ModeCoverage",
    "PyroStatsRecorder",
    "active_units",
    "log_likelihood",
    "median_bandwidth",
    "mmd",
    "mode_coverage",
    "to_arviz",
]
