"""Tests for pyrogen.data: digits, MNIST IDX loading, binarization and 2-D toy sets."""

from __future__ import annotations

import gzip
import math
import struct
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyrogen.data import (
    DynamicBinarized,
    ToyData,
    binarize_bernoulli_fixed,
    binarize_dynamic,
    binarize_static,
    digits_split_indices,
    grid,
    load_digits,
    load_mnist,
    read_idx,
    ring,
    spiral,
    spiral_curve,
    two_moons,
)
from pyrogen.metrics import mode_coverage

MNIST_DIR = Path(__file__).parents[1].parent / "shared" / "data" / "mnist"

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_range_and_dtypes() -> None:
    train_x, train_y = load_digits("train").tensors
    test_x, test_y = load_digits("test").tensors
    all_x, all_y = load_digits("all").tensors
    assert train_x.shape == (1500, 64) and test_x.shape == (297, 64)
    assert all_x.shape == (1797, 64) and len(train_x) + len(test_x) == 1797
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    for x in (train_x, test_x, all_x):
        assert x.min() >= 0 and x.max() <= 1
    assert all_x.max() == 1  # raw maximum 16 maps to exactly 1
    assert set(all_y.tolist()) == set(range(10))


def test_digits_match_sklearn_through_split_indices() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    sk = sk_load_digits()
    train_idx, test_idx = digits_split_indices()
    train_x, train_y = load_digits("train", dtype=torch.float64).tensors
    test_x, test_y = load_digits("test", dtype=torch.float64).tensors
    np.testing.assert_array_equal(train_x.numpy(), sk.data[train_idx] / 16)
    np.testing.assert_array_equal(train_y.numpy(), sk.target[train_idx])
    np.testing.assert_array_equal(test_x.numpy(), sk.data[test_idx] / 16)
    np.testing.assert_array_equal(test_y.numpy(), sk.target[test_idx])
    all_x, _ = load_digits("all", dtype=torch.float64).tensors
    np.testing.assert_array_equal(all_x.numpy(), sk.data / 16)


def test_digits_split_is_fixed_and_disjoint() -> None:
    train_idx, test_idx = digits_split_indices()
    assert len(train_idx) == 1500 and len(test_idx) == 297
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(1797))
    # Pinned values: the split must never change between versions.
    assert train_idx[:10].tolist() == [1081, 1707, 927, 713, 262, 182, 303, 895, 933, 1266]
    assert test_idx[:10].tolist() == [1400, 1557, 1392, 1794, 129, 189, 136, 1470, 1638, 1278]
    again_train, again_test = digits_split_indices()
    np.testing.assert_array_equal(train_idx, again_train)
    np.testing.assert_array_equal(test_idx, again_test)
    a, b = load_digits("train"), load_digits("train")
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])


def test_digits_results_do_not_alias_cache() -> None:
    x, _ = load_digits("all", dtype=torch.float64).tensors
    x.zero_()
    assert load_digits("all", dtype=torch.float64).tensors[0].max() == 1
    train_idx, _ = digits_split_indices()
    train_idx[:] = 0
    assert digits_split_indices()[0][1] != 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_digits_device_dtype_and_unflattened(device: str, dtype: torch.dtype) -> None:
    x, y = load_digits("test", flatten=False, device=device, dtype=dtype).tensors
    assert x.shape == (297, 1, 8, 8)
    assert x.dtype == dtype and y.dtype == torch.int64
    assert x.device.type == device and y.device.type == device
    flat, _ = load_digits("test").tensors
    torch.testing.assert_close(x.reshape(297, 64).cpu().float(), flat)


