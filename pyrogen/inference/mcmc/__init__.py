"""Batched MCMC: kernels over explicit state with a leading chain dimension.

``hmc``, ``langevin`` (ULA, MALA), ``kinetic`` (underdamped Langevin) and ``gibbs`` (any
model with block conditionals) are modules of functions (``init``, ``step``, ``build``) in
the BlackJAX style, registered by name in :data:`KERNELS`; :func:`sample` runs any of them
with the window adaptation of ``warmup``; ``mass`` holds the operations of a diagonal or a
dense mass matrix (:class:`DenseInverseMass`, ``sample(full_mass=True)``);
:class:`ModelPotential` turns a Pyro model into a batched potential;
:class:`CompiledPotential` replays a record of a potential's operations
(``sample(compile_potential=...)``); :class:`PyroKernel` lets ``pyro.infer.MCMC`` drive them.
"""

from pyrogen.inference.mcmc import gibbs, hmc, kinetic, langevin, mass
from pyrogen.inference.mcmc.compiled import CompiledPotential
from pyrogen.inference.mcmc.gibbs import BlockConditionals
from pyrogen.inference.mcmc.hmc import HMCInfo
from pyrogen.inference.mcmc.kernels import KERNELS, Kernel, register_kernel
from pyrogen.inference.mcmc.langevin import LangevinInfo
from pyrogen.inference.mcmc.mass import DenseInverseMass
from pyrogen.inference.mcmc.potential import ModelPotential
from pyrogen.inference.mcmc.pyro_kernel import PyroKernel
from pyrogen.inference.mcmc.result import MCMCResult
from pyrogen.inference.mcmc.sample import ONE_CHAIN_NUM_STEPS, sample
from pyrogen.inference.mcmc.state import GradientState, potential_and_grad
from pyrogen.inference.mcmc.warmup import find_step_size

__all__ = [
    "KERNELS",
    "ONE_CHAIN_NUM_STEPS",
    "BlockConditionals",
    "CompiledPotential",
    "DenseInverseMass",
    "GradientState",
    "HMCInfo",
    "Kernel",
    "LangevinInfo",
    "MCMCResult",
    "ModelPotential",
    "PyroKernel",
    "find_step_size",
    "gibbs",
    "hmc",
    "kinetic",
    "langevin",
    "mass",
    "potential_and_grad",
    "register_kernel",
    "sample",
]
