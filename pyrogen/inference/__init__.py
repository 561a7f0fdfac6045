"""Objectives for Pyro model/guide pairs; batched samplers in ``pyrogen.inference.mcmc``."""

from pyrogen.inference.importance import LogWeights, log_weights
from pyrogen.inference.objective import Objective
from pyrogen.inference.renyi import CUBO, IWAE, RenyiBound, VRMax, renyi_reduce

__all__ = [
    "CUBO",
    "IWAE",
    "LogWeights",
    "Objective",
    "RenyiBound",
    "VRMax",
    "log_weights",
    "renyi_reduce",
]
