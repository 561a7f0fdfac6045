r"""MNIST from the standard IDX files, with a small validating IDX parser.

Files are looked up in ``root`` or in the directory named by the ``PYROGEN_DATA`` environment
variable; each may be gzip-compressed (``.gz``). Other data sets in the same format (e.g.
Fashion-MNIST, which uses the same file names) load the same way.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["MNIST_FILES", "PYROGEN_DATA_ENV", "load_mnist", "read_idx"]

PYROGEN_DATA_ENV = "PYROGEN_DATA"

MnistSplit = Literal["train", "test"]

#: ``split -> (images file, labels file)``, without the optional ``.gz`` suffix.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type byte -> element dtype; multi-byte types are big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    # BadGzipFile: bad header or CRC; EOFError: truncated stream; zlib.error: corrupt deflate data.
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(
            f"{path}: corrupt or truncated gzip file ({e}); delete it and download it again"
        ) from e


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    r"""Read an IDX file (the MNIST format), gzip-compressed if its name ends in ``.gz``.

    The header is two zero bytes, a type byte (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
    ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), a byte giving the number of dimensions,
    then one big-endian uint32 per dimension; the data follow in C order.

    Args:
        path: File to read.
        ndim: If given, the number of dimensions the header must declare.

    Returns:
        A writable array in native byte order with the shape given by the header.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: For a corrupt gzip stream, a bad magic number, an unexpected ``ndim``, or a
            data length that does not match the header (the message gives both byte counts).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
        >>> read_idx(p)
        array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    raw = _read_bytes(path)
    where = " (after gzip decompression)" if path.suffix == ".gz" else ""
    if len(raw) < 4:
        raise ValueError(
            f"{path}: {len(raw)} bytes{where}, too short for the 4-byte IDX magic number; "
            "the file is truncated or not an IDX file"
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}; expected two zero bytes, a type "
            f"byte in {{{', '.join(f'0x{t:02x}' for t in _IDX_DTYPES)}}} and the number of "
            "dimensions; is this an IDX file (and, if compressed, does its name end in .gz)?"
        )
    dtype, file_ndim = _IDX_DTYPES[raw[2]], raw[3]
    if ndim is not None and file_ndim != ndim:
        raise ValueError(
            f"{path}: IDX header declares {file_ndim} dimension(s), expected {ndim} "
            f"(magic number 0x{raw[:4].hex()})"
        )
    header_len = 4 + 4 * file_ndim
    if len(raw) < header_len:
        raise ValueError(
            f"{path}: truncated IDX header{where}: expected {header_len} bytes, got {len(raw)}"
        )
    shape = struct.unpack(f">{file_ndim}I", raw[4:header_len])
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX data {problem}{where}: header shape {shape} needs {expected} data "
            f"bytes, file has {actual}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    # frombuffer views immutable bytes; the copy makes the array writable and native-endian.
    return data.astype(dtype.newbyteorder("="))


def _search_dirs(root: str | os.PathLike[str] | None) -> tuple[list[Path], Path | None, str]:
    """Directories to search, the base directory, and a phrase saying where the base came from."""
    if root is not None:
        base, origin = Path(root).expanduser(), "root argument"
    elif os.environ.get(PYROGEN_DATA_ENV):
        base, origin = Path(os.environ[PYROGEN_DATA_ENV]).expanduser(), f"${PYROGEN_DATA_ENV}"
    else:
        return [], None, ""
    # base/MNIST/raw is where torchvision.datasets.MNIST puts the files it downloads.
    return [base, base / "mnist", base / "MNIST" / "raw"], base, origin


def _find(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        # Prefer the uncompressed file when both exist: it skips decompression.
        for candidate in (d / name, d / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _missing_message(missing: list[str], dirs: list[Path], origin: str) -> str:
    wanted = ", ".join(f"{n}[.gz]" for n in missing)
    if dirs:
        looked = f"Looked in ({origin}):\n" + "\n".join(f"  {d}" for d in dirs)
    else:
        looked = f"No directory to look in: root is None and ${PYROGEN_DATA_ENV} is not set."
    return (
        f"MNIST file(s) not found: {wanted}.\n{looked}\n"
        "To fix: pass root=<directory holding the files>, or set the "
        f"{PYROGEN_DATA_ENV} environment variable to it (files may also sit in its mnist/ "
        "subfolder), or pass download=True with torchvision installed."
    )


def _download(base: Path | None, split: str) -> None:
    if base is None:
        raise FileNotFoundError(
            f"download=True needs a directory to download into: pass root= or set "
            f"${PYROGEN_DATA_ENV}."
        )
    # Broad except: torchvision can be installed yet fail to import (e.g. built for another torch).
    try:
        import torchvision
    except Exception as e:
        raise ImportError(
            "download=True needs torchvision, which could not be imported "
            f"({type(e).__name__}: {e}). Install a torchvision matching your torch, or download "
            f"the MNIST IDX files yourself and pass root= or set ${PYROGEN_DATA_ENV}."
        ) from e
    torchvision.datasets.MNIST(root=str(base), train=split == "train", download=True)


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    split: MnistSplit = "train",
    download: bool = False,
    flatten: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> TensorDataset:
    r"""Load MNIST from its IDX files as a ``TensorDataset(images, labels)``.

    The files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ending in ``.gz``;
    the uncompressed one wins if both exist) are searched for in ``D``, ``D/mnist`` and
    ``D/MNIST/raw``, where ``D`` is ``root`` or else ``$PYROGEN_DATA``. Pixels are divided by 255
    so they lie in ``[0, 1]``.

    Args:
        root: Data directory; overrides ``$PYROGEN_DATA``.
        split: ``"train"`` (60000 images) or ``"test"`` (10000).
        download: If the files are missing, fetch them into ``D`` with
            ``torchvision.datasets.MNIST`` (needs an importable torchvision).
        flatten: If true images have shape ``(n, 784)``, else ``(n, 1, 28, 28)``.
        device: Device of the returned tensors.
        dtype: Floating-point dtype of the images. Labels are always int64.

    Returns:
        ``TensorDataset`` whose ``tensors`` are ``(images, labels)``.

    Raises:
        FileNotFoundError: If files are missing; the message lists the files and directories.
        ImportError: If ``download=True`` is needed but torchvision cannot be imported.
        ValueError: For bad arguments or malformed files (see :func:`read_idx`).

    Example:
        >>> images, labels = load_mnist(split="test").tensors  # doctest: +SKIP
        >>> images.shape  # doctest: +SKIP
        torch.Size([10000, 784])
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    names = MNIST_FILES[split]
    dirs, base, origin = _search_dirs(root)
    found = [_find(n, dirs) for n in names]
    if download and None in found:
        _download(base, split)
        found = [_find(n, dirs) for n in names]
    images_path, labels_path = found
    if images_path is None or labels_path is None:
        missing = [n for n, p in zip(names, found, strict=True) if p is None]
        raise FileNotFoundError(_missing_message(missing, dirs, origin))

    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    for path, arr in ((images_path, images), (labels_path, labels)):
        if arr.dtype != np.uint8:
            raise ValueError(f"{path}: expected uint8 IDX data (type 0x08), got {arr.dtype}")
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; the files come from different data sets or splits"
        )

    # Move as uint8 and convert on the target device: a quarter of the transfer of float32.
    x = torch.from_numpy(images).to(device=device).to(dtype).div_(255.0)
    x = x.reshape(len(x), -1) if flatten else x.unsqueeze(1)
    y = torch.from_numpy(labels).to(device=device, dtype=torch.int64)
    return TensorDataset(x, y)
