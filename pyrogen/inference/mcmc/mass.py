r"""The mass matrix of the gradient kernels: diagonal, or dense over the flattened position.

Every gradient kernel is preconditioned by an inverse mass matrix :math:`\Sigma = M^{-1}`,
ideally the target's covariance. It is either a tensor, the diagonal of :math:`\Sigma`
broadcastable to the event shape (the default, and the only kind before ``full_mass``), or
a :class:`DenseInverseMass`: the whole :math:`D \times D` matrix over the position flattened
to :math:`D` numbers, with its Cholesky factor :math:`\Sigma = L L^\top`. A dense matrix
whitens a correlated target, which a diagonal one cannot: on a Gaussian with covariance
:math:`\Sigma` the kernels then see a standard normal, whatever the correlations.

The functions here give the four operations the kernels need, per chain and batched (a
matrix product over the chain dimension, never a loop over chains):

* :func:`momentum`: :math:`p = L^{-\top}\xi \sim N(0, M)` from :math:`\xi \sim N(0, I)`;
* :func:`kinetic_energy`: :math:`\tfrac12 p^\top \Sigma p = \tfrac12 \|L^\top p\|^2`;
* :func:`velocity`: :math:`h\,\Sigma p` (a leapfrog drift, or a preconditioned gradient);
* :func:`whiten` / :func:`noise`: :math:`L^{-1} x` and :math:`L \xi \sim N(0, \Sigma)`.

For a diagonal tensor each function computes exactly the expression the kernels computed
before (the same operations in the same order), so diagonal runs are bit for bit unchanged.

Stan Reference Manual, "HMC algorithm parameters" (``dense_e`` metric); MCMC Using
Hamiltonian Dynamics (Neal, 2011), section 4.1, https://arxiv.org/abs/1206.1901.

Example:
    >>> import torch
    >>> cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    >>> inverse_mass = DenseInverseMass.from_matrix(cov)
    >>> p = momentum(torch.randn(4, 2), inverse_mass)
    >>> kinetic_energy(p, inverse_mass).shape
    torch.Size([4])
"""

from typing import NamedTuple

import torch
from torch import Tensor

from pyrogen.inference.mcmc.state import sum_event

__all__ = [
    "DenseInverseMass",
    "InverseMass",
    "as_inverse_mass",
    "kinetic_energy",
    "momentum",
    "noise",
    "velocity",
    "whiten",
]


class DenseInverseMass(NamedTuple):
    r"""A dense inverse mass matrix over the flattened position.

    Attributes:
        matrix: :math:`\Sigma = M^{-1}`, ``(D, D)``, symmetric positive definite, ``D`` the
            number of elements of one chain's position.
        cholesky: its lower Cholesky factor :math:`L`, :math:`\Sigma = L L^\top`.
    """

    matrix: Tensor
    cholesky: Tensor

    @classmethod
    def from_matrix(cls, matrix: Tensor) -> "DenseInverseMass":
        """Factor ``matrix`` (symmetrised first: a pooled estimate is symmetric only to
        rounding).

        Raises:
            ValueError: not a square floating-point matrix, not finite, or not positive
                definite.
        """
        if not isinstance(matrix, Tensor) or not matrix.is_floating_point():
            raise ValueError("a dense inverse mass matrix must be a floating-point tensor")
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"a dense inverse mass matrix must be square, (D, D), got {tuple(matrix.shape)}"
            )
        if not torch.isfinite(matrix).all():
            raise ValueError("the dense inverse mass matrix has non-finite entries")
        matrix = 0.5 * (matrix + matrix.T)
        chol, info = torch.linalg.cholesky_ex(matrix)
        if int(info) != 0:
            raise ValueError("the dense inverse mass matrix is not positive definite")
        return cls(matrix, chol)

    @property
    def dim(self) -> int:
        return self.matrix.shape[0]

    def to(self, like: Tensor) -> "DenseInverseMass":
        """The same matrix in ``like``'s dtype and device."""
        if self.matrix.dtype == like.dtype and self.matrix.device == like.device:
            return self
        return DenseInverseMass(self.matrix.to(like), self.cholesky.to(like))


