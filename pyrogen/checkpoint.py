"""Checkpoints that survive interruption and load without arbitrary pickles.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (what
``torch.load(weights_only=True)`` accepts), tagged with a ``kind`` and a format ``version``.
It is written to a temporary file in the same folder, flushed to disk, then renamed over the
old one (``os.replace`` is atomic on POSIX and Windows), so a run killed at any moment
leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["FORMAT_VERSION", "CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is unreadable, of another kind or version, or from another run."""


def save_checkpoint(path: str | os.PathLike[str], kind: str, state: dict[str, Any]) -> None:
    """Write ``state`` atomically to ``path``, tagged with ``kind``."""
    path = Path(path)
    payload = {"kind": kind, "version": FORMAT_VERSION, **state}
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, an unwritable folder: say so, keep the old file
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = "the previous checkpoint is kept" if path.exists() else "none was written before"
        raise OSError(
            exc.errno, f"cannot write checkpoint {path} ({exc.strerror or exc}); {kept}"
        ) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with the same ``kind``.

    Loads with ``weights_only=True`` onto the CPU (move tensors where they belong).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is corrupt, not a pyrogen checkpoint, of another kind or of
            an unknown format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        # torch's own message advises weights_only=False, which would run any code in the
        # file: never repeat it; name the file and what can be done instead
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}): it is truncated, corrupt, "
            "or holds objects other than tensors and plain containers, which pyrogen never "
            "unpickles; delete it (or pass --overwrite) to start that run afresh"
        ) from exc
    if not isinstance(payload, dict) or "kind" not in payload:
        raise CheckpointError(f"{path} is not a pyrogen checkpoint (no 'kind' tag)")
    if payload["kind"] != kind:
        raise CheckpointError(f"{path} is a {payload['kind']!r} checkpoint, expected {kind!r}")
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {payload.get('version')!r}; this pyrogen reads "
            f"version {FORMAT_VERSION}"
        )
    return dict(payload)
