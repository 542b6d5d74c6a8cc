"""Crashes that lose minutes, not runs: a DDP process killed outright (process 0
saves the last completed step and says so in one line), checkpoints by wall time,
and the heartbeat in metrics.json that shows a run killed outright as `died` in
ganrun-report, with a resume command that works. Real processes, real signals."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_distributed import DDP, HELPERS, _alive, _pids_of_children, only_run, read

from conftest import GANRUN, cli_env

FAST_2D = ("dataset=ring8", "metrics=none", "log.sample_every=100000")


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([GANRUN, *args], cwd=cwd, env={**cli_env(), "PYTHONPATH": HELPERS},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(proc: subprocess.Popen, text: str, timeout: float = 240) -> list[str]:
    """The output lines up to the first that holds `text`."""
    seen, deadline = [], time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if text in line or time.time() > deadline:
            break
    assert text in seen[-1], "".join(seen)
    return seen


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_a_killed_ddp_process_costs_one_step_not_the_run(tmp_path):
    proc = start(*DDP, *FAST_2D, "train.steps=100000", "log.every=10", cwd=tmp_path)
    seen = read_until(proc, "step 20/")
    (worker,) = _pids_of_children(proc.pid)  # process 1, started by ganrun
    killed = time.time()
    subprocess.run(["kill", "-9", str(worker)], check=True)
    rest, _ = proc.communicate(timeout=60)
    took = time.time() - killed
    assert proc.returncode == 1, "".join(seen) + rest
    assert took < 30
    # One line on the console, naming the process, the step and the resume command.
    (line,) = rest.strip().splitlines()
    run_dir = only_run(tmp_path)
    saved = read(run_dir)
    step = saved["g_steps"]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert line == (f"ganrun: failed: process 1 died (SIGKILL) at generator step {step}; process "
                    "0 saved that step (all but process 1's random state); resume with: "
                    f"ganrun {' '.join(DDP)} {' '.join(FAST_2D)} train.steps=100000 "
                    f"log.every=10 ckpt_path={ckpt}")
    assert saved["status"] == "failed" and step >= 20
    assert saved["reason"].startswith(f"process 1 died (SIGKILL) at generator step {step}; ")
    # The collective's traceback is in ganrun.log only, and the line ends it.
    log = (run_dir / "ganrun.log").read_text()
    assert "Traceback" in log and "Traceback" not in rest
    assert log.rstrip().endswith(line)
    # The checkpoint of the last completed step, saved by process 0 alone.
    state = load_ckpt(ckpt)
    assert state["ganrun"]["g_steps"] == step and "rng_ranks" not in state["ganrun"]
    # Nothing of the step in progress: G and D (n_critic 1) stepped `step` times each.
    adam_steps = {int(s["step"]) for opt in state["optimizer_states"] for s in opt["state"].values()}
    assert adam_steps == {step}
    assert not [pid for pid in _pids_of_children(proc.pid) | {worker} if _alive(pid)]
    # The printed command resumes it, to the budget given.
    command = shlex.split(line.split("resume with: ", 1)[1])
    command = [a.replace("train.steps=100000", f"train.steps={step + 10}") for a in command]
    resumed = subprocess.run([GANRUN, *command[1:], "hydra.run.dir=resumed"], cwd=tmp_path,
                             env=cli_env(), capture_output=True, text=True, timeout=240)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert "dataloader is not resumable" not in output  # ganrun restores the data order
    assert (read(tmp_path / "resumed")["status"], read(tmp_path / "resumed")["g_steps"]) == (
        "finished", step + 10)


def test_checkpoints_by_wall_time_before_ckpt_every(train_fast, monkeypatch):
    import ganrun.callbacks.checkpoint as checkpoint

    steps = []
    original = checkpoint.save_checkpoint

    def recorded(trainer):
        original(trainer)
        path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        steps.append(load_ckpt(path)["ganrun"]["g_steps"])

    monkeypatch.setattr(checkpoint, "save_checkpoint", recorded)
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(checkpoint, "time", SimpleNamespace(monotonic=lambda: clock.now))
    take = checkpoint.AtomicCheckpoint.on_train_batch_start

    def ten_minutes_in_step_3(self, trainer, module, batch, batch_idx):
        if module.g_steps == 2:
            clock.now += 600.0
        take(self, trainer, module, batch, batch_idx)

    monkeypatch.setattr(checkpoint.AtomicCheckpoint, "on_train_batch_start", ten_minutes_in_step_3)
    result, _ = train_fast("train.steps=6", "train.ckpt_every=1000")  # ckpt_minutes: 10
    assert result["status"] == "finished"
    assert steps == [3, 6]  # after the step that passed 10 minutes, and at the end


def test_ckpt_minutes_must_be_positive(train_fast):
    from ganrun.errors import UserError

    with pytest.raises(UserError, match="train.ckpt_minutes"):
        train_fast("train.ckpt_minutes=0")


def test_a_run_killed_outright_shows_its_last_step_and_dies_in_the_report(tmp_path):
    budget = "train.steps=100000"
    proc = start(*FAST_2D, budget, "log.every=10", "train.ckpt_every=10", cwd=tmp_path)
    read_until(proc, "step 30/")
    proc.kill()
    proc.wait()
    run_dir = only_run(tmp_path)
    saved = read(run_dir)
    assert saved["status"] == "running" and saved["pid"] == proc.pid
    assert saved["g_steps"] >= 30 and saved["g_steps"] % 10 == 0  # the last logged step
    assert set(saved["losses"]) >= {"loss/d", "loss/g"}
    report = subprocess.run([GANRUN.replace("ganrun", "ganrun-report"), str(run_dir.parent)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 1  # nothing finished, nothing to rank; the jobs are listed
    assert "ganrun-report: error: no job finished, nothing to rank (1 jobs: died)" in report.stderr
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    hint = next(line for line in report.stdout.splitlines() if line.startswith("- "))
    assert hint.startswith(f"- `{run_dir.name}`: died: pid {proc.pid} is gone, last logged "
                           f"generator step {saved['g_steps']}; resume with: `ganrun ")
    assert f"| `{run_dir.name}` | 0 | died | {saved['g_steps']} |" in report.stdout
    command = shlex.split(hint.split("resume with: `", 1)[1].rstrip("`"))
    assert command[-1] == f"ckpt_path={ckpt}"
    start_step = load_ckpt(ckpt)["ganrun"]["g_steps"]
    command = [a.replace(budget, f"train.steps={start_step + 10}") for a in command]
    resumed = subprocess.run([GANRUN, *command[1:], "hydra.run.dir=resumed"], cwd=tmp_path,
                             env=cli_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["g_steps"] == \
        start_step + 10
