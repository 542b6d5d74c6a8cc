"""Messages that point at the cause: the key that is wrong, what differs from a
checkpoint, the valid keys (or that there are none), and only fixes that fit the data.
Run as a user runs them: the console entry point, one line, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import GANRUN, cli_env


def one_line(*args: str, cwd: Path) -> str:
    proc = subprocess.run([GANRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=cli_env())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("args,expected", [
    (["loss=hinge", "+loss.margin=1"],
     "ganrun: error: loss.margin: unknown key for loss=hinge; it has no keys of its own"),
    (["loss=hinge", "loss.margin=1"],  # without +: once "valid keys: " and nothing after it
     "ganrun: error: loss.margin: not a key of loss; loss=hinge has no keys of its own"),
    (["dataset=ring8", "metrics.extractor=classifier"],
     "ganrun: error: metrics.extractor=classifier needs images; dataset=ring8 is 2-D points "
     "(use raw or auto)"),
    (["dataset=ring8", "dataset.n_samples=100", "metrics=none"],
     "ganrun: error: dataset=ring8 has 100 samples, fewer than one training step needs "
     "(dataset.batch_size=256 x optim.n_critic=1 = 256); lower dataset.batch_size or raise "
     "dataset.n_samples"),
    (["dataset=ring8", "hydra.run.dir=runs/lr=0.1"],  # Hydra's own error names the "=" alone
     "ganrun: error: cannot read the override hydra.run.dir=runs/lr=0.1: Hydra's grammar "
     "refuses a character in it (an '=' or a space in a value, say); quote the value "
     "('key=\"...\"') or escape it with \\"),
], ids=["no-keys-of-its-own", "no-keys-without-plus", "classifier-on-points", "too-few-samples", "unreadable-override"])
def test_the_message_names_the_cause_and_a_fix_that_fits(tmp_path, args, expected):
    assert one_line(*args, cwd=tmp_path) == expected


@pytest.mark.parametrize("change,expected", [
    ("regularizer=[spectral_norm]", "made with regularizer=[], this run has "
                                    "regularizer=[spectral_norm]; resume with the regularizers "
                                    "that made it"),
    ("optim=sgd", "made with optim=adam, this run has optim=sgd; an optimizer's state cannot "
                  "pass to another: resume with optim=adam"),
    ("loss=wgan_gp", "made with loss=nsgan and regularizer=[], this run has loss=wgan_gp and "
                     "regularizer=[gradient_penalty]; resume with the loss and regularizers "
                     "that made it"),  # the loss brought the penalty: the loss is named
], ids=["regularizers", "optimizer", "loss-with-its-penalty"])
def test_resuming_with_other_parts_names_what_differs(train_fast, tmp_path, change, expected):
    _, run_dir = train_fast("dataset=ring8")
    line = one_line("dataset=ring8", "metrics=none", f"ckpt_path={run_dir}", change, cwd=tmp_path)
    assert line == f"ganrun: error: ckpt_path={run_dir}: {expected}"


def test_resuming_a_run_past_its_steps_names_train_steps(train_fast, tmp_path):
    """train.steps below the checkpoint's step cannot be met (it 'finished' at once, a copy
    of a finished run in a new directory): refused, naming both steps. Equal steps stay a
    run with nothing to train (a sweep resumed whose job had finished)."""
    import json

    _, run_dir = train_fast("dataset=ring8")
    reached = json.loads((run_dir / "metrics.json").read_text())["g_steps"]
    line = one_line("dataset=ring8", "metrics=none", f"ckpt_path={run_dir}",
                    f"train.steps={reached - 1}", cwd=tmp_path)
    assert line == (f"ganrun: error: train.steps={reached - 1}: ckpt_path={run_dir} is already "
                    f"at generator step {reached}, past it; give train.steps={reached} or more "
                    "(ganrun-eval and ganrun-sample read a run as it is)")


@pytest.mark.parametrize("arg,expected", [
    ("trainer.devices=0", "trainer.devices=0: must be a count >= 1, -1 (every device), auto, or "
                          "a list of distinct device indices ([0, 1])"),
    ("trainer.devices=[0,0]", "trainer.devices=[0, 0]: must be a count >= 1"),
    ("trainer.strategy=fsdpx", "trainer.strategy: 'fsdpx' is not supported; valid: auto, ddp"),
    ("trainer.accelerator=tpux", "trainer.accelerator: 'tpux' is not supported; valid: auto, "
                                 "cpu, gpu, cuda, mps"),
    ("trainer.precision=16-mixed", "trainer.precision=16-mixed is float16 autocast, which needs "
                                   "a GPU; on a CPU use 32-true (or auto), bf16-mixed"),
], ids=["devices-0", "devices-repeated", "strategy", "accelerator", "float16-on-a-cpu"])
def test_lightnings_choices_are_refused_first_in_ganruns_words(tmp_path, arg, expected):
    """Values Lightning would refuse with its own exception (a traceback) are refused by
    ganrun before anything is built."""
    line = one_line("dataset=ring8", "metrics=none", "trainer.accelerator=cpu", arg, cwd=tmp_path)
    assert line.startswith(f"ganrun: error: {expected}"), line
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.json"))
