"""One line describing the machine and library versions, for benchmark and example reports."""

import platform
from pathlib import Path

import pyro
import torch

__all__ = ["machine"]


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
