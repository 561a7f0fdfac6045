"""Self-contrastive NCE in `pyrogen compare`: the names, a tiny digits run whose noise is
switched by the trainer, and resume with the noise copy in the checkpoint."""

import importlib
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from test_compare import _config as compare_config
from test_compare import forbid_training, interrupt_after

from pyrogen.compare import CompareConfig, parse_objective, run
from pyrogen.compare.cli import list_text
from pyrogen.inference import SelfContrastive

# the module, not the function `run` that pyrogen.compare exports under the same name
run_module = importlib.import_module("pyrogen.compare.run")

EPOCHS = 6  # the noise is switched after epoch 5: one switch after the initial copy
BATCHES = 15  # batches of 100 per pass over the digits' training rows


def test_sc_names() -> None:
    for name, key, nu, k in [
        ("sc", "sc_1_1", 1.0, 1),
        ("SC:2", "sc_2_1", 2.0, 1),
        ("sc:0.5:4", "sc_0.5_4", 0.5, 4),
    ]:
        spec = parse_objective(name)
        assert (spec.key, spec.contrastive, spec.implicit) == (key, True, False)
        objective = spec.make()
        assert isinstance(objective, SelfContrastive)
        assert (objective.nu, objective.num_particles, objective.refresh_every) == (nu, k, 5)
        assert objective.bound == "iwae"
        assert objective.noise_model is None  # the first copy is taken by the first update
    assert parse_objective("sc:0.5:4").label == "Self-contrastive ν=0.5 (K=4)"
    assert not parse_objective("elbo").contrastive
    for bad, match in [
        ("sc:0", r"NU \(noise samples per data point\) must be a positive, finite number"),
        ("sc:-1", "positive, finite"),
        ("sc:inf", "positive, finite"),
        ("sc:x", r"NU \(noise samples per data point\) must be a positive number, got 'x'"),
        ("sc:1:0", r"K \(particles of the bound\) must be a positive integer, got '0'"),
        ("sc:1:1.5", "positive integer"),
        ("sc:1:2:3", r"at most NU and K \(sc\[:NU\[:K\]\]\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_objective(bad)
    with pytest.raises(ValueError, match="repeat"):
        CompareConfig(objectives=["sc", "sc:1:1"]).validate()
    assert "  sc[:NU[:K]] " in list_text()


def _config(tmp_path: Path, **kw: Any) -> CompareConfig:
    """test_compare's tiny digits configuration, with the self-contrastive row."""
    return compare_config(tmp_path, **{"objectives": ["elbo", "sc"], "epochs": EPOCHS, **kw})


def _numbers(results: list[dict[str, Any]]) -> list[Any]:
    """Everything a row reports but its seconds (the histories of the SC rows included)."""
    return [
        (
            {k: v for k, v in r.items() if k not in ("seconds_per_epoch", "history")},
            {k: v for k, v in r["history"].items() if k != "seconds"},
        )
        for r in results
    ]


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_tiny_digits_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SC row beside the ELBO's, from the same initial encoder and decoder (read when
    training starts); the trainer's end-of-epoch hook switches the noise after epoch 5 to
    the VAE as it is then, and that copy is the checkpoint's; the finished rows read back
    from their checkpoints without training."""
    start: dict[str, dict[str, torch.Tensor]] = {}
    copies: list[dict[str, torch.Tensor]] = []  # the VAE's weights at each refresh
    real_fit, real_refresh = run_module._Fit.fit, SelfContrastive.refresh

    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        start[self.meta["objective"]] = _weights(self.model.__self__)
        return real_fit(self, *args, **kwargs)

    def refresh(self: SelfContrastive, model: Any, guide: Any = None) -> None:
        copies.append(_weights(model.__self__))
        real_refresh(self, model, guide)

    monkeypatch.setattr(run_module._Fit, "fit", fit)
    monkeypatch.setattr(SelfContrastive, "refresh", refresh)
    results = run(_config(tmp_path))
    monkeypatch.undo()
    assert [r["objective"] for r in results] == ["elbo", "sc_1_1"]
    elbo, sc = results
    # the same initial weights, encoder and decoder
    assert start["sc_1_1"].keys() == start["elbo"].keys()
    assert any(k.startswith("encoder.") for k in start["elbo"])
    assert any(k.startswith("decoder.") for k in start["elbo"])
    for name, value in start["sc_1_1"].items():
        assert torch.equal(value, start["elbo"][name]), name

    # the noise: the initial VAE at the first update, then the VAE after epoch 5
    assert sc["history"]["noise_refreshes"] == [1, 1, 1, 1, 2, 2]
    assert len(copies) == 2
    assert all(torch.equal(copies[0][k], v) for k, v in start["sc_1_1"].items())
    state = torch.load(tmp_path / "checkpoints" / "sc_1_1.pt", weights_only=True)["objective"]
    assert (state["num_refreshes"], state["refreshed_after"]) == (2, 5)
    (saved,) = state["snapshot"]["modules"]  # the copy of the VAE (model and guide are its)
    assert saved.keys() == copies[1].keys()
    assert all(torch.equal(saved[k], v) for k, v in copies[1].items())
    assert not torch.equal(copies[1]["decoder.net.0.weight"], copies[0]["decoder.net.0.weight"])

    assert sc["contrastive"] and not sc["implicit"] and not elbo["contrastive"]
    assert math.isfinite(sc["test_ll"]) and sc["test_ll"] < 0
    assert math.isfinite(sc["test_ll_stderr"]) and 0 <= sc["active_units"] <= 4
    h = sc["history"]
    assert all(len(h[k]) == EPOCHS for k in ("train_bound", "heldout_ll", "nce_loss"))
    assert all(b < 0 for b in h["train_bound"]) and sc["train_bound"] == h["train_bound"][-1]
    # logistic loss per data point at nu = 1: 2 log 2 for a classifier that cannot tell
    assert all(0 < v < 10 for v in h["nce_loss"])
    assert all(0 <= a <= 1 for a in h["nce_accuracy"])
    table = (tmp_path / "results.md").read_text()
    assert "| Self-contrastive ν=1 (K=1) |" in table
    assert table.count("‡") == 2  # the marked row and the note
    assert "not a bound" in table and "K-particle IWAE bound" in table

    forbid_training(monkeypatch)
    again = run(_config(tmp_path, resume=True))
    assert _numbers(again) == _numbers(results)


def test_interrupted_sc_resumes_to_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted in epoch 6, after the switch: the resumed run rebuilds the noise from the
    checkpoint's copy (the VAE after epoch 5, not the VAE at the interruption) and ends as
    the uninterrupted run, the per-epoch NCE loss and accuracy included."""
    config = dict(objectives=["sc"])
    straight = run(_config(tmp_path / "straight", **config))
    interrupt_after(monkeypatch, 5 * BATCHES + 8)  # in the sixth pass
    with pytest.raises(KeyboardInterrupt):
        run(_config(tmp_path / "resumed", **config))
    monkeypatch.undo()
    saved = torch.load(tmp_path / "resumed" / "checkpoints" / "sc_1_1.pt", weights_only=True)
    assert (saved["epoch"], saved["iteration"]) == (5, 5 * BATCHES + 8)
    assert saved["objective"]["num_refreshes"] == 2
    resumed = run(_config(tmp_path / "resumed", resume=True, **config))
    assert _numbers(resumed) == _numbers(straight)