def test_digits_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating-point"):
        load_digits(dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# MNIST: real files (skipped when the shared data directory is absent)


def _load_real_mnist(split: str) -> TensorDataset:
    if not any((MNIST_DIR / f"t10k-labels-idx1-ubyte{ext}").is_file() for ext in ("", ".gz")):
        pytest.skip(f"MNIST IDX files not found in {MNIST_DIR}")
    return load_mnist(MNIST_DIR, split=split)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mnist_train() -> TensorDataset:
    return _load_real_mnist("train")


@pytest.fixture(scope="module")
def mnist_test() -> TensorDataset:
    return _load_real_mnist("test")


def test_mnist_train(mnist_train: TensorDataset) -> None:
    x, y = mnist_train.tensors
    assert x.shape == (60000, 784) and x.dtype == torch.float32
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert x.min() == 0 and x.max() == 1
    xd = x.double()
    assert round(xd.mean().item(), 4) == 0.1307
    assert round(xd.std().item(), 4) == 0.3081


def test_mnist_test(mnist_test: TensorDataset) -> None:
    x, y = mnist_test.tensors
    assert x.shape == (10000, 784) and y.shape == (10000,)
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_env_var_looks_in_mnist_subfolder(
    monkeypatch: pytest.MonkeyPatch, mnist_test: TensorDataset
) -> None:
    monkeypatch.setenv("PYROGEN_DATA", str(MNIST_DIR.parent))
    x, y = load_mnist(split="test", flatten=False).tensors
    assert x.shape == (10000, 1, 28, 28)
    assert torch.equal(x.reshape(10000, 784), mnist_test.tensors[0])
    assert torch.equal(y, mnist_test.tensors[1])


# ---------------------------------------------------------------------------------------------
# MNIST: synthetic IDX files


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def write_fake_mnist(
    directory: Path, split: str = "train", n: int = 6, gz: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write a tiny MNIST-format split (28x28 uint8 images) and return its arrays."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        data = idx_bytes(arr)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_synthetic_roundtrip(tmp_path: Path, gz: bool) -> None:
    images, labels = write_fake_mnist(tmp_path, "test", gz=gz)
    x, y = load_mnist(tmp_path, split="test", dtype=torch.float64).tensors
    np.testing.assert_allclose(x.numpy(), images.reshape(6, 784) / 255.0)
    np.testing.assert_array_equal(y.numpy(), labels)
    x4, _ = load_mnist(str(tmp_path), split="test", flatten=False).tensors
    assert x4.shape == (6, 1, 28, 28) and x4.dtype == torch.float32


def test_load_mnist_prefers_uncompressed_when_both_exist(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, gz=True, seed=1)
    _, raw_labels = write_fake_mnist(tmp_path, gz=False, seed=2)
    # Corrupt the .gz copies: reading them would fail, so success proves the raw files were used.
    for p in tmp_path.glob("*.gz"):
        p.write_bytes(b"garbage")
    _, y = load_mnist(tmp_path).tensors
    np.testing.assert_array_equal(y.numpy(), raw_labels)


@pytest.mark.parametrize("device", DEVICES)
def test_load_mnist_device(tmp_path: Path, device: str) -> None:
    write_fake_mnist(tmp_path)
    x, y = load_mnist(tmp_path, device=device).tensors
    assert x.device.type == device and y.device.type == device


def test_load_mnist_root_overrides_env_and_env_direct_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, labels_a = write_fake_mnist(tmp_path / "a", seed=3)
    _, labels_b = write_fake_mnist(tmp_path / "b", seed=4)
    monkeypatch.setenv("PYROGEN_DATA", str(tmp_path / "a"))
    np.testing.assert_array_equal(load_mnist().tensors[1].numpy(), labels_a)
    np.testing.assert_array_equal(load_mnist(tmp_path / "b").tensors[1].numpy(), labels_b)


def test_load_mnist_missing_files_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYROGEN_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path, split="test")
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert str(tmp_path) in msg and str(tmp_path / "mnist") in msg
    assert "root=" in msg and "PYROGEN_DATA" in msg and "download=True" in msg

    monkeypatch.setenv("PYROGEN_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte") as info:
        load_mnist()
    assert str(tmp_path / "env" / "mnist") in str(info.value)

    monkeypatch.delenv("PYROGEN_DATA")
    with pytest.raises(FileNotFoundError, match="PYROGEN_DATA is not set"):
        load_mnist()


def test_load_mnist_only_labels_missing(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte") as info:
        load_mnist(tmp_path)
    assert "train-images" not in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_file(tmp_path: Path, gz: bool) -> None:
    write_fake_mnist(tmp_path, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    full = idx_bytes(np.zeros((6, 28, 28), dtype=np.uint8))
    cut = full[:-100]
    (tmp_path / name).write_bytes(gzip.compress(cut) if gz else cut)
    with pytest.raises(ValueError, match="truncated") as info:
        load_mnist(tmp_path)
    msg = str(info.value)
    assert name in msg
    expected, actual = 6 * 28 * 28, 6 * 28 * 28 - 100
    assert str(expected) in msg and str(actual) in msg


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ValueError, match="gzip") as info:
        load_mnist(tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_corrupt_gzip(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match="corrupt or truncated gzip") as info:
        load_mnist(tmp_path)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)

    # Valid gzip header but damaged compressed body.
    data = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8))))
    data[20:40] = bytes(20)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz"):
        read_idx(path)


