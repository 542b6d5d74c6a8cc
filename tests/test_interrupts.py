"""A signal at any moment of a run, as a user sends it to the process they started:
during an evaluation and in the middle of a checkpoint write (tests/interrupting.py
sends it there; the moments before training are in tests/test_rundirs.py). One line,
exit 128 + the signal, metrics.json `interrupted` with the step, and the last
checkpoint whole (never a partial one in its place, no temporary file left)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import cli_env

HELPER = Path(__file__).with_name("interrupting.py")
RUN = ("dataset=ring8", "train.steps=8", "train.ckpt_every=2", "metrics.every=4", "log.every=2",
       "metrics.n_fake=500", "metrics.n_real=500")


def interrupted(tmp_path: Path, phase: str, nth: int, number: int, times: int):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(HELPER), phase, str(nth), signal.Signals(number).name, str(times),
         "--", *RUN, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=cli_env())
    assert proc.returncode == 128 + number, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ganrun:")]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "interrupted"
    assert not (run_dir / "checkpoints" / ".last.ckpt.tmp").exists()
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["ganrun"]["g_steps"]
    return lines, saved, step, run_dir


def test_a_signal_during_an_evaluation_lets_it_finish_then_saves_and_stops(tmp_path):
    """The evaluation in progress ends (its figures reach metrics.json), the next
    generator step is trained and saved, and the run stops there."""
    lines, saved, step, run_dir = interrupted(tmp_path, "evaluation", 1, signal.SIGTERM, 1)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert lines[0] == f"ganrun: interrupted: SIGTERM at generator step 5; checkpoint saved: {ckpt}"
    assert lines[1].startswith("ganrun: resume with: ganrun ") and len(lines) == 2
    assert saved["g_steps"] == step == 5
    assert saved["metrics"]["fid"] > 0  # the evaluation at step 4, whole


@pytest.mark.parametrize("phase, nth, number", [
    ("evaluation", 1, signal.SIGINT),
    ("checkpoint", 2, signal.SIGTERM),
], ids=["during-an-evaluation", "mid-checkpoint-write"])
def test_a_second_signal_stops_at_once_and_the_last_whole_checkpoint_stands(tmp_path, phase, nth,
                                                                            number):
    """Two signals at step 4 (during its evaluation, or half-way through writing its
    checkpoint): stopped there, at once; step 2's checkpoint is the one on disk, whole."""
    lines, saved, step, run_dir = interrupted(tmp_path, phase, nth, number, 2)
    name = signal.Signals(number).name
    reason = (f"stopped at once by a second {name} at generator step 4; the last checkpoint "
              f"written before it stands: {run_dir / 'checkpoints' / 'last.ckpt'} (generator "
              f"step 2)")
    assert lines == [f"ganrun: interrupted: {reason}"]
    assert saved["g_steps"] == 4 and saved["reason"] == reason
    assert step == 2
