"""The `ganrun` command: errors, single runs and sweeps, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import GANRUN, REPO, cli_env
from tbread import hparams, scalars


def ganrun(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    return subprocess.run([GANRUN, *args], cwd=cwd, capture_output=True, text=True,
                          env=env or cli_env(), timeout=timeout)


@pytest.mark.parametrize("override,expected", [
    ("loss=nope", ["loss=nope: no such loss option", "bce", "nsgan", "wgan_gp", "lsgan", "hinge"]),
    ("optim.lr_d=abc", ["optim.lr_d", "'abc'", "float"]),
    ("optim.lrr=1", ["optim.lrr: not a key of optim", "lr_g, lr_d"]),
    ("+optim.lrr=1", ["optim.lrr: unknown key for optim=adam", "lr_g, lr_d"]),
    ("optim.lr_g=-1", ["optim.lr_g=-1: must be finite and > 0"]),
    ("model=dcgan dataset.image_size=24", ["dataset.image_size=24", "model=dcgan", "8, 16, 32, 64"]),
    ("loss=hinge regularizer=[label_smoothing]", ["label_smoothing", "loss=hinge"]),
])
def test_bad_overrides_stop_before_training_and_name_the_key(tmp_path, override, expected):
    proc = ganrun(*override.split(), cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for text in expected:
        assert text in output, output
    assert "Traceback" not in output
    # Nothing trained: no checkpoint, no events.
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("events.out*"))


@pytest.mark.parametrize("overrides, message", [
    (["regularizer=[spectral_norm]", "regularizer.spectral_norm.n_power_iterations=0"],
     "regularizer.spectral_norm.n_power_iterations=0: must be an integer >= 1"),
    (["optim.betas=[0.5,1.0]"], "optim.betas[1]=1: must be finite and in [0, 1)"),
    (["optim.lr_g=nan"], "optim.lr_g=nan: must be finite and > 0"),
    (["seed=-1"], "seed=-1: must be an integer in [0, 4294967295]"),
    (["dataset=ring8", "dataset.std=-0.1"], "dataset.std=-0.1: must be finite and > 0"),
    (["model.leaky_slope=nan"], "model.leaky_slope=nan: must be finite and in [0, 1)"),
    (["logger=csv", "logger.csv.flush_every=0"], "logger.csv.flush_every=0: must be an integer >= 1"),
    (["callbacks.health.delta=-1"], "callbacks.health.delta=-1: must be finite and > 0"),
    (["trainer.num_nodes=0"], "trainer.num_nodes=0: must be an integer >= 1"),
    (["sample.truncation=0"], "sample.truncation=0: must be finite and > 0"),
    pytest.param(["trainer=gpu"], "trainer.accelerator=gpu but torch sees no GPU here "
                 "(torch.cuda.is_available() is False); on CPUs use trainer=cpu "
                 "(or trainer=default: auto)",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
])
def test_a_value_out_of_range_is_one_line_and_leaves_no_run(tmp_path, overrides, message):
    """ganrun.ranges through the console script (tests/test_ranges.py: every key)."""
    proc = ganrun(*overrides, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"ganrun: error: {message}"]
    assert not any((tmp_path / "outputs" / "runs").iterdir())  # no run directory left


def test_full_error_shows_the_traceback(tmp_path):
    env = {**cli_env(), "HYDRA_FULL_ERROR": "1"}
    proc = ganrun("+optim.lrr=1", cwd=tmp_path, env=env)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_single_run_outputs_and_metrics(tmp_path):
    proc = ganrun("train.steps=30", "log.every=10", "log.sample_every=15", "metrics.every=15",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    console = proc.stdout + proc.stderr
    assert "GPU available" in console and "TPU available" not in console  # noise filtered
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "finished" and saved["g_steps"] == 30
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "step_0000015.png", "step_0000030.png", "strip.png", "strip_panels"]
    logged = scalars(run_dir / "tb")
    assert [s for s, _ in logged["loss/g"]] == [10, 20, 30]
    assert "step 30/30" in proc.stdout + proc.stderr
    # The default metrics on digits, at the configured interval, in TensorBoard and the log.
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [15, 30]
    for name in ("fid", "is", "kid", "precision", "recall", "classes_covered"):
        assert [s for s, _ in logged[f"metrics/{name}"]] == [15, 30]
        assert logged[f"metrics/{name}"][-1][1] == pytest.approx(lines[-1]["metrics"][name],
                                                                 rel=1e-6)
    assert lines[-1]["extractor"].startswith("digits-") and lines[-1]["n_fake"] == 2000
    assert saved["metrics"] == lines[-1]["metrics"]


def test_multirun_names_jobs_by_overrides_and_logs_their_hparams(tmp_path):
    proc = ganrun("-m", "loss=bce,hinge", "optim=adam,sgd", "train.steps=20", "seed=7",
                  "log.every=10", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    # Sorted key=value pairs of what the sweep varies; what every job shares (seed=7,
    # train.steps=20, log.every=10) is in .hydra/overrides.yaml, not in the name.
    assert jobs == ["0_loss=bce,optim=adam", "1_loss=bce,optim=sgd", "2_loss=hinge,optim=adam",
                    "3_loss=hinge,optim=sgd"]
    seen = set()
    for job in jobs:
        values, metrics = hparams(sweep / job / "tb")
        seen.add((values["loss"], values["optim"]))
        assert values["seed"] == 7 and values["train.steps"] == 20
        assert [s for s, _ in scalars(sweep / job / "tb")["loss/d"]] == [10, 20]
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "finished"
    assert seen == {("bce", "adam"), ("bce", "sgd"), ("hinge", "adam"), ("hinge", "sgd")}


def test_sweep_dir_names_are_safe_for_paths():
    from ganrun.cli.train import safe_name

    assert safe_name("dataset.root=/data/imgs,loss=bce") == "dataset.root=_data_imgs,loss=bce"
    long = ",".join(f"k{i}=v{i}" for i in range(60))
    name = safe_name(long)
    assert len(name) <= 120 and name != safe_name(long + ",x=1")


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    proc = ganrun("-m", "optim.lr_d=-1,0.0002", "train.steps=5", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    statuses = {p.name: json.loads((p / "metrics.json").read_text())["status"]
                for p in sweep.iterdir() if (p / "metrics.json").exists()}
    assert statuses == {"0_optim.lr_d=-1": "failed", "1_optim.lr_d=0.0002": "finished"}


def test_help_lists_groups_quickly(tmp_path):
    proc = ganrun("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for group in ("dataset", "loss", "optim", "regularizer", "model"):
        assert f"\n  {group}\n" in proc.stdout


def test_non_editable_wheel_finds_its_configs_from_any_directory(tmp_path):
    """`pip install .` (a real wheel, not the editable checkout) ships every module of
    ganrun/, its sub-packages, and ganrun.configs; nothing else. Built from a copy of the
    sources: setuptools adds whatever a stale build/ holds (an older layout's modules)."""
    import shutil
    import zipfile

    source, wheel_dir, target = tmp_path / "source", tmp_path / "wheel", tmp_path / "site"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "outputs", "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheel_dir), str(source)], check=True, capture_output=True)
    (wheel,) = wheel_dir.glob("ganrun-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist()
               if name.endswith(".py") and not name.startswith("ganrun/configs/")}
    assert shipped == {path.relative_to(REPO).as_posix()
                       for folder in ("ganrun", "hydra_plugins") for path in (REPO / folder).rglob("*.py")}
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    env = {**cli_env(), "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import ganrun.configs as c; print(c.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(target))
    # hydra/launcher=fleet: Hydra finds the installed plugin in its namespace
    found = subprocess.run(
        [sys.executable, "-c", "from hydra.core.plugins import Plugins; "
         "from hydra.plugins.launcher import Launcher; "
         "print([c.__module__ for c in Plugins.instance().discover(Launcher)])"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert "hydra_plugins.ganrun_fleet" in found.stdout, found.stdout
    assert (target / "ganrun" / "configs" / "loss" / "wgan_gp.yaml").is_file()
    info = ganrun("--info", "searchpath", cwd=tmp_path, env=env)
    assert "pkg://ganrun.configs" in info.stdout
    proc = ganrun("train.steps=5", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["g_steps"] == 5


def test_a_diverged_single_run_exits_1_with_one_line(tmp_path):
    proc = ganrun("optim=sgd", "optim.lr_d=1e6", "train.steps=100", "metrics=none", cwd=tmp_path)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ganrun:")]
    assert errors == ["ganrun: diverged: diverged at generator step 10: loss/d=nan, loss/g=nan, "
                      "D/real=nan, D/fake=nan (finite at step 0)"]
    assert "Traceback" not in proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "diverged"


def test_sigterm_exits_143_and_names_the_checkpoint_to_resume_from(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([GANRUN, "train.steps=100000", "train.ckpt_every=50", "metrics=none"],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("outputs/runs/*/checkpoints/last.ckpt")):
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "interrupted" and saved["g_steps"] >= 50
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert f"ganrun: interrupted: SIGTERM at generator step {saved['g_steps']}; checkpoint " \
           f"saved: {ckpt}" in err
    # The command to type, with the run's own options (not a placeholder for them).
    assert (f"ganrun: resume with: ganrun train.steps=100000 train.ckpt_every=50 metrics=none "
            f"ckpt_path={ckpt}") in err
    assert "Received SIGTERM" not in err  # Lightning's line: ganrun says what it does
