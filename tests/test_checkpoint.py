"""Checkpoints: atomic writes, weights-only loading, clear errors for damaged or foreign files."""

import collections
import errno
from pathlib import Path

import pytest
import torch

import pyrogen.checkpoint as checkpoint
from pyrogen.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _state() -> dict[str, object]:
    return {
        "epoch": 3,
        "model": collections.OrderedDict(w=torch.randn(4, 2)),
        "history": {"loss": [1.0, 0.5]},
        "rng": torch.get_rng_state(),
    }


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run.pt"
    state = _state()
    save_checkpoint(path, "test", state)
    back = load_checkpoint(path, "test")
    assert back["kind"] == "test" and back["epoch"] == 3
    assert torch.equal(back["model"]["w"], state["model"]["w"])  # type: ignore[index]
    assert torch.equal(back["rng"], state["rng"])  # type: ignore[arg-type]
    # nothing but the checkpoint is left in the folder
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]


def test_interrupted_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run.pt"
    save_checkpoint(path, "test", {"epoch": 1})
    real_save = torch.save

    def dies_halfway(obj: object, f: object) -> None:
        real_save(obj, f)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # killed before the rename

    monkeypatch.setattr(checkpoint.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, "test", {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path, "test")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # the temporary file is gone


@pytest.mark.parametrize(
    "where, error",
    [
        ("fsync", OSError(errno.ENOSPC, "No space left on device")),  # a full disk
        ("mkstemp", PermissionError(errno.EACCES, "Permission denied")),  # unwritable folder
    ],
)
def test_a_failed_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, error: OSError
) -> None:
    """Faults injected where the file system reports them: the error names the file and
    says the previous checkpoint is kept, which it is, with no temporary file left."""
    path = tmp_path / "run.pt"
    save_checkpoint(path, "test", {"epoch": 1})

    def fails(*args: object, **kwargs: object) -> None:
        raise error

    target = checkpoint.os if where == "fsync" else checkpoint.tempfile
    monkeypatch.setattr(target, where, fails)
    with pytest.raises(OSError, match="the previous checkpoint is kept") as info:
        save_checkpoint(path, "test", {"epoch": 2})
    monkeypatch.undo()
    assert str(path) in str(info.value) and info.value.errno == error.errno
    assert load_checkpoint(path, "test")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


class Payload:
    """Not allowed by weights_only loading."""


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"kind": "test", "version": checkpoint.FORMAT_VERSION, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path, "test")


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    save_checkpoint(path, "test", _state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path, "test")
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(path, "test")
    # torch's advice to load with weights_only=False (running the file's code) is never
    # passed on; the message names the file and the way out
    assert "weights_only" not in str(info.value) and str(path) in str(info.value)
    assert "--overwrite" in str(info.value)


def test_wrong_kind_version_or_content(tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    save_checkpoint(path, "trainer", {})
    with pytest.raises(CheckpointError, match="'trainer' checkpoint, expected 'test'"):
        load_checkpoint(path, "test")
    torch.save({"kind": "test", "version": 99}, path)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path, "test")
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a pyrogen checkpoint"):
        load_checkpoint(path, "test")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", "test")
