r"""Binarization of grey-level images with values in ``[0, 1]``.

Three flavours are common for binary-likelihood models on MNIST-like data:

* static thresholding (:func:`binarize_static`),
* a single Bernoulli draw fixed once for the whole run (:func:`binarize_bernoulli_fixed`),
* dynamic binarization, a fresh Bernoulli draw each time an example is used (Burda et al.,
  2015, "Importance Weighted Autoencoders", arXiv:1509.00519): :class:`DynamicBinarized` for
  datasets and :func:`binarize_dynamic` for batches.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "DynamicBinarized",
    "binarize_bernoulli_fixed",
    "binarize_dynamic",
    "binarize_static",
]


class _SizedDataset(Protocol):
    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...


def _float_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()


def binarize_static(x: Tensor, threshold: float = 0.5) -> Tensor:
    r"""Deterministic binarization: 1 where ``x > threshold``, else 0.

    Args:
        x: Tensor of any shape.
        threshold: Values strictly above it become 1.

    Returns:
        Tensor of zeros and ones with ``x``'s shape and device, and ``x``'s dtype if floating
        point (else the default float dtype).

    Example:
        >>> binarize_static(torch.tensor([0.2, 0.5, 0.9]))
        tensor([0., 0., 1.])
    """
    return (x > threshold).to(_float_dtype(x))


def binarize_bernoulli_fixed(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""One Bernoulli draw with success probabilities ``x``, meant to be made once and kept.

    Call it once on the whole dataset and train on the result: every epoch then sees the same
    binary images. For a fresh draw per use, see :class:`DynamicBinarized`.

    Args:
        x: Probabilities in ``[0, 1]``, any shape, floating point.
        generator: Generator on ``x``'s device, for a reproducible draw.

    Returns:
        New tensor of zeros and ones, same shape, dtype and device as ``x``.

    Raises:
        ValueError: If ``x`` is not floating point or has values outside ``[0, 1]``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> binarize_bernoulli_fixed(torch.tensor([0.0, 1.0]), generator=g)
        tensor([0., 1.])
    """
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point, got {x.dtype}")
    # A one-off call, so the host sync of this check is cheap compared with a silent NaN later.
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(
            f"x must hold probabilities in [0, 1]; got values in "
            f"[{x.min().item():.4g}, {x.max().item():.4g}]"
        )
    return torch.bernoulli(x, generator=generator)


def binarize_dynamic(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Fresh Bernoulli draw with probabilities ``x``, for dynamic binarization of a batch.

    On an accelerator it runs without a host sync, so it suits a training loop there, and
    values outside ``[0, 1]`` are not checked; on the CPU they are (a ValueError).

    Args:
        x: Floating-point probabilities in ``[0, 1]``, any shape.
        generator: Optional generator on ``x``'s device.

    Returns:
        Tensor of zeros and ones, same shape, dtype and device as ``x``.

    Example:
        >>> batch = torch.full((2, 3), 0.5)
        >>> binarize_dynamic(batch).shape
        torch.Size([2, 3])
    """
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point, got {x.dtype}")
    if x.device.type == "cpu" and x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(
            f"x must hold probabilities in [0, 1]; got values in "
            f"[{x.min().item():.4g}, {x.max().item():.4g}]"
        )
    return torch.bernoulli(x, generator=generator)


class DynamicBinarized(Dataset[Any]):
    r"""Dataset wrapper that draws a fresh binarization every time an example is indexed.

    If the wrapped dataset yields tuples (e.g. ``(image, label)`` from a ``TensorDataset``), only
    the first element is binarized and the rest is returned unchanged; a bare tensor is
    binarized as a whole.

    With ``generator=None`` draws come from torch's global generator, which ``DataLoader``
    seeds differently in each worker process. A shared ``generator`` is copied into every worker
    with the same state, so workers would repeat each other's draws: use it with
    ``num_workers=0``.

    Args:
        dataset: Indexable dataset with a length whose images are probabilities in ``[0, 1]``.
        generator: Optional generator on the images' device, for reproducible draws.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = DynamicBinarized(TensorDataset(torch.rand(4, 6), torch.arange(4)))
        >>> x, y = ds[2]
        >>> x.shape, int(y)
        (torch.Size([6]), 2)
    """

    def __init__(self, dataset: _SizedDataset, generator: torch.Generator | None = None) -> None:
        self.dataset = dataset
        self.generator = generator

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if isinstance(item, Tensor):
            return torch.bernoulli(item, generator=self.generator)
        if isinstance(item, tuple | list) and item and isinstance(item[0], Tensor):
            return (torch.bernoulli(item[0], generator=self.generator), *item[1:])
        raise TypeError(
            "DynamicBinarized expects the wrapped dataset to yield a tensor or a tuple whose "
            f"first element is a tensor, got {type(item).__name__}"
        )
