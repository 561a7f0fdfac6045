"""The generative half of the harness: every family of every problem runs end to end and
gives its row; the RBM's scores agree with its exact log Z; budgets, resume, the command and
bad input."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from pyrogen.compare.cli import add_arguments, main
from pyrogen.compare.generative import (
    GENERATIVE_PROBLEMS,
    GenerativeBudget,
    MixtureProblem,
    RBMDigitsProblem,
    run_generative,
)
from pyrogen.inference.gan import ADVERSARIAL

TINY = GenerativeBudget(iterations=3, batch_size=32)


def tiny_ring() -> MixtureProblem:
    return MixtureProblem("ring", hidden=8, critic_hidden=8, num_scored=64, gebm_steps=3)


@pytest.mark.parametrize("family", [*ADVERSARIAL, "gan+r1=0.1+r2=0.1+ema=0.9", "kale"])
def test_every_mixture_family_gives_its_row(family: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_generative(tiny_ring(), [family], TINY, tmp_path, progress=False)
    rows = result.rows
    assert len(rows) == (2 if family == "kale" else 1)
    for row in rows:
        assert row["iterations"] == 3 and row["seconds"] > 0
        assert row["gradient_evaluations"] >= 6  # at least one critic and one generator step
        assert 0 <= row["high_quality_%"] <= 100 and math.isfinite(row["mmd2"])
        assert len(row["samples"]) == 64
    assert {p.name for p in result.files} == {
        "results.md",
        "results.csv",
        "results.json",
        "samples.png",
    }
    assert family.split("+")[0] in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("family", ["cd-1", "cd-3", "pcd-1", "nce"])
def test_every_rbm_family_is_scored_against_the_exact_log_partition(family: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """16 hidden units: log Z by enumeration; AIS (100 runs, 2,001 temperatures) agrees
    with it within its own 3-s.e. spread, and the test log-likelihoods differ by the gap."""
    budget = GenerativeBudget(iterations=60, batch_size=100)
    (row,) = run_generative("rbm-digits", [family], budget, tmp_path, progress=False).rows
    saved = json.loads((tmp_path / "results.json").read_text())["rows"][0]
    assert saved["log_z_ais"] == pytest.approx(row["log_z_ais"])
    gap = row["log_z_ais"] - row["log_z"]
    assert row["test_ll"] - row["test_ll_ais"] == pytest.approx(gap, abs=1e-6)
    assert abs(gap) < 0.5  # AIS's spread on this small RBM is a few hundredths of a nat
    assert -64 * math.log(2) < row["test_ll"] < 0  # better than uniform pixels, below 0
    assert (row["learned_log_z"] is not None) == (family == "nce")
    assert row["gibbs_steps_per_update"] == (0 if family == "nce" else int(family[-1]))


def test_a_finished_family_is_read_not_run_again(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    problem = tiny_ring()
    first = run_generative(problem, ["hinge"], TINY, tmp_path, progress=False)

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("trained again")

    monkeypatch.setattr(problem, "fit", refuse)
    again = run_generative(problem, ["hinge"], TINY, tmp_path, progress=False)
    assert again.rows == first.rows
    other_budget = GenerativeBudget(iterations=4, batch_size=32)
    with pytest.raises(AssertionError, match="trained again"):
        run_generative(problem, ["hinge"], other_budget, tmp_path, progress=False)


def test_a_seconds_budget_stops_at_the_first_chunk_past_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    budget = GenerativeBudget(iterations=10_000, seconds=1e-3, batch_size=32)
    (row,) = run_generative(tiny_ring(), ["gan"], budget, tmp_path, progress=False).rows
    assert row["iterations"] == 50  # one chunk
    assert "cut at 0.001 s" in (tmp_path / "results.md").read_text()


def test_a_budget_in_gradient_evaluations_pays_for_every_roles_updates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """120 evaluations: the GAN (1 critic + 1 generator update) runs 60 iterations, WGAN-GP
    (5 + 1) 20; KALE's schedule (100 energy updates at its first iteration) buys it one;
    rows state what they spent, never above the budget."""
    budget = GenerativeBudget(batch_size=32, gradient_evaluations=120)
    result = run_generative(
        tiny_ring(), ["gan", "wgan-gp", "kale"], budget, tmp_path, progress=False
    )
    spent = {r["family"]: (r["iterations"], r["gradient_evaluations"]) for r in result.rows}
    assert spent["gan"] == (60, 120) and spent["wgan-gp"] == (20, 120)
    iterations, evaluations = spent["kale (base generator)"]
    assert iterations >= 1 and evaluations <= 120
    assert "120 gradient evaluations per family" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="less than one iteration"):
        run_generative(
            tiny_ring(),
            ["wgan"],
            GenerativeBudget(gradient_evaluations=5),
            tmp_path,
            progress=False,
        )
    with pytest.raises(ValueError, match="gradient_evaluations must be a positive int"):
        run_generative(tiny_ring(), ["gan"], GenerativeBudget(gradient_evaluations=0), tmp_path)


def test_bad_input_is_refused_with_the_choices(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="unknown generative problem 'moons'"):
        run_generative("moons", ["gan"], TINY, tmp_path)
    with pytest.raises(ValueError, match="unknown adversarial objective 'gam'"):
        run_generative(tiny_ring(), ["gam"], TINY, tmp_path)
    with pytest.raises(ValueError, match="families: cd-K, pcd-K, nce"):
        run_generative(RBMDigitsProblem(), ["cd-0"], TINY, tmp_path)
    with pytest.raises(ValueError, match="iterations must be at least 1"):
        run_generative(tiny_ring(), ["gan"], GenerativeBudget(iterations=0), tmp_path)
    with pytest.raises(ValueError, match="seconds must be positive"):
        run_generative(tiny_ring(), ["gan"], GenerativeBudget(seconds=-1.0), tmp_path)
    assert set(GENERATIVE_PROBLEMS) == {"ring", "grid", "rbm-digits"}


def test_the_command_runs_a_generative_problem(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "rbm"
    args = parser.parse_args(
        ["--problem", "rbm-digits", "--families", "cd-1", "--iterations", "20", "--out", str(out)]
        + ["--no-progress"]
    )
    assert main(args) == 0
    assert "| cd-1 |" in capsys.readouterr().out
    assert (out / "results.md").exists()
    bad = parser.parse_args(["--problem", "grid", "--families", "gan+r9=1", "--out", str(out)])
    assert main(bad) == 2
    assert "options are +r1=GAMMA" in capsys.readouterr().err
