"""Measurements: log-likelihood estimates and ArviZ export (sample quality to come)."""

from pyrogen.metrics.arviz import to_arviz
from pyrogen.metrics.likelihood import LogLikelihood, active_units, log_likelihood

__all__ = ["LogLikelihood", "active_units", "log_likelihood", "to_arviz"]
