"""The toy-mixture figures: panels in the asked order, tilted draws beside their run, the
W1-vs-MMD figure only for runs with a W1 estimate, titled with their Spearman correlation."""

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pyrogen.data import grid, ring  # noqa: E402
from pyrogen.metrics import mode_coverage  # noqa: E402
from pyrogen.metrics.correlation import spearman  # noqa: E402
from pyrogen.metrics.plots import plot_mode_samples, plot_wasserstein_mmd  # noqa: E402


def run(dataset: str, objective: str, tilted: bool = False) -> dict[str, Any]:
    data = (ring if dataset == "ring" else grid)(200, generator=torch.Generator().manual_seed(0))
    assert data.std is not None
    cov = mode_coverage(data.samples, data.centers, data.std)
    out: dict[str, Any] = {
        "dataset": dataset,
        "objective": objective,
        "iterations": 10,
        "samples": data.samples.tolist(),
        "centers": data.centers,
        "modes": cov.modes,
        "num_modes": data.centers.shape[0],
        "high_quality": cov.high_quality,
        "tilted": None,
        "curve": {"iteration": [0, 5, 10], "wasserstein": [math.nan] * 3, "mmd": [1, 2, 3]},
    }
    if tilted:
        out["tilted"] = {
            **{k: out[k] for k in ("modes", "high_quality")},
            "samples": out["samples"],
        }
    return out


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the functions make, kept open for inspection."""
    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)
    return kept


def titles(fig: Any) -> list[str]:
    return [ax.get_title().split(" (")[0].split(" on ")[0] for ax in fig.axes if ax.axison]


def test_mode_samples_panels_follow_the_asked_order(tmp_path: Path, figures: list[Any]) -> None:
    runs = [run("grid", "wgan"), run("grid", "gan", tilted=True), run("ring", "gan")]
    path = tmp_path / "samples.png"
    plot_mode_samples(runs, path, objectives=("gan", "wgan"), datasets=("ring", "grid"))
    assert path.stat().st_size > 0
    (fig,) = figures
    axes = fig.axes
    assert len(axes) == 2 * 3  # rows ring, grid; columns gan, gan + tilt, wgan
    assert [a.axison for a in axes] == [True, False, False, True, True, True]
    assert titles(fig) == ["gan", "gan", "gan + tilt", "wgan"]
    assert "ring" in axes[0].get_title() and "grid" in axes[3].get_title()
    assert axes[0].get_xlim() == (-1.5, 1.5) and axes[3].get_xlim() == (-5.5, 5.5)


def test_mode_samples_default_order_is_first_appearance(tmp_path: Path, figures: list[Any]) -> None:
    plot_mode_samples([run("grid", "hinge"), run("grid", "gan")], tmp_path / "s.png")
    assert titles(figures[0]) == ["hinge", "gan"]
    with pytest.raises(ValueError, match="no runs"):
        plot_mode_samples([], tmp_path / "none.png")


def test_wasserstein_mmd_only_for_runs_with_an_estimate(tmp_path: Path, figures: list[Any]) -> None:
    assert not plot_wasserstein_mmd([run("grid", "gan")], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists() and not figures
    w1 = {"iteration": [0, 1, 2, 3, 4], "wasserstein": [5.0, 0.3, 0.2, 0.25, 0.1]}
    mmd = [9.0, 0.5, 0.1, 0.05, 0.2]
    wgan = run("grid", "wgan") | {"curve": w1 | {"mmd": mmd}}
    path = tmp_path / "w1.png"
    assert plot_wasserstein_mmd([run("grid", "gan"), wgan], path, skip=1)
    assert path.stat().st_size > 0
    (fig,) = figures
    title = fig.axes[0].get_title()
    assert title == f"wgan on grid: Spearman {spearman(w1['wasserstein'][1:], mmd[1:]):.2f}"
    assert title.endswith("0.20")  # without skipping the first evaluation: 0.60
