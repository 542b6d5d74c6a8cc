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
    folder = tmp_path / "imgs"
    sample(str(run_dir), n=40, folder=True, out=str(folder))
    on_folder = evaluate(str(run_dir), images=str(folder), n_real=300)
    assert on_folder["n_fake"] == 40 and on_folder["metrics"]["fid"] > 0


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
