"""Objectives for Pyro model/guide pairs; batched samplers in ``pyrogen.inference.mcmc``."""

from pyrogen.inference.avb import AVB, AVBLosses, implicit_sample
from pyrogen.inference.avb_posterior import fit_avb_posterior
from pyrogen.inference.cd import ContrastiveDivergence
from pyrogen.inference.gan import GAN, WGAN, WGANGP, GANLosses, HingeGAN
from pyrogen.inference.gebm import GEBM, GEBMResampled, GEBMSamples
from pyrogen.inference.importance import LogWeights, log_weights
from pyrogen.inference.kale import KALE
from pyrogen.inference.latent_tilt import TiltedSamples, tilted_sample
from pyrogen.inference.nce import NCE
from pyrogen.inference.objective import Objective, empty_guide
from pyrogen.inference.recording import RecordedLoss, RecordedObjective
from pyrogen.inference.renyi import CUBO, IWAE, RenyiBound, VRMax, renyi_reduce
from pyrogen.inference.self_contrastive import SelfContrastive
from pyrogen.inference.trainer import Trainer

__all__ = [
    "AVB",
    "AVBLosses",
    "CUBO",
    "GAN",
    "GEBM",
    "GEBMResampled",
    "GEBMSamples",
    "IWAE",
    "KALE",
    "WGAN",
    "WGANGP",
    "ContrastiveDivergence",
    "GANLosses",
    "HingeGAN",
    "LogWeights",
    "NCE",
    "Objective",
    "RecordedLoss",
    "RecordedObjective",
    "RenyiBound",
    "SelfContrastive",
    "TiltedSamples",
    "Trainer",
    "VRMax",
    "empty_guide",
    "fit_avb_posterior",
    "implicit_sample",
    "log_weights",
    "renyi_reduce",
    "tilted_sample",
]
