"""Ready Pyro model/guide pairs."""

from pyrogen.models.conjugate import AmortizedGaussianGuide, ConjugateGaussian

__all__ = ["AmortizedGaussianGuide", "ConjugateGaussian"]
