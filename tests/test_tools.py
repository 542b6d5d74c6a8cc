"""ganrun-sample and ganrun-eval on finished runs, offline."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from ganrun.errors import UserError
from ganrun.tools import evaluate, sample

from conftest import GANRUN, cli_env


def test_sample_needs_no_dataset(train_fast, tv_root):
    result, run_dir = train_fast("dataset=mnist", f"dataset.root={tv_root}", "model=dcgan",
                                 "model.base_channels=8", "dataset.image_size=16")
    shutil.rmtree(tv_root)  # the dataset is gone
    grid = sample(str(run_dir), n=16)
    assert grid == run_dir / "samples" / "sample_0000004.png"
    assert np.asarray(Image.open(grid)).shape == (4 * 18 + 2, 4 * 18 + 2, 3)
    folder = sample(str(run_dir / "checkpoints" / "last.ckpt"), n=5, folder=True,
                    out=str(run_dir / "pngs"))
    pngs = sorted(folder.iterdir())
    assert len(pngs) == 5 and np.asarray(Image.open(pngs[0])).shape == (16, 16, 3)  # no border


def test_sample_is_seeded(train_fast):
    _, run_dir = train_fast("dataset=ring8")
    a = np.asarray(Image.open(sample(str(run_dir), n=200, out=str(run_dir / "a.png"), seed=1)))
    b = np.asarray(Image.open(sample(str(run_dir), n=200, out=str(run_dir / "b.png"), seed=1)))
    assert np.array_equal(a, b)


def test_eval_of_a_finished_run_and_of_a_folder(train_fast, tmp_path):
    _, run_dir = train_fast()
    record = evaluate(str(run_dir), n_fake=300, n_real=300)
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert record["n_fake"] == 300 and record["n_real"] == 300
    assert {"fid", "kid", "is", "precision", "recall", "classes_covered"} <= set(record["metrics"])
    assert record["kid_subset_size"] == 300 and record["is_splits"] == 6  # adapted, recorded
    folder = tmp_path / "imgs"
    sample(str(run_dir), n=60, folder=True, out=str(folder))
    on_folder = evaluate(str(run_dir), images=str(folder), n_real=300)
    assert on_folder["n_fake"] == 60 and on_folder["metrics"]["fid"] > 0
    assert on_folder["kid_subset_size"] == 60 and on_folder["is_splits"] == 1
    assert on_folder["adapted"] == [
        "kid: subsets of 60 samples, not kid_subset_size=1000 (only 60 on one side)",
        "is: 1 splits, not is_splits=10 (each split keeps at least 50 of 60 samples)"]


def test_eval_refuses_too_few_images_naming_the_minimum(train_fast, tmp_path):
    # Five images gave kid -6390, precision 1, recall 1, is nan: now a refusal, unless the
    # metrics that need more are left out (class coverage counts and has no minimum).
    _, run_dir = train_fast()
    folder = tmp_path / "five"
    sample(str(run_dir), n=5, folder=True, out=str(folder))
    with pytest.raises(UserError, match=r"^5 images in .*five are too few: fid, kid, is, pr, "
                                        r"dc need at least 50; use more samples"):
        evaluate(str(run_dir), images=str(folder))
    with pytest.raises(UserError, match="pr needs at least 100"):  # 10 x k for k-NN balls
        evaluate(str(run_dir), images=str(folder), names=["fid", "pr"], pr_k=10)
    covered = evaluate(str(run_dir), images=str(folder), names=["class_coverage"])
    assert set(covered["metrics"]) == {"classes_covered", "class_kl"}
    proc = subprocess.run([GANRUN + "-eval", str(run_dir), "--images", str(folder)],
                          capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ganrun-eval: error: 5 images in")


def test_bad_paths_and_options_are_clear(tmp_path):
    with pytest.raises(UserError, match="a directory without a checkpoint"):
        sample(str(tmp_path))
    with pytest.raises(UserError, match="nope.ckpt: no such file"):
        sample(str(tmp_path / "nope.ckpt"))
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a ganrun checkpoint"):
        sample(str(tmp_path / "x.ckpt"))
    proc = subprocess.run([GANRUN + "-sample", str(tmp_path), "nn=3"], capture_output=True,
                          text=True, env=cli_env())
    assert proc.returncode == 1 and "unknown option nn; valid: n, out" in proc.stderr
    assert "Traceback" not in proc.stderr
