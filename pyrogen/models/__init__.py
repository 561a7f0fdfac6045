"""Ready Pyro model/guide pairs."""

from pyrogen.models.conjugate import AmortizedGaussianGuide, ConjugateGaussian
from pyrogen.models.gan import Generator, mlp
from pyrogen.models.rbm import BernoulliRBM
from pyrogen.models.vae import ARCHITECTURES, LIKELIHOODS, VAE, build_vae

__all__ = [
    "ARCHITECTURES",
    "LIKELIHOODS",
    "VAE",
    "AmortizedGaussianGuide",
    "BernoulliRBM",
    "ConjugateGaussian",
    "Generator",
    "build_vae",
    "mlp",
]
