"""Bayesian logistic regression: the posterior problem of the MCMC benchmark and the
posterior harness.

N = 1000 rows, D = 10 features plus an intercept; x ~ N(0, I) and the true coefficients
~ N(0, 1) from NumPy's generator at ``seed``, the true intercept a fifth of a Normal(0, 5)
draw (so both classes are common). Priors: coefficients ~ Normal(0, 1), intercept ~
Normal(0, 5).
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

__all__ = ["D", "N", "data", "model"]

N, D = 1000, 10


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x (N, D), y (N,), truth (D + 1,))`` as float32 arrays (truth: coefficients, then
    the intercept)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(np.float32)
    coef = rng.standard_normal(D)
    intercept = rng.normal(0.0, 5.0) * 0.2  # a fifth of a prior draw keeps both classes common
    p = 1 / (1 + np.exp(-(x @ coef + intercept)))
    y = (rng.random(N) < p).astype(np.float32)
    return x, y, np.append(coef, intercept)


def model(x: torch.Tensor, y: torch.Tensor) -> None:
    """The model once, broadcasting over a leading chain dimension (batched samplers) or
    not; the priors are drawn on the data's device."""
    zero = x.new_zeros(())
    coef = pyro.sample("coef", dist.Normal(zero, 1.0).expand([D]).to_event(1))
    intercept = pyro.sample("intercept", dist.Normal(zero, 5.0))
    logits = (x * coef).sum(-1) + intercept  # (N,) for one chain, (chains, N) for many
    with pyro.plate("data", x.shape[-2]):
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)