InverseMass = Tensor | float | DenseInverseMass


def as_inverse_mass(inverse_mass: InverseMass, position: Tensor) -> Tensor | DenseInverseMass:
    """A diagonal as a tensor (``torch.as_tensor``, as the kernels always did), or a dense
    matrix cast to ``position``'s dtype and device and checked against its event size."""
    if isinstance(inverse_mass, DenseInverseMass):
        dim = position[0].numel()
        if inverse_mass.dim != dim:
            raise ValueError(
                f"the dense inverse mass matrix is {inverse_mass.dim} x {inverse_mass.dim} but "
                f"a position has {dim} elements (event shape {tuple(position.shape[1:])})"
            )
        return inverse_mass.to(position)
    return torch.as_tensor(inverse_mass, dtype=position.dtype, device=position.device)


def _rows(x: Tensor) -> Tensor:
    """``(num_chains, *event_shape)`` as ``(num_chains, D)``."""
    return x.reshape(x.shape[0], -1)


def momentum(xi: Tensor, inverse_mass: Tensor | DenseInverseMass) -> Tensor:
    r""":math:`N(0, M)` momenta from standard normal ``xi``: :math:`p = L^{-\top} \xi`, whose
    covariance is :math:`L^{-\top} L^{-1} = \Sigma^{-1} = M` (diagonal: :math:`\xi /
    \sqrt{\Sigma_{ii}}`)."""
    if isinstance(inverse_mass, DenseInverseMass):
        # rows: p^T = xi^T L^{-1}, i.e. solve X L = xi^T
        p = torch.linalg.solve_triangular(inverse_mass.cholesky, _rows(xi), upper=False, left=False)
        return p.reshape(xi.shape)
    return xi * inverse_mass.rsqrt()


def kinetic_energy(p: Tensor, inverse_mass: Tensor | DenseInverseMass | float) -> Tensor:
    r""":math:`\tfrac12 p^\top \Sigma p` per chain (dense: :math:`\tfrac12 \|L^\top p\|^2`,
    never negative)."""
    if isinstance(inverse_mass, DenseInverseMass):
        return 0.5 * (_rows(p) @ inverse_mass.cholesky).pow(2).sum(1)
    return 0.5 * sum_event(p * p * inverse_mass)


def velocity(
    p: Tensor, inverse_mass: Tensor | DenseInverseMass | float, step: Tensor | float
) -> Tensor:
    r""":math:`h\,\Sigma p` per chain, ``step`` (:math:`h`) a scalar or shaped to broadcast
    against ``p`` (:func:`~pyrogen.inference.mcmc.state.per_chain`)."""
    if isinstance(inverse_mass, DenseInverseMass):
        return step * (_rows(p) @ inverse_mass.matrix).reshape(p.shape)
    return step * inverse_mass * p


def whiten(x: Tensor, inverse_mass: Tensor | DenseInverseMass | float) -> Tensor:
    r""":math:`L^{-1} x` per chain: coordinates in which :math:`N(0, \Sigma)` is standard
    normal (diagonal: :math:`x / \sqrt{\Sigma_{ii}}`)."""
    if isinstance(inverse_mass, DenseInverseMass):
        w = torch.linalg.solve_triangular(inverse_mass.cholesky, _rows(x).T, upper=False)
        return w.T.reshape(x.shape)
    return x * torch.as_tensor(inverse_mass, dtype=x.dtype, device=x.device).rsqrt()


def noise(xi: Tensor, inverse_mass: DenseInverseMass) -> Tensor:
    r""":math:`L \xi \sim N(0, \Sigma)` per chain, from standard normal ``xi``."""
    return (_rows(xi) @ inverse_mass.cholesky.T).reshape(xi.shape)
