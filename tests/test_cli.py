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


def test_every_compare_option_has_help_and_shows_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pyrogen.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    compare = commands.choices["compare"]  # type: ignore[index]
    for action in compare._actions:
        assert action.help, action.option_strings
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "(default: 1)" in text and "(default: compare-results)" in text


def test_threads_must_be_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--threads", "-1", "--out", str(tmp_path)]) == 2
    assert "threads must be 0" in capsys.readouterr().err


def test_ctrl_c_in_compare_is_one_hint_and_exit_130(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No traceback: the checkpoints' folder and the flag that continues from them."""
    import pyrogen.compare.cli as compare_cli

    def interrupted(config: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_cli, "run", interrupted)
    assert main(["compare", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and str(tmp_path / "checkpoints") in err
    assert "Traceback" not in err
