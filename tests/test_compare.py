"""`pyrogen compare`: objective names, outputs, resume after interruption, checkpoint errors."""

import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

import pyrogen.compare as compare
from pyrogen.checkpoint import CheckpointError
from pyrogen.cli import main
from pyrogen.compare import CompareConfig, parse_objective, run
from pyrogen.inference import IWAE, RenyiBound, VRMax


def test_objective_names() -> None:
    elbo = parse_objective("elbo").make()
    assert isinstance(elbo, RenyiBound) and elbo.alpha == 1.0 and elbo.num_particles == 1
    iwae = parse_objective("iwae").make()
    assert isinstance(iwae, IWAE) and iwae.num_particles == 5
    assert parse_objective("IWAE:50").make().num_particles == 50
    r = parse_objective("renyi:-1").make()
    assert isinstance(r, RenyiBound) and r.alpha == -1.0 and r.num_particles == 5
    assert parse_objective("renyi:0.5:10").make().num_particles == 10
    assert isinstance(parse_objective("vrmax:3").make(), VRMax)
    assert parse_objective("renyi:0.5").key == "renyi_0.5_5"
    for bad, match in [
        ("gan", "unknown objective"),
        ("renyi", "unknown objective"),
        ("renyi:abc", "numeric alpha"),
        ("renyi:inf", "finite alpha"),
        ("iwae:0", "positive integer"),
        ("iwae:x", "positive integer"),
        ("elbo:3", "unknown objective"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_objective(bad)


def _config(tmp_path: Path, **kw: Any) -> CompareConfig:
    base: dict[str, Any] = dict(
        objectives=["elbo", "iwae:3"],
        epochs=4,
        z_dim=4,
        eval_samples=40,
        curve_samples=8,
        curve_points=60,
        out=str(tmp_path),
        progress=False,
    )
    base.update(kw)
    return CompareConfig(**base)


def _numbers(results: list[dict[str, Any]]) -> list[Any]:
    return [
        (
            r["objective"],
            r["test_ll"],
            r["train_bound"],
            r["history"]["train_bound"],
            r["history"]["heldout_ll"],
            r["samples"],
            r["active_units"],
        )
        for r in results
    ]


def interrupt_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> None:
    """Ctrl-C (SIGINT to this process) as the data are read for the ``batches``-th time."""
    real = compare.Data.transform
    calls = {"n": 0}

    def interrupted(self: compare.Data, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == batches:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)

    monkeypatch.setattr(compare.Data, "transform", interrupted)


def forbid_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any objective reads a batch (a finished run must not train again)."""

    def must_not_train(*args: Any) -> Any:
        raise AssertionError("a finished objective was trained again")

    monkeypatch.setattr(compare.Data, "transform", must_not_train)


def test_outputs(tmp_path: Path) -> None:
    results = run(_config(tmp_path, epochs=3))
    for name in ["results.md", "results.csv", "results.json", "curves.png", "samples.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "results.md").read_text()
    assert "| ELBO |" in table and "| IWAE (K=3) |" in table
    payload = json.loads((tmp_path / "results.json").read_text())
    assert [r["objective"] for r in payload["results"]] == ["elbo", "iwae_3"]
    csv_lines = (tmp_path / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("objective,label,test_ll")
    for r in results:
        assert math.isfinite(r["test_ll"]) and math.isfinite(r["test_ll_stderr"])
        assert len(r["history"]["train_bound"]) == 3 and r["seconds_per_epoch"] > 0
        # trained: the held-out estimate improved from the first epoch to the last
        assert r["history"]["heldout_ll"][-1] > r["history"]["heldout_ll"][0]
        # below 0 (binary pixels), and better than coin flips on every pixel once trained
        assert 64 * math.log(0.5) < r["test_ll"] < 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "elbo.pt",
        "iwae_3.pt",
    ]


def test_resumed_run_ends_with_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = run(_config(tmp_path / "straight"))

    interrupt_after(monkeypatch, 4 * 15 + 2 * 15 + 8)  # in the second objective's third epoch
    with pytest.raises(KeyboardInterrupt):
        run(_config(tmp_path / "resumed"))
    monkeypatch.undo()
    saved = torch.load(tmp_path / "resumed" / "checkpoints" / "iwae_3.pt", weights_only=True)
    assert (saved["epoch"], saved["iteration"]) == (2, 2 * 15 + 8)  # saved in mid-epoch
    resumed = run(_config(tmp_path / "resumed", resume=True))
    assert _numbers(resumed) == _numbers(straight)

    # a finished run is not trained again, and a longer --epochs continues it
    short = run(_config(tmp_path / "extended", epochs=2))
    assert _numbers(short) != _numbers(straight)
    extended = run(_config(tmp_path / "extended", epochs=4, resume=True))
    assert _numbers(extended) == _numbers(straight)

    forbid_training(monkeypatch)
    again = run(_config(tmp_path / "extended", epochs=4, resume=True))
    assert _numbers(again) == _numbers(straight)


def test_checkpoint_errors(tmp_path: Path) -> None:
    run(_config(tmp_path, epochs=1, objectives=["elbo"]))
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.001, this run 0.01"):
        run(_config(tmp_path, epochs=2, objectives=["elbo"], lr=1e-2, resume=True))
    run(_config(tmp_path, epochs=2, objectives=["elbo"], resume=True))
    with pytest.raises(CheckpointError, match="2 epochs done, more than --epochs 1"):
        run(_config(tmp_path, epochs=1, objectives=["elbo"], resume=True))
    path = tmp_path / "checkpoints" / "elbo.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        run(_config(tmp_path, epochs=3, objectives=["elbo"], resume=True))
    # a run that exists is refused without --resume or --overwrite (no work lost by a
    # command repeated without its flag); --overwrite replaces the damaged checkpoint
    with pytest.raises(ValueError, match="holds a run of elbo: pass --resume"):
        run(_config(tmp_path, epochs=1, objectives=["elbo"]))
    with pytest.raises(ValueError, match="exclude each other"):
        run(_config(tmp_path, epochs=1, objectives=["elbo"], resume=True, overwrite=True))
    run(_config(tmp_path, epochs=1, objectives=["elbo"], overwrite=True))
    assert torch.load(path, weights_only=True)["iteration"] > 0


def test_model_mismatch_is_reported(tmp_path: Path) -> None:
    run(_config(tmp_path, epochs=1, objectives=["elbo"]))
    path = tmp_path / "checkpoints" / "elbo.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["params"]["model"] = {"vae.encoder$$$net.0.weight": torch.zeros(2, 2)}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="saved from another model") as info:
        run(_config(tmp_path, epochs=2, objectives=["elbo"], resume=True))
    # the file and the parameter as the user wrote it, not Pyro's internal separator
    assert str(path) in str(info.value) and "vae.decoder.net.0.weight" in str(info.value)
    assert "$$$" not in str(info.value)


def test_bad_config(tmp_path: Path) -> None:
    for kw, match in [
        ({"dataset": "cifar"}, "dataset"),
        ({"epochs": 0}, "epochs"),
        ({"objectives": []}, "at least one"),
        ({"objectives": ["iwae", "iwae:5"]}, "repeat"),
        ({"lr": -1.0}, "lr"),
    ]:
        with pytest.raises(ValueError, match=match):
            run(_config(tmp_path, **kw))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "compare",
        "--epochs",
        "1",
        "--objectives",
        "elbo",
        "renyi:-1",
        "--z-dim",
        "3",
        "--eval-samples",
        "20",
        "--curve-points",
        "30",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    assert "| Rényi α=-1 (K=5) |" in (tmp_path / "results.md").read_text()
    # --no-progress hides the bars, not the result
    printed = capsys.readouterr().out
    assert "| Rényi α=-1 (K=5) |" in printed and f"to {tmp_path}" in printed
    assert main(["compare", "--objectives", "gan", "--out", str(tmp_path)]) == 2
    assert "unknown objective 'gan'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "cifar"])
    # a user's mistakes are one line and exit code 2: an existing run, a file as --out,
    # a device this machine lacks
    assert main(args) == 2
    assert "pass --resume to continue it or --overwrite" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main([*args[:-2], str(tmp_path / "file"), "--no-progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["compare", "--device", "tpu", "--out", str(tmp_path / "x")]) == 2
    assert "not a torch device" in capsys.readouterr().err


def test_mnist_loads_when_present(tmp_path: Path, mnist_dir: Path) -> None:
    config = _config(tmp_path, dataset="mnist", data_dir=str(mnist_dir))
    data = compare.Data(config)
    assert data.train.shape == (60000, 784) and data.test.shape == (10000, 784)
    assert set(data.test.unique().tolist()) == {0.0, 1.0}


def test_device_cuda(tmp_path: Path) -> None:
    config = _config(tmp_path, epochs=1, objectives=["iwae:2"], device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            run(config)
        for name, match in [("cuda:7", "CUDA"), ("tpu", "not a torch device"), ("mps", "not")]:
            with pytest.raises(ValueError, match=match):
                run(_config(tmp_path, device=name))
        return
    (r,) = run(config)  # pragma: no cover - GPU machines only
    assert math.isfinite(r["test_ll"])  # pragma: no cover