def test_wrong_magic_number(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[0] = 0x1F  # first two bytes must be zero
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="magic number 0x1f000803") as info:
        load_mnist(tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_wrong_ndim_and_type(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    # Images and labels swapped: labels file now has 3 dims.
    images = tmp_path / "train-images-idx3-ubyte"
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(images.read_bytes())
    with pytest.raises(ValueError, match="declares 3 dimension.*expected 1") as info:
        load_mnist(tmp_path)
    assert "train-labels-idx1-ubyte" in str(info.value)

    labels.write_bytes(idx_bytes(np.arange(6, dtype=">i4"), type_code=0x0C))
    with pytest.raises(ValueError, match="uint8"):
        load_mnist(tmp_path)

    labels.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)))
    with pytest.raises(ValueError, match="6 images but .* 5 labels"):
        load_mnist(tmp_path)


def test_read_idx_edge_cases(tmp_path: Path) -> None:
    path = tmp_path / "x"
    arr = np.arange(12, dtype=">f4").reshape(3, 4)
    path.write_bytes(idx_bytes(arr, type_code=0x0D))
    out = read_idx(path, ndim=2)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype.isnative and out.flags.writeable

    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="truncated IDX header.*expected 16 bytes, got 6"):
        read_idx(path)
    path.write_bytes(idx_bytes(np.arange(4, dtype=np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes.*needs 4 data bytes, file has 5"):
        read_idx(path)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_download_without_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import torchvision` raise ImportError.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError, match="download=True needs torchvision"):
        load_mnist(tmp_path, download=True)
    # Files already present: no download is attempted, so torchvision is not needed.
    write_fake_mnist(tmp_path)
    assert len(load_mnist(tmp_path, download=True)) == 6


def test_download_uses_torchvision_then_own_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    class FakeMNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append({"root": root, "train": train, "download": download})
            write_fake_mnist(Path(root) / "MNIST" / "raw", "train" if train else "test", gz=True)

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=FakeMNIST)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    x, y = load_mnist(tmp_path, split="test", download=True).tensors
    assert calls == [{"root": str(tmp_path), "train": False, "download": True}]
    assert x.shape == (6, 784) and y.shape == (6,)


def test_load_mnist_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, split="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating-point"):
        load_mnist(tmp_path, dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------
# binarization


def test_binarize_static() -> None:
    x = torch.tensor([0.0, 0.2, 0.5, 0.50001, 1.0])
    out = binarize_static(x)
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0] and out.dtype == torch.float32
    x = torch.rand(100, 64, generator=torch.Generator().manual_seed(0))
    assert set(binarize_static(x, threshold=0.3).unique().tolist()) <= {0.0, 1.0}
    assert binarize_static(torch.tensor([0, 5, 9]), threshold=4).tolist() == [0.0, 1.0, 1.0]


def test_binarize_fixed_is_reproducible() -> None:
    x = torch.rand(50, 64, generator=torch.Generator().manual_seed(0))
    a = binarize_bernoulli_fixed(x, generator=torch.Generator().manual_seed(1))
    b = binarize_bernoulli_fixed(x, generator=torch.Generator().manual_seed(1))
    c = binarize_bernoulli_fixed(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and a.shape == x.shape
    assert binarize_bernoulli_fixed(torch.tensor([0.0, 1.0])).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize_bernoulli_fixed(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="floating point"):
        binarize_bernoulli_fixed(torch.tensor([0, 1]))


def assert_mean_matches(draws: torch.Tensor, p: torch.Tensor) -> None:
    """Mean of ``draws`` (first dim = draws) matches ``p`` within 5 standard errors."""
    n = draws.shape[0]
    se = torch.sqrt(p * (1 - p) / n)
    err = (draws.double().mean(0) - p.double()).abs()
    # The 1e-12 lets p in {0, 1} (zero variance) pass only with an exact match.
    assert bool((err <= 5 * se + 1e-12).all()), float((err / (se + 1e-12)).max())


def test_dynamic_binarized_dataset() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(4, 64, generator=gen, dtype=torch.float64)
    p[0, :2] = torch.tensor([0.0, 1.0])
    labels = torch.tensor([3, 1, 4, 1])
    ds = DynamicBinarized(TensorDataset(p, labels), generator=torch.Generator().manual_seed(1))
    assert len(ds) == 4

    x1, y1 = ds[0]
    x2, y2 = ds[0]
    assert not torch.equal(x1, x2)  # fresh draw on each access
    assert int(y1) == int(y2) == 3
    assert set(x1.unique().tolist()) <= {0.0, 1.0} and x1.shape == (64,)

    n = 2000
    draws = torch.stack([ds[0][0] for _ in range(n)])
    assert_mean_matches(draws, p[0])

    batch_x, batch_y = next(iter(DataLoader(ds, batch_size=4)))
    assert batch_x.shape == (4, 64) and torch.equal(batch_y, labels)


def test_dynamic_binarized_bare_tensor_dataset_and_errors() -> None:
    p = torch.full((3, 5), 0.5)
    ds = DynamicBinarized(p)  # a tensor is indexable with a length
    assert ds[1].shape == (5,)
    with pytest.raises(TypeError, match="DynamicBinarized"):
        DynamicBinarized(["not a tensor"])[0]


@pytest.mark.parametrize("device", DEVICES)
def test_binarize_dynamic_batch(device: str) -> None:
    gen = torch.Generator(device=device).manual_seed(0)
    p = torch.linspace(0, 1, 11, device=device)
    draws = binarize_dynamic(p.expand(4000, 11), generator=gen)
    assert draws.device.type == device and draws.shape == (4000, 11)
    assert_mean_matches(draws.cpu(), p.cpu())
    assert not torch.equal(binarize_dynamic(p.expand(100, 11)), binarize_dynamic(p.expand(100, 11)))


# ---------------------------------------------------------------------------------------------
# toy sets


def residuals_to_nearest(
    samples: torch.Tensor, centers: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    nearest = torch.cdist(samples.double(), centers.double()).argmin(dim=1)
    return samples.double() - centers.double()[nearest], nearest


def assert_std_matches(residuals: torch.Tensor, std: float) -> None:
    # Residual coordinates are i.i.d. N(0, std^2); the RMS estimates std with SE std/sqrt(2N).
    m = residuals.numel()
    rms = residuals.pow(2).mean().sqrt().item()
    assert abs(rms - std) <= 5 * std / math.sqrt(2 * m), (rms, std)


def assert_modes_balanced(nearest: torch.Tensor, num_modes: int) -> None:
    counts = torch.bincount(nearest, minlength=num_modes).double()
    n, p = len(nearest), 1 / num_modes
    assert bool((counts > 0).all())
    assert bool(((counts - n * p).abs() <= 5 * math.sqrt(n * p * (1 - p))).all()), counts


def test_ring() -> None:
    data = ring(20000, generator=torch.Generator().manual_seed(0))
    assert isinstance(data, ToyData)
    assert data.samples.shape == (20000, 2) and data.samples.dtype == torch.float32
    assert data.centers is not None and data.centers.shape == (8, 2) and data.std == 0.01
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    expected = torch.stack([angles.cos(), angles.sin()], dim=1)
    torch.testing.assert_close(data.centers.double(), expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(data.centers.norm(dim=1), torch.ones(8))
    res, nearest = residuals_to_nearest(data.samples, data.centers)
    assert_std_matches(res, 0.01)
    assert_modes_balanced(nearest, 8)


def test_grid() -> None:
    data = grid(20000, generator=torch.Generator().manual_seed(0))
    assert data.samples.shape == (20000, 2) and data.std == 0.05
    assert data.centers is not None and data.centers.shape == (25, 2)
    axis = [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert sorted(map(tuple, data.centers.tolist())) == [(a, b) for a in axis for b in axis]
    res, nearest = residuals_to_nearest(data.samples, data.centers)
    assert_std_matches(res, 0.05)
    assert_modes_balanced(nearest, 25)


def test_mixture_options_and_reproducibility() -> None:
    a = ring(100, num_modes=3, radius=2.0, std=0.1, generator=torch.Generator().manual_seed(5))
    b = ring(100, num_modes=3, radius=2.0, std=0.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.samples, b.samples)
    assert a.centers is not None and torch.allclose(a.centers.norm(dim=1), torch.full((3,), 2.0))
    exact = grid(50, std=0.0, num_per_side=3, spacing=1.0, dtype=torch.float64)
    assert exact.centers is not None and exact.samples.dtype == torch.float64
    assert {tuple(s) for s in exact.samples.tolist()} <= {tuple(c) for c in exact.centers.tolist()}


def test_two_moons() -> None:
    data = two_moons(5000, generator=torch.Generator().manual_seed(0))
    assert data.samples.shape == (5000, 2) and data.centers is None and data.std == 0.05
    clean = two_moons(2000, noise=0.0, generator=torch.Generator().manual_seed(0)).samples.double()
    upper = (clean.norm(dim=1) - 1).abs() < 1e-5
    lower = ((clean - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs() < 1e-5
    assert bool((upper | lower).all())
    assert bool((clean[upper & ~lower, 1] >= -1e-6).all())
    assert bool((clean[lower & ~upper, 1] <= 0.5 + 1e-6).all())
    assert 0.4 < upper.double().mean().item() < 0.6


def test_spiral() -> None:
    data = spiral(5000, generator=torch.Generator().manual_seed(0))
    assert data.samples.shape == (5000, 2) and data.centers is None and data.std == 0.05
    clean = spiral(2000, noise=0.0, generator=torch.Generator().manual_seed(0)).samples.double()
    s = clean.norm(dim=1)
    assert bool((s <= 1 + 1e-6).all())
    # Every point lies on one of the two arms: angle = 2 pi (1.5 s + a / 2) mod 2 pi.
    angle = torch.atan2(clean[:, 1], clean[:, 0])
    gaps = []
    for arm in range(2):
        diff = angle - 2 * math.pi * (1.5 * s + arm / 2)
        gaps.append(torch.remainder(diff + math.pi, 2 * math.pi) - math.pi)
    assert bool((torch.stack(gaps).abs().min(dim=0).values < 1e-4).all())


def test_spiral_curve_points_lie_on_the_arms_with_equal_mass() -> None:
    k = 500
    curve = spiral_curve(k, dtype=torch.float64)
    assert curve.shape == (2 * k, 2) and curve.dtype == torch.float64
    s = curve.norm(dim=1)
    for arm in range(2):  # arm by arm, outwards, at the documented spacing
        phi = 2 * math.pi * (1.5 * s[arm * k : (arm + 1) * k] + arm / 2)
        rebuilt = s[arm * k : (arm + 1) * k, None] * torch.stack([phi.cos(), phi.sin()], -1)
        torch.testing.assert_close(curve[arm * k : (arm + 1) * k], rebuilt)
        gaps = curve[arm * k + 1 : (arm + 1) * k] - curve[arm * k : (arm + 1) * k - 1]
        assert gaps.norm(dim=1).max() <= 0.025
        assert gaps.norm(dim=1)[-1] == pytest.approx(math.pi * 1.5 / k, rel=0.02)
    # Groups of 50 neighbouring points are segments of equal mass: the share of exact spiral
    # draws nearest each is 1/20 within 4 standard errors (binomial).
    n = 100_000
    gen = torch.Generator().manual_seed(1)
    clean = spiral(n, noise=0.0, generator=gen, dtype=torch.float64).samples
    counts = mode_coverage(clean, curve, 0.02).counts.view(20, 50).sum(1).double()
    assert counts.sum() == n
    assert ((counts / n - 0.05).abs() <= 4 * math.sqrt(0.05 * 0.95 / n)).all()
    # Dense enough that the nearest point's distance is the distance to the curve: the share
    # of noisy draws within 3 sigma is the 1-d Gaussian's P(|Z| <= 3) = 0.99730.
    noisy = spiral(n, noise=0.02, generator=gen, dtype=torch.float64).samples
    share = mode_coverage(noisy, curve, 0.02).high_quality
    p = math.erf(3 / math.sqrt(2))
    assert abs(share - p) <= 4 * math.sqrt(p * (1 - p) / n)
    with pytest.raises(ValueError, match="points_per_arm must be at least 1"):
        spiral_curve(0)
    with pytest.raises(ValueError, match="turns must be finite and > 0"):
        spiral_curve(10, turns=0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_toy_device_and_cpu_generator(device: str) -> None:
    for make in (ring, grid, two_moons, spiral):
        out = make(64, generator=torch.Generator().manual_seed(0), device=device)
        ref = make(64, generator=torch.Generator().manual_seed(0))
        assert out.samples.device.type == device
        if out.centers is not None:
            assert out.centers.device.type == device
        # A CPU generator gives the same data on every device.
        torch.testing.assert_close(out.samples.cpu(), ref.samples)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ring(0), "n must be at least 1"),
        (lambda: ring(-5), "n must be at least 1"),
        (lambda: ring(10, std=-0.1), "std must be"),
        (lambda: ring(10, num_modes=0), "num_modes"),
        (lambda: ring(10, radius=0.0), "radius"),
        (lambda: grid(0), "n must be at least 1"),
        (lambda: grid(10, std=-1.0), "std must be"),
        (lambda: grid(10, std=float("nan")), "std must be"),
        (lambda: grid(10, spacing=-2.0), "spacing"),
        (lambda: two_moons(0), "n must be at least 1"),
        (lambda: two_moons(10, noise=-0.1), "noise must be"),
        (lambda: spiral(0), "n must be at least 1"),
        (lambda: spiral(10, noise=-0.1), "noise must be"),
        (lambda: spiral(10, turns=0.0), "turns"),
    ],
)
def test_toy_validation(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_toy_non_integer_n() -> None:
    with pytest.raises(TypeError):
        ring(2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        grid(True)
    assert ring(np.int64(3)).samples.shape == (3, 2)  # type: ignore[arg-type]
