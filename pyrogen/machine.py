"""One line describing the machine and library versions, the settings as a report records
them, and where a report goes, for benchmark and example reports."""

import platform
import tempfile
from pathlib import Path
from typing import Any

import pyro
import torch

__all__ = ["machine", "recorded_settings", "results_folder"]


def machine() -> str:
    """CPU model, torch threads, Python, torch and Pyro versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}, Pyro {pyro.__version__}"
    )


def recorded_settings(settings: dict[str, Any], root: Path) -> dict[str, Any]:
    """``settings`` for a committed report: paths relative to ``root`` (the repository), or
    their last part when outside it, never this machine's absolute paths."""

    def recorded(value: Any) -> Any:
        if not isinstance(value, Path):
            return value
        path = value.resolve()
        return str(path.relative_to(root)) if path.is_relative_to(root) else path.name

    return {k: recorded(v) for k, v in settings.items()}


def results_folder(out: str | Path | None, default: str | Path, smoke_test: bool) -> Path:
    """Where a benchmark writes its report: ``out`` when given, else a fresh temporary
    folder for a smoke test (which must never write over the committed results), else
    ``default``."""
    if out is not None:
        return Path(out)
    return Path(tempfile.mkdtemp(prefix="pyrogen-smoke-")) if smoke_test else Path(default)
