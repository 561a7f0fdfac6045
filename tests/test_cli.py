import subprocess
import sys

import pytest

import pyrogen
from pyrogen.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyrogen {pyrogen.__version__}"


def test_help_lists_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: pyrogen" in capsys.readouterr().out


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pyrogen.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "Rényi" in out.stdout
