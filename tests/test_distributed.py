"""DDP with real processes: 2 CPU processes on gloo, launched by `ganrun` as a user
launches it. One run directory, metrics gathered across processes equal to a
single-process evaluation, resume, SIGTERM, divergence on one process, sweeps of
DDP jobs; and the SLURM layout (composed, and read by Lightning from a simulated
SLURM environment)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import GANRUN, cli_env, compose_cfg
from tbread import scalars

DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
HELPERS = str(Path(__file__).resolve().parent)


def ganrun(*args: str, cwd: Path, timeout: int = 400):
    env = {**cli_env(), "PYTHONPATH": HELPERS}
    return subprocess.run([GANRUN, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def only_run(cwd: Path) -> Path:
    (run_dir,) = (cwd / "outputs" / "runs").iterdir()
    return run_dir


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def single_process_scores(run_dir: Path, n_fake: int) -> dict:
    """The final checkpoint's generator measured in this one process, the way a
    single-process run measures it: the evaluation noise of (seed, step), all samples
    generated here, the evaluator's scores."""
    from ganrun.callbacks.metrics import evaluation_seed
    from ganrun.cli.tools import load_module
    from ganrun.data import load_dataset
    from ganrun.metrics.evaluator import Evaluator
    from ganrun.samples import generate_many

    module, cfg = load_module(run_dir / "checkpoints" / "last.ckpt")
    evaluator = Evaluator(cfg.metrics, load_dataset(cfg.dataset), cfg.dataset)
    torch.manual_seed(evaluation_seed(cfg.seed, module.g_steps))
    return evaluator.evaluate(generate_many(module, n_fake))


@pytest.mark.parametrize("data,resume", [
    (("dataset=ring8", "dataset.batch_size=64"), True),
    # several loggers: each writes once (process 0), not once per process
    (("dataset=digits", "logger=[tensorboard,csv,mlflow]"), False),
    # the stacked mode count reads the images itself: its readings gathered in order too
    (("dataset=stacked_digits", "dataset.n_samples=2000", "metrics.names=[stacked_modes,fid]"),
     False)], ids=["ring8", "digits", "stacked"])
