"""Every example runs end to end with --smoke-test."""

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_smoke(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(path), "--smoke-test", "--out", str(tmp_path)])
    runpy.run_path(str(path), run_name="__main__")
    assert any(tmp_path.iterdir())


def test_there_are_examples() -> None:
    assert EXAMPLES
