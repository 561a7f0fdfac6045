import subprocess
import sys
from pathlib import Path

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


def test_missing_mnist_names_the_command_line_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's mistake is one error line set (exit 2) that names --data-dir, not only
    the Python argument root=."""
    monkeypatch.delenv("PYROGEN_DATA", raising=False)
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    code = main(
        [
            "compare",
            "--dataset",
            "mnist",
            "--data-dir",
            str(empty),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "Traceback" not in err
