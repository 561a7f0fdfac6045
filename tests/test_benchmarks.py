"""Benchmark scripts keep running: each one's --smoke-test, in a temporary folder."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RENYI_METHODS = [
    "hand",
    "pyro",
    "pyrogen-svi",
    "pyrogen-svi-fused",
    "pyrogen-module",
    "pyrogen-recorded",
    "pyrogen-svi-recorded",
]
COMPILED_METHODS = ["pyrogen-recorded-inductor", "pyrogen-svi-recorded-inductor", "hand-compiled"]


def _run(script: str, *args: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke-test", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_renyi_speed_smoke(tmp_path: Path) -> None:
    _run("renyi_speed.py", "--out", str(tmp_path), "--name", "speed", "--steady-allocator")
    report = json.loads((tmp_path / "speed.json").read_text())
    result = report["results"]
    # every method ran for both K, trained its networks, and computed a finite ratio
    assert {(r["method"], r["K"]) for r in result} == {
        (m, k) for m in RENYI_METHODS + COMPILED_METHODS for k in [1, 5]
    }
    for r in result:
        assert r["max_param_change"] > 0 and r["ratio_to_hand"]["median"] > 0, r["method"]
        assert r["minor_faults_per_step"] >= 0, r["method"]
    assert isinstance(report["config"]["steady_allocator"], bool)
    assert "page faults / step" in (tmp_path / "speed.md").read_text()


def test_vae_mnist_smoke(tmp_path: Path) -> None:
    _run("vae_mnist.py", "--work", str(tmp_path / "runs"), "--out", str(tmp_path), "--no-progress")
    summary = json.loads((tmp_path / "vae_mnist.json").read_text())
    assert [r["objective"] for r in summary["results"]] == ["elbo", "iwae_5", "vrmax_5"]
    for r in summary["results"]:
        assert r["epochs"] == 2 and r["peak_rss_gib"] > 0 and r["test_ll"] < 0
    assert "| ELBO |" in (tmp_path / "vae_mnist.md").read_text()
    assert (tmp_path / "vae_mnist_curves.png").stat().st_size > 0


def test_mcmc_logistic_smoke(tmp_path: Path) -> None:
    _run("mcmc_logistic.py", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "mcmc_logistic.json").read_text())
    names = [r["name"] for r in summary["rows"]]
    assert any(n.startswith("pyrogen") for n in names) and any(
        n.startswith("Pyro NUTS") for n in names
    )
    for r in summary["rows"]:
        assert r["min_ess"] > 0 and r["wall"] > 0, r["name"]
    for target in ("model", "potential"):  # every compile setting, and a fresh first run
        for how in ("", ", trace", ", inductor", ", inductor, first run"):
            assert f"pyrogen HMC-ChEES, 8 chains x 20, {target}{how}" in names
    assert summary["throughput"][0]["chain_transitions_per_s"] > 0
    assert "## Matched ratios" in (tmp_path / "mcmc_logistic.md").read_text()


def test_chees_efficiency_smoke(tmp_path: Path) -> None:
    _run("chees_efficiency.py", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "chees_efficiency.json").read_text())
    rows = {r["name"]: r["runs"] for r in summary["rows"]}
    pyrogen = [n for n in rows if n.startswith("pyrogen")]
    assert len(pyrogen) == 5  # three settings on the potential, two on the model
    assert any(n.startswith("BlackJAX") for n in rows) == summary["blackjax"]
    for name, runs in rows.items():
        for r in runs:
            # every run counted its gradients: warm-up and sampling, and scored them
            assert r["grads_per_chain"] > r["sampling_grads_per_chain"] > 0, name
            assert r["min_ess"] > 0 and r["ess_per_1k_grads"] > 0, name
    assert "| ESS / 1k gradients |" in (tmp_path / "chees_efficiency.md").read_text()


def test_gpu_smoke_on_cpu(tmp_path: Path) -> None:
    """The GPU script's sections run end to end (on the CPU, tiny sizes); its test section,
    a pytest inside pytest, is left to the GPU machine."""
    sections = ["training", "memory", "throughput", "logistic"]
    _run(
        "gpu.py", "--device", "cpu", "--seeds", "0", "--out", str(tmp_path), "--sections", *sections
    )
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert "errors" not in report, report.get("errors")
    assert [t["batch_size"] for t in report["training_steps"]] == [128, 1024]
    # every method of renyi_speed, at K = 1 and 5 and batch 128 and 1024
    cells = [(m["method"], m["K"], m["batch_size"]) for m in report["step_memory"]]
    expected = [(m, k, b) for m in RENYI_METHODS for k in (1, 5) for b in (128, 1024)]
    assert sorted(cells) == sorted(expected)
    assert len(report["likelihood_memory"]) == 2
    assert all(t["chain_transitions_per_s"] > 0 for t in report["throughput"])
    assert {(r["target"], r["full_mass"]) for r in report["logistic"]} == {
        (t, m) for t in ("model", "potential") for m in (False, True)
    }
    assert "## Bayesian logistic regression" in (tmp_path / "gpu.md").read_text()


def test_posteriors_smoke(tmp_path: Path) -> None:
    _run("posteriors.py", "--out", str(tmp_path))
    payload = json.loads((tmp_path / "posteriors.json").read_text())
    assert [r["problem"] for r in payload["problems"]] == ["eight-schools", "logistic"]
    for result in payload["problems"]:
        fits = {s["fit"] for s in result["summary"]}
        assert fits == {"mean-field", "renyi:0.5", "iwae", "full-rank", "avb", "hmc"}
        # every guide with a density has its k-hat; AVB's implicit guide and HMC have none
        for s in result["summary"]:
            assert (s["khat"] is None) == (s["fit"] in ("avb", "hmc")), s["fit"]
    assert (tmp_path / "posteriors_eight_schools.png").stat().st_size > 0


def test_rbm_mnist_smoke(tmp_path: Path) -> None:
    _run("rbm_mnist.py", "--work", str(tmp_path / "runs"), "--out", str(tmp_path), "--no-progress")
    summary = json.loads((tmp_path / "rbm_mnist.json").read_text())
    assert [r["method"] for r in summary["results"]] == ["cd1", "cd10", "pcd1"]
    for r in summary["results"]:
        s = r["score"]
        assert r["epochs_done"] == 2 and s["test_ll"] < 0
        # 2 hidden units: the short AIS must agree with the exact log Z
        assert abs(s["log_z"] - s["exact_log_z"]) < 0.05, s
    assert (tmp_path / "runs" / "pcd1" / "checkpoint.pt").exists()
    assert "| PCD-1 |" in (tmp_path / "rbm_mnist.md").read_text()
    assert (tmp_path / "rbm_mnist.png").stat().st_size > 0


def test_gan_modes_smoke(tmp_path: Path) -> None:
    _run("gan_modes.py", "--work", str(tmp_path / "runs"), "--out", str(tmp_path))
    summary = json.loads((tmp_path / "gan_modes.json").read_text())
    cells = {(r["dataset"], r["objective"], r["iterations"]) for r in summary["rows"]}
    objectives = ("gan", "gan + critic tilt", "hinge", "pacgan2", "wgan", "wgan-gp")
    smoke_iters = {"wgan": 5, "wgan-gp": 5}
    assert cells == {
        (d, o, smoke_iters.get(o, 20)) for d in ("grid", "ring") for o in objectives
    } | {("ring", "pacgan2", 40)}  # the --longer cell
    for r in summary["rows"]:
        assert r["seeds"] == 2 and 0 <= r["high_quality"] <= 100
    assert {(c["dataset"], c["objective"]) for c in summary["wasserstein_curves"]} == {
        (d, o) for d in ("grid", "ring") for o in ("wgan", "wgan-gp")
    }
    for c in summary["wasserstein_curves"]:
        assert -1 <= c["spearman_w1_mmd"] <= 1 and c["evaluations"] == 5
    text = (tmp_path / "gan_modes.md").read_text()
    assert "PacGAN Table 1" in text and "Claim (c)" in text
    assert (tmp_path / "gan_modes_samples.png").stat().st_size > 0
    assert (tmp_path / "gan_modes_wasserstein_mmd.png").stat().st_size > 0


def test_avb_toy_smoke(tmp_path: Path) -> None:
    _run("avb_toy.py", "--work", str(tmp_path / "runs"), "--out", str(tmp_path))
    result = json.loads((tmp_path / "avb_toy.json").read_text())
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    for r in result["runs"]:
        for kind in ("avb", "vae"):
            assert r[kind]["expected_log_likelihood"] < 0, (r["seed"], kind)
    assert (tmp_path / "avb_toy.md").read_text().startswith("# AVB on the four-point toy")


def test_avb_eight_schools_smoke(tmp_path: Path) -> None:
    _run("avb_eight_schools.py", "--out", str(tmp_path), "--figure", str(tmp_path))
    result = json.loads((tmp_path / "avb_eight_schools.json").read_text())
    assert set(result["fits"]) == {
        "mean-field",
        "full-rank",
        "avb-ac seed 0",
        "avb-ac seed 1",
        "avb-ac seed 2",
    }
    for fit in result["fits"].values():
        assert set(fit["mean_error"]) == {"mu", "tau"} | {f"theta_{j}" for j in range(1, 9)}
    assert (tmp_path / "avb_eight_schools.png").stat().st_size > 0


def test_avb_mnist_smoke(tmp_path: Path) -> None:
    _run("avb_mnist.py", "--work", str(tmp_path / "runs"), "--out", str(tmp_path))
    result = json.loads((tmp_path / "avb_mnist.json").read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert len(rows) == 7
    for name, r in rows.items():
        assert r["ais"] < 0 and r["images"] == 20, name
        assert ("is" in r) is name.startswith(("elbo", "iwae")), name
    assert "AVB + AC - ELBO" in (tmp_path / "avb_mnist.md").read_text()


def test_nonbroadcasting_smoke(tmp_path: Path) -> None:
    _run("nonbroadcasting.py", "--out", str(tmp_path))
    result = json.loads((tmp_path / "nonbroadcasting.json").read_text())
    assert result["paths"]["mcmc"] == {"X @ w": "vmap", "(X * w).sum(-1)": "plate"}
    assert result["paths"]["iwae"] == {"(X * w).sum(-1), plate": "plate", "X @ w, vmap": "vmap"}
    assert all(r["calls_per_s"] > 0 for r in result["mcmc"] + result["iwae"])


def test_distributed_smoke(tmp_path: Path) -> None:
    _run("distributed.py", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "distributed.json").read_text())
    rows = {r["setting"]: r for r in summary["rows"]}
    assert rows["2 processes x batch B"]["processes"] == 2
    assert all(r["steps_per_s"] > 0 for r in rows.values())
    assert summary["load_average_before"] and "torch" in summary["machine"]


def test_kale_smoke(tmp_path: Path) -> None:
    work = tmp_path / "runs"
    _run(
        "kale.py",
        "--work",
        str(work),
        "--out",
        str(tmp_path),
        "--betas",
        "1,3",
        "--datasets",
        "grid,ring,spiral",
    )
    summary = json.loads((tmp_path / "kale.json").read_text())
    cells = {(r["dataset"], r["model"]) for r in summary["rows"]}
    models = ("held-out data (ceiling)", "KALE base generator", "GEBM", "GEBM, beta 3")
    models += ("GEBM by resampling",)  # the model without a chain's error
    assert cells == {(d, m) for d in ("grid", "ring", "spiral") for m in models}
    for r in summary["rows"]:
        assert r["seeds"] == 2 and 0 <= r["high_quality"] <= 100
        assert r["sample_seconds_per_1000"] >= 0
        assert r["num_modes"] == {"grid": 25, "ring": 8, "spiral": 20}[r["dataset"]]
        if r["model"].startswith("GEBM"):  # the spiral has no goal
            assert (r["goal_runs"] is None) == (r["dataset"] == "spiral")
        if r["model"] == "GEBM by resampling":
            assert 0 < r["ess"] <= 400_000
    ceiling = {r["dataset"]: r for r in summary["rows"] if r["model"].startswith("held-out")}
    assert all(r["high_quality"] > 95 for r in ceiling.values())  # a second draw of the data
    quoted = {(q["dataset"], q["objective"]) for q in summary["gan_rows"]}
    assert {("grid", "gan + critic tilt"), ("ring", "pacgan2")} <= quoted  # and the spiral's
    assert "| GEBM |" in (tmp_path / "kale.md").read_text()
    assert (tmp_path / "kale_samples.png").stat().st_size > 0
    assert len(list(work.glob("*.json"))) == 6  # one per run, to resume
    # the networks of each run, after the joint phase and at the end, to sample again
    assert len(list(work.glob("*.joint.pt"))) == 6 and len(list(work.glob("*.pt"))) == 12


def test_kale_energy_only_phases_start_from_one_saved_joint_phase(tmp_path: Path) -> None:
    work, args = tmp_path / "runs", ("--datasets", "ring")  # seeds 0 and 1

    def scores(*extra: str) -> dict[str, Any]:
        _run("kale.py", "--work", str(work), "--out", str(tmp_path), *args, *extra)
        row = json.loads(next(work.glob("ring-0-*.json")).read_text())
        out = {k: {m: v for m, v in row[k].items() if m != "seconds"} for k in ("base", "gebm")}
        return out | {"kale": row["kale"]}  # all but the clocks

    fresh = scores()
    joint = work / "ring-0-4.joint.pt"
    stamp = joint.stat().st_mtime_ns
    for run in work.glob("ring-*.json"):
        run.unlink()
    # the same settings again from the saved joint phase: the same numbers, the joint phase's
    # random state included, and the joint phase not trained again
    assert scores() == fresh and joint.stat().st_mtime_ns == stamp
    for run in work.glob("ring-*.json"):
        run.unlink()
    other = scores("--refine-penalty", "0.5")  # another energy-only phase on the same joint one
    assert other["base"] == fresh["base"] and other["gebm"] != fresh["gebm"]
    assert joint.stat().st_mtime_ns == stamp
    # a run saved before the GEBM by resampling was scored gets it from its saved networks
    path = next(work.glob("ring-0-*.json"))
    run = json.loads(path.read_text())
    resampled = run.pop("gebm_sir")
    path.write_text(json.dumps(run))
    _run("kale.py", "--work", str(work), "--out", str(tmp_path), *args, "--refine-penalty", "0.5")
    assert json.loads(path.read_text())["gebm_sir"] | {"seconds": 0} == resampled | {"seconds": 0}


def test_self_contrastive_cost_smoke(tmp_path: Path) -> None:
    _run("self_contrastive_cost.py", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "self_contrastive_cost.json").read_text())["rows"]
    assert [r["objective"] for r in rows] == [
        "elbo",
        "sc_nce_k1",
        "sc_bound_k1",
        "sc_nce_alpha-1_k5",
    ]
    assert rows[0]["ratio_median"] == 1.0 and all(r["median_ms"] > 0 for r in rows)


def test_kale_mnist_smoke(tmp_path: Path) -> None:
    _run("kale_mnist.py", "--out", str(tmp_path))
    report = json.loads((tmp_path / "kale_mnist.json").read_text())
    assert [r["model"] for r in report["rows"]] == [
        "KALE base generator",
        "GEBM (KALE)",
        "GAN (recommended recipe)",
    ]
    for r in report["rows"]:
        assert r["fid"] >= 0 and 0 <= r["modes"] <= 10 and r["iterations"] == 4
    assert (tmp_path / "kale_mnist_samples.png").stat().st_size > 0
    assert "| GEBM (KALE) |" in (tmp_path / "kale_mnist.md").read_text()
