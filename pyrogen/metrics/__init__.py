"""Measurements: log-likelihood estimates (more to come: sample quality, ArviZ export)."""

from pyrogen.metrics.likelihood import LogLikelihood, active_units, log_likelihood

__all__ = ["LogLikelihood", "active_units", "log_likelihood"]
