"""The command line of a newcomer's first hour: every mistake answered in one line
that names the fix, `~` in paths as typed, a --help that describes each option,
and a progress line with the time left."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from conftest import GANRUN, cli_env, make_image_folder


def ganrun(*args, cwd, env=None, timeout=300):
    return subprocess.run([GANRUN, *args], cwd=cwd, env=env or cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc) -> str:
    """The last stderr line of a refused command: no traceback, a non-zero exit."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args,expected", [
    # a typo in a group's name: the nearest group, not Hydra's "+los=wgan"
    (["los=wgan"], "ganrun: error: los is not a config group or key; did you mean loss? groups: "
                   "callbacks, dataset, debug, experiment, hparams_search, hydra/launcher, "
                   "logger, loss,"),
    # a key of a group that has no such key: its valid keys
    (["optim.lr=0.1"], "ganrun: error: optim.lr: not a key of optim; did you mean optim.lr_g? "
                       "valid keys: lr_g, lr_d,"),
    (["loss=wgann"], "ganrun: error: loss=wgann: no such loss option; did you mean wgan? valid: "
                     "bce, hinge, lsgan, mmd, nsgan, ragan, wgan, wgan_gp"),
    (["regularizer=[spectral_nrom]"], "did you mean spectral_norm?"),
    (["train.steps=abc"], "ganrun: error: train.steps: Value 'abc' of type 'str' could not be "
                          "converted to Integer (expected int)"),
    (["+foo=1"], "ganrun: error: foo: unknown key; valid keys: seed, ckpt_path, train, log, "
                 "sample, metrics, optimized_metric, memory_limit, callbacks, trainer, fleet; config "
                 "groups: "
                 "callbacks, dataset,"),
    (["+train.stepz=1"], "ganrun: error: train.stepz: unknown key; valid keys: steps, ckpt_every,"),
])
def test_typos_name_the_nearest_valid_choice(tmp_path, args, expected):
    line = one_line_error(ganrun(*args, cwd=tmp_path))
    assert line.startswith(expected) or expected in line, line
    assert "study" not in line  # plumbing of the presets, not an option


@pytest.mark.parametrize("args,expected", [
    (["regularizer=ema,spectral_norm"],
     "ganrun: error: regularizer=ema,spectral_norm: a list needs brackets: use "
     "regularizer=[ema,spectral_norm] (or add -m to sweep over ema and spectral_norm)"),
    (["optim.betas=0.5,0.9"], "ganrun: error: optim.betas=0.5,0.9: a list needs brackets: use "
                              "optim.betas=[0.5,0.9] (or add -m to sweep over 0.5 and 0.9)"),
    (["seed=0,1"], "ganrun: error: seed=0,1: one value per key in a single run; add -m to "
                   "sweep over 0 and 1"),
    (["loss=bce,hinge"], "ganrun: error: loss=bce,hinge: one value per key in a single run; add "
                         "-m to sweep over bce and hinge"),
])
def test_a_comma_list_in_a_single_run_names_the_fix(tmp_path, args, expected):
    """Hydra's "Ambiguous value" (its fix lines cut by the one-line message) as one line
    that keeps the fix: brackets for a list group or key, -m for a sweep."""
    assert one_line_error(ganrun(*args, cwd=tmp_path)) == expected


