"""Faults: divergence, interruption, broken checkpoints and disks, bad config.

Each test checks the message, the status in metrics.json and that what was written
before the fault is still there and usable. (Bad image folders: test_data.py.)
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from ganrun.config.schema import validate
from ganrun.errors import DivergedError, Interrupted, UserError
from ganrun.training.module import GANModule

from conftest import compose_cfg


def poison_reals_from(step: int, once: bool = False):
    """A `_d_step` that feeds D NaN images from generator step `step` on (or at that
    step only): D's outputs, its loss and then its weights go NaN, as in a real blow-up."""
    original = GANModule._d_step
    fired: list[int] = []

    def _d_step(self, opt_d, real, *args):
        current = self.g_steps + 1  # the step being trained
        if current >= step and not (once and fired):
            fired.append(current)
            real = real * float("nan")
        return original(self, opt_d, real, *args)

    return _d_step


def read_json(path):
    return json.loads(path.read_text())


def load_ckpt(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def all_finite(state_dict: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


DIVERGING = ("train.steps=30", "train.ckpt_every=5", "train.check_every=3", "log.every=10",
             "log.sample_every=100")


def test_divergence_is_caught_within_check_every_and_the_last_good_checkpoint_kept(
        train_fast, tmp_path, monkeypatch):
    monkeypatch.setattr(GANModule, "_d_step", poison_reals_from(7))
    with pytest.raises(DivergedError) as caught:
        train_fast(*DIVERGING)
    # NaN from step 7; checks at 3, 5 (checkpoint), 6, 9: caught at 9, finite at 6.
    message = str(caught.value)
    assert message.startswith("diverged at generator step 9: loss/d=nan")
    assert "D/real=nan" in message and message.endswith("(finite at step 6)")
    saved = read_json(tmp_path / "run" / "metrics.json")
    assert saved["status"] == "diverged" and saved["diverged_at"] == 9
    assert saved["reason"] == message and saved["g_steps"] == 9
    ckpt = load_ckpt(tmp_path / "run")
    assert ckpt["ganrun"]["g_steps"] == 5 and all_finite(ckpt["state_dict"])


def test_on_diverge_restore_rolls_back_with_lower_learning_rates(train_fast, monkeypatch):
    monkeypatch.setattr(GANModule, "_d_step", poison_reals_from(7, once=True))
    result, run_dir = train_fast(*DIVERGING, "train.on_diverge=restore")
    assert result["status"] == "finished" and result["g_steps"] == 30
    assert result["images_seen"] == 30 * 64  # the rolled-back steps are not counted twice
    [restore] = result["restores"]
    assert (restore["at_step"], restore["to_step"], restore["lr_scale"]) == (9, 5, 0.5)
    assert all(map(lambda v: v == v, result["losses"].values()))  # no NaN left
    ckpt = load_ckpt(run_dir)
    assert all_finite(ckpt["state_dict"]) and ckpt["ganrun"]["lr_scale"] == 0.5
    lrs = [group["lr"] for opt in ckpt["optimizer_states"] for group in opt["param_groups"]]
    assert lrs == [1e-4, 1e-4]  # G's and D's 2e-4, halved


def test_restores_are_bounded_then_the_run_is_diverged(train_fast, tmp_path, monkeypatch):
    monkeypatch.setattr(GANModule, "_d_step", poison_reals_from(7))
    with pytest.raises(DivergedError, match="diverged at generator step 9"):
        train_fast(*DIVERGING, "train.on_diverge=restore", "train.max_restores=2")
    saved = read_json(tmp_path / "run" / "metrics.json")
    assert saved["status"] == "diverged"
    assert [(r["to_step"], r["lr_scale"]) for r in saved["restores"]] == [(5, 0.5), (5, 0.25)]


def test_sigterm_saves_and_the_resumed_run_matches_an_uninterrupted_one(train_fast, monkeypatch):
    same = ("train.steps=12", "log.every=1", "train.ckpt_every=5")
    whole, whole_dir = train_fast(*same, name="whole")

    original = GANModule._g_step

    def sigterm_during_step_7(self, *args):
        if self.g_steps == 6 and self.stop_signal is None:  # step 7 is being trained
            os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends before a kill
        return original(self, *args)

    monkeypatch.setattr(GANModule, "_g_step", sigterm_during_step_7)
    with pytest.raises(Interrupted, match="SIGTERM at generator step 7; checkpoint saved: .*last.ckpt"):
        train_fast(*same, name="cut")
    monkeypatch.undo()
    cut_dir = whole_dir.parent / "cut"
    cut = read_json(cut_dir / "metrics.json")
    assert cut["status"] == "interrupted" and cut["g_steps"] == 7
    assert load_ckpt(cut_dir)["ganrun"]["g_steps"] == 7  # saved at the signal, not at step 5

    resumed, resumed_dir = train_fast(*same, f"ckpt_path={cut_dir / 'checkpoints' / 'last.ckpt'}",
                                      name="resumed")
    assert resumed["status"] == "finished" and resumed["g_steps"] == 12
    assert resumed["images_seen"] == whole["images_seen"]
    assert resumed["losses"] == whole["losses"]  # bit for bit: same batches, same noise
    a, b = load_ckpt(whole_dir)["state_dict"], load_ckpt(resumed_dir)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(train_fast, tmp_path, monkeypatch):
    import pytorch_lightning as pl

    original = pl.Trainer.save_checkpoint
    calls = []

    def disk_full_on_second_write(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) == 2:
            with open(filepath, "wb") as f:
                f.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", disk_full_on_second_write)
    with pytest.raises(OSError, match="No space left"):
        train_fast("train.steps=8", "train.ckpt_every=4")
    saved = read_json(tmp_path / "run" / "metrics.json")
    assert saved["status"] == "failed" and "No space left on device" in saved["reason"]
    assert load_ckpt(tmp_path / "run")["ganrun"]["g_steps"] == 4  # the good one, untouched
    assert not (tmp_path / "run" / "checkpoints" / ".last.ckpt.tmp").exists()  # no half one


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "not a readable checkpoint, the file is corrupt or truncated"),
    ("foreign", "not a ganrun checkpoint"),
    ("other_model", r"made by a different model or data shape \(model=dcgan"),
])
def test_a_broken_or_foreign_checkpoint_is_named(train_fast, tmp_path, damage, expected):
    _, first = train_fast("train.steps=4", name="first")
    ckpt = first / "checkpoints" / "last.ckpt"
    if damage == "truncate":
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    else:
        _, other = train_fast("train.steps=4", "model=dcgan", "model.base_channels=8", name="other")
        ckpt = other / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    with pytest.raises(UserError, match=expected):
        train_fast(f"ckpt_path={ckpt}", name="second")
    saved = read_json(tmp_path / "second" / "metrics.json")
    assert saved["status"] == "failed" and saved["reason"].startswith(f"ckpt_path={ckpt}")
    assert ckpt.read_bytes() == before  # the checkpoint given is never written to