def test_ddp_on_two_cpu_processes_trains_measures_and_resumes(tmp_path, data, resume):
    steps = ("train.steps=24", "log.every=8", "metrics.every=12", "metrics.n_fake=1000",
             "train.ckpt_every=12", "log.sample_every=12")
    proc = ganrun(*DDP, *data, *steps, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    run_dir = only_run(tmp_path)  # the worker made no directory of its own
    saved = read(run_dir)
    assert saved["status"] == "finished" and saved["g_steps"] == 24
    batch = 64
    assert saved["images_seen"] == 24 * 2 * batch  # both processes' batches
    assert "2 processes x dataset.batch_size 64 = global batch 128" in output
    assert len(list((run_dir / "tb").glob("events.out*"))) == 1
    assert [s for s, _ in scalars(run_dir / "tb")["loss/d"]] == [8, 16, 24]
    if "logger=[tensorboard,csv,mlflow]" in data:
        import csv

        from mlflow import MlflowClient

        with open(run_dir / "csv" / "metrics.csv", newline="") as f:
            assert [int(r["step"]) for r in csv.DictReader(f) if r["loss/d"]] == [8, 16, 24]
        client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
        (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
        (mlrun,) = client.search_runs([experiment.experiment_id])
        assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "loss/d")] == [8, 16, 24]
        assert mlrun.info.status == "FINISHED"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [12, 24]
    # The gathered evaluation is the single-process evaluation of the same samples.
    ours = saved["metrics"]
    single = single_process_scores(run_dir, 1000)
    assert set(ours) == set(single) and ours
    for name, value in single.items():
        assert math.isclose(ours[name], value, rel_tol=1e-6, abs_tol=1e-9), name
    # Both processes saved their random streams; resuming with 2 continues to the step.
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)
    ranks = ckpt["ganrun"]["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0], ranks[1])
    if not resume:
        return
    proc = ganrun(*DDP, *data, "train.steps=36", "log.every=6", "metrics=none",
                  f"ckpt_path={run_dir}", "hydra.run.dir=resumed", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resumed = read(tmp_path / "resumed")
    assert resumed["status"] == "finished" and resumed["g_steps"] == 36
    assert [s for s, _ in scalars(tmp_path / "resumed" / "tb")["loss/d"]] == [30, 36]


def _pids_of_children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return {int(p) for p in out.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_sigterm_under_ddp_saves_once_and_every_process_stops(tmp_path):
    env = {**cli_env(), "PYTHONPATH": HELPERS}
    proc = subprocess.Popen([GANRUN, *DDP, "dataset=ring8", "train.steps=100000", "log.every=10",
                             "metrics=none", "train.ckpt_every=100000"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, workers = [], set()
    deadline = time.time() + 240
    for line in proc.stdout:
        seen.append(line)
        workers |= _pids_of_children(proc.pid)
        if "step 20/" in line or time.time() > deadline:
            break
    assert workers, "".join(seen)  # the second process, started by ganrun
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(seen) + rest
    assert proc.returncode == 143, output
    run_dir = only_run(tmp_path)
    saved = read(run_dir)
    assert saved["status"] == "interrupted", saved
    assert saved["reason"].startswith("SIGTERM at generator step ")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)
    assert ckpt["ganrun"]["g_steps"] == saved["g_steps"] >= 20
    assert output.count("checkpoint saved") == 1
    time.sleep(1)
    assert not [pid for pid in workers if _alive(pid)]


def test_a_sweep_of_ddp_jobs_where_one_process_of_one_job_diverges(tmp_path):
    """Job 0's process 1 blows up after step 12: every process of job 0 stops at the
    next check (15); job 1 (poisoned too late to matter) finishes; neither job's
    processes make a directory of their own."""
    proc = ganrun("-m", *DDP, "dataset=ring8", "train.steps=20", "log.every=10",
                  "metrics=none", "train.check_every=5",
                  "+callbacks.poison._target_=ddp_helpers.PoisonOneProcess",
                  "+callbacks.poison.step=12,1000", "+callbacks.poison.rank=1", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output  # a diverged job does not stop the sweep
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]
    diverged, finished = (read(job) for job in jobs)
    assert diverged["status"] == "diverged" and diverged["diverged_at"] == 15
    assert "diverged at generator step 15: process 1: loss/d=nan" in diverged["reason"]
    assert (finished["status"], finished["g_steps"]) == ("finished", 20)
    assert not (tmp_path / "outputs" / "runs").exists()
    assert "Traceback" not in output


# --- many nodes: SLURM ------------------------------------------------------------------


def test_slurm_launcher_makes_one_ddp_job_across_nodes():
    from hydra.core.hydra_config import HydraConfig

    from ganrun.cli.train import _fit_to_launcher

    cfg, _ = compose_cfg("hydra/launcher=slurm_gpu", "hydra.launcher.nodes=2",
                         "hydra.launcher.tasks_per_node=4", "hydra.launcher.partition=gpu")
    launcher = HydraConfig.get().launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    _fit_to_launcher(cfg, launcher)
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 2)


SLURM_TASK_5_OF_8 = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_PROCID": "5",
                     "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_ID": "4242",
                     "SLURM_JOB_NAME": "ganrun", "SLURM_NODELIST": "node[01-02]"}


def test_lightning_reads_world_size_and_ranks_from_slurm(monkeypatch, tmp_path):
    from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only
    from pytorch_lightning.plugins.environments import SLURMEnvironment
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from ganrun.config.schema import validate
    from ganrun.training.launcher import GanrunDDPStrategy, global_rank
    from ganrun.training.run import build

    # Lightning records the rank in these process-wide switches: put them back after.
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    monkeypatch.setattr(utils_rank_zero_only, "rank", utils_rank_zero_only.rank)

    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in SLURM_TASK_5_OF_8.items():
        monkeypatch.setenv(key, value)
    cfg, choices = compose_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4",
                               "trainer.num_nodes=2", "dataset=ring8", "metrics=none")
    cfg = validate(cfg)
    assert global_rank(4) == 5  # before Lightning: who writes the run directory
    _, trainer, _, _ = build(cfg, tmp_path, choices, write=False)
    strategy = trainer.strategy
    assert isinstance(strategy, GanrunDDPStrategy)
    assert isinstance(strategy.cluster_environment, SLURMEnvironment)
    assert strategy.cluster_environment.creates_processes_externally  # srun made them
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (
        8, 5, 1, 1)
    assert strategy.cluster_environment.main_address == "node01"