def test_a_comma_list_with_m_is_still_a_sweep(tmp_path):
    proc = ganrun("-m", "regularizer=ema,spectral_norm", "train.steps=1", "log.every=1",
                  "metrics=none", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0_regularizer=ema", "1_regularizer=spectral_norm"], jobs


def test_tilde_in_a_path_is_the_home_folder_as_typed(tmp_path):
    make_image_folder(tmp_path / "home" / "faces", n=12, size=(16, 16))
    env = {**cli_env(), "HOME": str(tmp_path / "home")}
    proc = ganrun("dataset=image_folder", "dataset.root=~/faces", "dataset.image_size=8",
                  "dataset.batch_size=4", "train.steps=2", "metrics=none", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    assert f"root: {tmp_path / 'home' / 'faces'}" in (run / "config.yaml").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("trainer,fix", [("gpu", "on CPUs use trainer=cpu"),
                                         ("ddp", "trainer=ddp trainer.accelerator=cpu "
                                                 "trainer.devices=2")])
def test_a_gpu_asked_for_without_one(tmp_path, trainer, fix):
    line = one_line_error(ganrun(f"trainer={trainer}", "train.steps=2", cwd=tmp_path))
    assert line.startswith("ganrun: error: trainer.accelerator=gpu but torch sees no GPU") and fix \
        in line


def test_an_output_directory_that_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("")
    for args in (["hydra.run.dir=file/run"], ["-m", "hydra.sweep.dir=file/sweep", "seed=0,1"]):
        proc = ganrun(*args, "train.steps=2", cwd=tmp_path)
        line = one_line_error(proc)
        assert line.startswith(f"ganrun: error: cannot write {tmp_path / 'file'}") or \
            line.startswith("ganrun: error: cannot write file/"), line
        assert "hydra.run.dir=... or hydra.sweep.dir=..." in line
        assert "Warning" not in proc.stderr


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="SLURM is here")
def test_slurm_launcher_without_slurm(tmp_path):
    line = one_line_error(ganrun("-m", "hydra/launcher=slurm_gpu", "seed=0,1", cwd=tmp_path))
    assert line.startswith("ganrun: error: hydra/launcher=slurm_gpu submits the jobs to SLURM "
                           "with sbatch, which is not on PATH here")


def test_wrong_weights_files_are_named(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_text("not a weights file")
    make_image_folder(tmp_path / "imgs", n=60, size=(16, 16))
    line = one_line_error(ganrun("dataset=image_folder", f"dataset.root={tmp_path / 'imgs'}",
                                 "dataset.image_size=8", "dataset.batch_size=4",
                                 "metrics.extractor=inception",
                                 f"metrics.inception_weights={bad}", "train.steps=2",
                                 cwd=tmp_path))
    assert line == (f"ganrun: error: metrics.inception_weights: {bad} is not the InceptionV3 "
                    "weights file weights-inception-2015-12-05-6726825d.pth (UnpicklingError: "
                    "invalid load key, 'n'.)")


def test_help_describes_every_option_and_the_other_commands(tmp_path):
    proc = ganrun("--help", cwd=tmp_path)
    assert proc.returncode == 0 and not proc.stderr
    out = proc.stdout
    for command in ("ganrun-sample", "ganrun-eval", "ganrun-report"):
        assert command in out
    for group in ("trainer", "debug", "logger", "hydra/launcher", "regularizer", "method"):
        assert f"\n  {group}\n" in out
    # each option with the first line of its YAML's own comment
    assert "    wgan_gp                WGAN-GP preset (Gulrajani et al. 2017)" in out
    assert "    fast                   A smoke run: a few steps, logs and samples at every step" in out
    options = [line for line in out.splitlines() if line.startswith("    ")]
    assert options and all(len(line.split(None, 1)) == 2 for line in options), \
        [line for line in options if len(line.split(None, 1)) < 2]
    # piped into head: the reader leaves early, and that is no error
    piped = subprocess.run(f"{GANRUN} --help | head -3", shell=True, capture_output=True,
                           text=True, env=cli_env(), cwd=tmp_path)
    assert piped.stdout.startswith("ganrun: train a GAN") and piped.stderr == ""


def test_step_lines_carry_the_time_left_and_slow_steps_are_not_silent(train_fast, caplog,
                                                                       monkeypatch):
    import ganrun.callbacks.stats as stats

    monkeypatch.setattr(stats, "HEARTBEAT", 0.0)  # every step is "slow"
    monkeypatch.setattr(stats, "watched", lambda: True)  # as in a terminal
    caplog.set_level("INFO", logger="ganrun")
    train_fast("train.steps=6", "log.every=3")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    logged = [line for line in lines if "loss/d" in line]
    progress = [line for line in lines if "s/step" in line]
    assert [line.split()[1] for line in logged] == ["3/6", "6/6"]
    assert all(" eta " in line for line in logged) and logged[-1].endswith("eta 0:00:00")
    # between the logged steps, one short line per step: 1, 2, 4, 5
    assert [line.split()[1] for line in progress] == ["1/6", "2/6", "4/6", "5/6"]
    assert all(line.split()[-2] == "eta" for line in progress)


def test_step_lines_stay_quiet_when_not_watched(train_fast, caplog, monkeypatch):
    import ganrun.callbacks.stats as stats

    monkeypatch.setattr(stats, "HEARTBEAT", 0.0)
    caplog.set_level("INFO", logger="ganrun")
    train_fast("train.steps=6", "log.every=3")  # not a terminal here
    assert not [r for r in caplog.records if "s/step" in r.getMessage()]


def test_duration_format():
    from ganrun.callbacks.stats import duration

    assert duration(3725.4) == "1:02:05" and duration(0.2) == "0:00:00"
    assert duration(17 * 3600 + 60) == "17:01:00"