def test_same_seed_gives_bit_identical_losses_and_metrics(train_fast):
    metrics = ("metrics=default", "metrics.n_fake=200", "metrics.n_real=200", "metrics.every=4",
               "metrics.classifier_steps=20", "seed=3")
    first, _ = train_fast(*metrics, name="first")
    second, _ = train_fast(*metrics, name="second")
    assert first["metrics"] and first["metrics"] == second["metrics"]
    assert first["losses"] == second["losses"]
    third, _ = train_fast(*metrics[:-1], "seed=4", name="third")
    assert third["losses"] != first["losses"]
    # Evaluations draw their own noise: the training run is the same without them.
    unmeasured, _ = train_fast("seed=3", name="unmeasured")
    assert unmeasured["losses"] == first["losses"]


@pytest.mark.parametrize("override, expected", [
    ("optim.lr_d=0", "optim.lr_d=0: must be finite and > 0"),
    ("dataset.batch_size=0", "dataset.batch_size=0: must be an integer >= 1"),
    ("train.steps=-5", "train.steps=-5: must be an integer >= 1"),
    ("train.check_every=0", "train.check_every=0: must be an integer >= 1"),
    ("train.on_diverge=retry", "train.on_diverge: 'retry' is not supported; valid: stop, restore"),
    ("train.restore_lr_factor=2", "train.restore_lr_factor=2: must be finite and in (0, 1]"),
    ("metrics.extractor=vgg", "metrics.extractor: 'vgg' is not supported; valid: auto, classifier"),
    ("model=dcgan dataset.image_size=128", "dataset.image_size=128 is not supported by "
                                           "model=dcgan; valid: 8, 16, 32, 64"),
    ("dataset=ring8 model=dcgan", "model=dcgan needs images; dataset=ring8 is 2-D points"),
    ("dataset=ring8 model.conditional=true", "model.conditional=true needs class labels"),
])
def test_values_that_cannot_work_are_refused_before_training(override, expected, tmp_path):
    from ganrun.training.run import run

    cfg, _ = compose_cfg("metrics=none", *override.split())
    with pytest.raises(UserError) as caught:
        validate(cfg)
    assert expected in str(caught.value)
    with pytest.raises(UserError):
        run(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_an_unwritable_run_directory_is_refused_at_the_start(tmp_path):
    from ganrun.training.run import run

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg, _ = compose_cfg("metrics=none")
    with pytest.raises(UserError, match=f"run directory {blocker / 'run'} is not writable: "
                                        "Not a directory"):
        run(cfg, run_dir=blocker / "run")
    assert blocker.read_text() == "not a directory"
