"""Batched MCMC: kernels over explicit state with a leading chain dimension.

``hmc``, ``langevin`` (ULA, MALA) and ``gibbs`` (Bernoulli RBM) are modules of functions
(``init``, ``step``) in the BlackJAX style; :func:`sample` runs them with warm-up adaptation;
:class:`ModelPotential` turns a Pyro model into a batched potential; :class:`PyroKernel` lets
``pyro.infer.MCMC`` drive them.
"""

from pyrogen.inference.mcmc import gibbs, hmc, langevin
from pyrogen.inference.mcmc.hmc import HMCInfo
from pyrogen.inference.mcmc.langevin import LangevinInfo
from pyrogen.inference.mcmc.potential import ModelPotential
from pyrogen.inference.mcmc.pyro_kernel import PyroKernel
from pyrogen.inference.mcmc.sample import KERNELS, MCMCResult, find_step_size, sample
from pyrogen.inference.mcmc.state import GradientState, potential_and_grad

__all__ = [
    "KERNELS",
    "GradientState",
    "HMCInfo",
    "LangevinInfo",
    "MCMCResult",
    "ModelPotential",
    "PyroKernel",
    "find_step_size",
    "gibbs",
    "hmc",
    "langevin",
    "potential_and_grad",
    "sample",
]
