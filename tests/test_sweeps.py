"""Sweeps a user can leave running: parallel jobs, failures, search, report."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from ganrun.analysis.report import report

from conftest import GANRUN, cli_env, compose_cfg


def ganrun(*args, cwd, timeout=900):
    return subprocess.run([GANRUN, *args], cwd=cwd, capture_output=True, text=True,
                          env=cli_env(), timeout=timeout)


def only_sweep(cwd):
    (sweep,) = (cwd / "outputs" / "multiruns").iterdir()
    return sweep


def config_of(job, shared=("train.steps=",)):
    """A job's overrides as ganrun-report groups them: without the seed, and without
    what every job of the sweep shares (`shared`)."""
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return ",".join(sorted(o for o in overrides if not o.startswith(("seed=", *shared))))


def statuses(sweep):
    return {p.name: json.loads((p / "metrics.json").read_text())
            for p in sweep.iterdir() if (p / "metrics.json").is_file()}


def test_parallel_sweep_over_seeds_and_its_report(tmp_path):
    proc = ganrun("-m", "loss=bce,hinge", "optim=adam,sgd", "seed=0,1", "train.steps=30",
                  "hydra/launcher=joblib", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep(tmp_path)
    jobs = statuses(sweep)
    assert len(jobs) == 8 and all(j["status"] == "finished" for j in jobs.values())
    assert all(j["g_steps"] == 30 for j in jobs.values())
    printed = subprocess.run([GANRUN + "-report", str(sweep)], capture_output=True, text=True,
                             env=cli_env())
    assert printed.returncode == 0, printed.stderr
    configs, every_job = printed.stdout.split("Every job:")
    rows = [line for line in configs.splitlines() if line.startswith("| `")]
    assert len(rows) == 4 and all(" | 2 | 0 | 0 | " in row for row in rows)
    assert every_job.count(" | finished | 30 |") == 8
    # Jobs named by what the sweep varies, the seed among it; the report groups the
    # jobs by their overrides (.hydra/overrides.yaml) without the seed.
    assert sorted(jobs, key=lambda name: int(name.split("_")[0]))[:2] == [
        "0_loss=bce,optim=adam,seed=0", "1_loss=bce,optim=adam,seed=1"]
    # The report's numbers, recomputed from the jobs' own metrics.json.
    table, names, _ = report(sweep, "fid")
    for row in table:
        fids = [j["metrics"]["fid"] for name, j in jobs.items()
                if config_of(sweep / name) == row["config"]]
        assert len(fids) == 2
        mean = sum(fids) / 2
        assert row["fid"][0] == pytest.approx(mean)
        assert row["fid"][1] == pytest.approx((sum((f - mean) ** 2 for f in fids)) ** 0.5)
    assert [r["fid"][0] for r in table] == sorted(r["fid"][0] for r in table)


def test_a_diverging_job_does_not_stop_the_sweep(tmp_path):
    proc = ganrun("-m", "optim=sgd", "optim.lr_d=1e6,0.01", "train.steps=30", "metrics=none",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep(tmp_path)
    jobs = statuses(sweep)
    by_lr = {name.split("optim.lr_d=")[1].split(",")[0]: j for name, j in jobs.items()}
    # Hydra writes 1e6 as 1000000.0 in the job's overrides (and so in its name).
    assert by_lr["1000000.0"]["status"] == "diverged" and "nan" in by_lr["1000000.0"]["reason"]
    assert by_lr["0.01"]["status"] == "finished" and by_lr["0.01"]["g_steps"] == 30
    rows, _, _ = report(sweep, "loss/g")
    diverged = next(r for r in rows if "1000000.0" in r["config"])
    assert (diverged["diverged"], diverged["finished"]) == (1, 0)
    assert "diverged at generator step" in (sweep / "report.md").read_text()


def test_optuna_search_reports_the_best_learning_rates(tmp_path):
    proc = ganrun("hparams_search=optuna_fid", "hydra.sweeper.n_trials=4", "train.steps=20",
                  "metrics.n_fake=300", "metrics.n_real=300", "metrics.kid_subsets=5",
                  "metrics.kid_subset_size=100", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "setup plugin" not in proc.stdout + proc.stderr  # alembic's, via Optuna: quieted
    sweep = only_sweep(tmp_path)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    fids = [j["metrics"]["fid"] for j in statuses(sweep).values()]
    assert len(fids) == 4
    assert results["best_value"] == pytest.approx(min(fids))
    assert set(results["best_params"]) == {"optim.lr_g", "optim.lr_d"}
    # Each job named by the values searched, to 4 significant digits (its config has them
    # exactly), without the options every trial shares (train.steps=20, ...).
    assert (sweep / "multirun.yaml").is_file()
    for job in (p for p in sweep.iterdir() if p.is_dir()):
        optim = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["optim"]
        assert job.name.split("_", 1)[1] == \
            f"optim.lr_d={optim['lr_d']:.4g},optim.lr_g={optim['lr_g']:.4g}"
        assert len(repr(optim["lr_g"])) > 10  # the exact value, not the name's


def test_a_wrong_objective_stops_before_training(tmp_path):
    proc = ganrun("hparams_search=optuna_fid", "optimized_metric=fdi", "hydra.sweeper.n_trials=2",
                  cwd=tmp_path)
    assert proc.returncode != 0
    assert "optimized_metric=fdi is not logged by this run; valid: loss/d" in proc.stderr
    assert "float-castable" not in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


def test_slurm_preset_asks_for_one_gpu_per_job():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    compose_cfg()  # registers the resolvers, clears Hydra
    GlobalHydra.instance().clear()
    with initialize_config_module("ganrun.configs", version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm_gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert "submitit" in launcher._target_ and launcher.gpus_per_node == 1
    assert launcher.tasks_per_node == 1 and launcher.timeout_min == 240


def test_two_diverged_and_one_killed_job_leave_the_other_three_finished(tmp_path):
    """6 jobs: lr_d 1e6 and 2e6 diverge under SGD; job 2 gets SIGTERM (as from SLURM or
    `kill <pid>`) while it trains, saves and says interrupted; the sweep goes on."""
    import os
    import signal
    import time

    proc = subprocess.Popen(
        [GANRUN, "-m", "optim=sgd", "optim.lr_d=0.01,0.02,0.03,1e6,2e6,0.04", "train.steps=200",
         "metrics=none", "log.every=10", "log.sample_every=1000", "train.ckpt_every=20"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            # Job 2 is training once its first checkpoint (step 20) is there.
            if list(tmp_path.glob("outputs/multiruns/*/2_*/checkpoints/last.ckpt")):
                target = list(tmp_path.glob("outputs/multiruns/*/2_*/metrics.json"))
                break
            time.sleep(0.05)
        else:
            pytest.fail("job 2 never started")
        os.kill(json.loads(target[0].read_text())["pid"], signal.SIGTERM)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "ganrun: interrupted: SIGTERM at generator step" in err
    sweep = only_sweep(tmp_path)
    jobs = {name.split("_")[0]: job for name, job in statuses(sweep).items()}
    assert {n: j["status"] for n, j in jobs.items()} == {
        "0": "finished", "1": "finished", "2": "interrupted", "3": "diverged", "4": "diverged",
        "5": "finished"}
    assert 20 <= jobs["2"]["g_steps"] < 200 and "checkpoint saved" in jobs["2"]["reason"]
    kept = next(sweep.glob("2_*")) / "checkpoints" / "last.ckpt"
    import torch

    assert torch.load(kept, weights_only=False)["ganrun"]["g_steps"] == jobs["2"]["g_steps"]
    printed = subprocess.run([GANRUN + "-report", str(sweep), "--metric", "loss/g"],
                             capture_output=True, text=True, env=cli_env())
    assert printed.returncode == 0, printed.stderr
    every_job = printed.stdout.split("Every job:")[1]
    listed = {line.split("`")[1].split("_")[0]: line.split(" | ")[2]
              for line in every_job.splitlines() if line.startswith("| `")}
    assert listed == {n: j["status"] for n, j in jobs.items()}
