"""The README's main job, ``pyrogen compare --problem tour``, at tiny budgets: four parts,
one file gathering them, an existing tour refused, --resume reading it back."""

from __future__ import annotations

import argparse

import pytest

from pyrogen.compare import tour
from pyrogen.compare.cli import add_arguments, main


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tour,
        "BUDGETS",
        {
            "digits-vae": 1,
            "eval_samples": 5,
            "grid": 2,
            "rbm-digits": 5,
            "correlated-gaussian": 30,
            "hmc": 150,
            "khat_draws": 100,
        },
    )


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--problem", "tour", "--no-progress", *extra])


def test_the_tour_runs_every_part_and_gathers_them(tiny, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "tour"
    assert main(_args("--out", str(out))) == 0
    text = (out / "tour.md").read_text()
    for folder, heading, _families in tour.PARTS:
        assert heading in text
        assert (out / folder / "results.md").exists()
    for row in ("| ELBO |", "| gan+r1=0.1+ema=0.999 |", "| kale (GEBM", "| pcd-1 |", "| hmc |"):
        assert row in text
    assert "wrote" in capsys.readouterr().out

    assert main(_args("--out", str(out))) == 2  # an existing tour is not replaced silently
    assert "pass --resume" in capsys.readouterr().err
    assert main(_args("--out", str(out), "--resume")) == 0  # read back (the VAE's checkpoints)
    assert (out / "tour.md").read_text().count("## ") >= 4
    assert main(_args("--out", str(out), "--resume", "--overwrite")) == 2
