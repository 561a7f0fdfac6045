"""Benchmark scripts keep running: each one's --smoke-test, in a temporary folder."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_renyi_speed_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "renyi_speed.py"),
            "--smoke-test",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "renyi_speed.json").read_text())
    assert "pyrogen-module" in json.dumps(result)
    assert (tmp_path / "renyi_speed.md").read_text().count("| pyrogen-module |") >= 1
