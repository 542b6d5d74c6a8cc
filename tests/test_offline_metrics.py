"""Metrics offline for unlabelled images: the seeded random convolutional embedding
(metrics.extractor=random_conv), chosen by `auto` when the Inception weights are not
at hand, and the sample-count guards."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
import torch_fidelity

from ganrun.errors import UserError
from ganrun.metrics.evaluator import Evaluator
from ganrun.metrics.extractors import (
    RANDOM_CONV_NAME,
    RandomConvNet,
    UInt8Images,
    random_conv_path,
    to_uint8_rgb,
)
from ganrun.metrics.guards import counts

from conftest import GANRUN, cli_env, compose_cfg, make_image_folder
from tbread import scalars


def folder_cfg(root, *overrides):
    cfg, _ = compose_cfg("dataset=image_folder", f"dataset.root={root}", "dataset.image_size=32",
                         "model=dcgan", *overrides)
    return cfg


@pytest.fixture
def no_inception(monkeypatch, tmp_path):
    """A torch hub cache without the Inception weights, as on a fresh offline machine."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_auto_picks_the_random_embedding_offline_and_it_scores_as_torch_fidelity(
        tmp_path, no_inception, caplog):
    from ganrun.data import load_dataset

    make_image_folder(tmp_path / "imgs", n=120, size=(32, 32))
    cfg = folder_cfg(tmp_path / "imgs", "metrics.names=[fid,kid,pr,is]",
                     "metrics.kid_subsets=5")
    dataset = load_dataset(cfg.dataset)
    evaluator = Evaluator(cfg.metrics, dataset, cfg.dataset)
    assert evaluator.kind == "random_conv" and evaluator.extractor_id == "random-conv32-s0"
    assert "extractor auto uses random_conv" in caplog.text
    assert evaluator.protocol["skipped"] == {"is": "extractor random_conv gives no class "
                                                    "probabilities"}
    fake = dataset.data[:90].float().div(127.5).sub(1) + 0.2 * torch.randn(90, 3, 32, 32)
    fake = fake.clamp(-1, 1)
    ours = evaluator.evaluate(fake)
    real = dataset.data[torch.randperm(120, generator=torch.Generator().manual_seed(0))]
    theirs = torch_fidelity.calculate_metrics(
        input1=UInt8Images(to_uint8_rgb(fake)), input2=UInt8Images(real), cuda=False,
        verbose=False, fid=True, kid=True, prc=True, feature_extractor=RANDOM_CONV_NAME,
        feature_extractor_weights_path=str(random_conv_path(evaluator.cache_dir, 32)),
        save_cpu_ram=True, batch_size=64, kid_subsets=5,
        kid_subset_size=90, prc_neighborhood=3)
    assert evaluator.counts.kid_subset_size == 90  # adapted to the 90 generated samples
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert (ours["precision"], ours["recall"]) == pytest.approx(
        (theirs["precision"], theirs["recall"]))
    assert "is" not in ours and ours["fid"] > 0


def test_the_random_embedding_is_fixed_by_its_seed_and_read_from_the_cache(tmp_path):
    torch.manual_seed(123)
    a = RandomConvNet(32)
    torch.manual_seed(456)  # the global stream plays no part
    b = RandomConvNet(32)
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    features = a(x)
    assert features.shape == (4, 1024) and features.std() > 0
    # He initialisation keeps the scale through the four blocks: no layer's output collapses.
    assert 0.01 < features.abs().mean() < 10
    from ganrun.metrics.extractors import random_conv_weights

    path = random_conv_weights(tmp_path, 32)
    saved = torch.load(path, weights_only=False)
    saved["state_dict"]["body.0.bias"] += 1  # a later read uses the file, not a fresh draw
    torch.save(saved, path)
    assert random_conv_weights(tmp_path, 32) == path
    assert torch.load(path, weights_only=False)["state_dict"]["body.0.bias"].eq(1).all()


def test_offline_image_folder_run_logs_metrics_and_ganrun_eval_works(tmp_path):
    # The acceptance, shortened: an unlabelled PNG folder, no Inception weights,
    # no network; the run logs FID/KID/PR from the random embedding, ganrun-eval works.
    make_image_folder(tmp_path / "pngs", n=150, size=(32, 32))
    env = {**cli_env(), "TORCH_HOME": str(tmp_path / "torch")}  # no hub cache of weights
    run = subprocess.run(
        [GANRUN, f"dataset.root={tmp_path / 'pngs'}", "dataset=image_folder", "model=dcgan",
         "dataset.image_size=32", "model.base_channels=8", "train.steps=20", "log.every=10",
         "metrics.every=10", "metrics.n_fake=200", "metrics.kid_subsets=5",
         f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env,
        cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout + run.stderr
    assert "extractor auto uses random_conv" in out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [10, 20]
    last = records[-1]
    assert last["extractor"] == "random-conv32-s0" and last["n_real"] == 150
    assert last["kid_subset_size"] == 150 and "kid: subsets of 150" in last["adapted"][0]
    assert {"fid", "kid", "precision", "recall", "density", "coverage"} <= set(last["metrics"])
    assert "is" in last["skipped"] and "modes" in last["skipped"]
    logged = scalars(tmp_path / "run" / "tb")
    assert [v for _, v in logged["metrics/fid"]] == pytest.approx(
        [r["metrics"]["fid"] for r in records])
    evaluated = subprocess.run([GANRUN + "-eval", str(tmp_path / "run"), "n_fake=200"],
                               capture_output=True, text=True, env=env, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "extractor random-conv32-s0" in evaluated.stdout
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["extractor"] == "random-conv32-s0" and saved["metrics"]["fid"] > 0


def test_guards_refuse_below_the_minimum_and_adapt_above_it():
    cfg, _ = compose_cfg()
    metrics = cfg.metrics
    with pytest.raises(UserError, match=r"^49 generated samples are too few: fid, kid, is, pr, "
                                        r"dc need at least 50"):
        counts(metrics, 49, 2000)
    with pytest.raises(UserError, match=r"^40 real samples are too few: fid, kid, pr, dc need "
                                        r"at least 50"):
        counts(metrics, 2000, 40)  # IS reads no real sample
    metrics.pr_k = 7
    with pytest.raises(UserError, match=r"^60 generated samples are too few: pr needs at least "
                                        r"70; use more samples"):  # 10 x k for k-NN balls
        counts(metrics, 60, 2000)
    with pytest.raises(UserError, match="fid, kid, is, dc need at least 50; pr needs at least 70"):
        counts(metrics, 45, 2000)
    metrics.pr_k = 3
    ok = counts(metrics, 2000, 1797)
    assert (ok.kid_subset_size, ok.is_splits, ok.adapted) == (1000, 10, [])
    small = counts(metrics, 120, 1797)
    assert (small.kid_subset_size, small.is_splits) == (120, 2)
    assert small.record() == {"kid_subset_size": 120, "is_splits": 2, "adapted": [
        "kid: subsets of 120 samples, not kid_subset_size=1000 (only 120 on one side)",
        "is: 2 splits, not is_splits=10 (each split keeps at least 50 of 120 samples)"]}
    metrics.kid_subset_size = 10
    with pytest.raises(UserError, match="kid_subset_size=10: KID needs subsets of at least 50"):
        counts(metrics, 2000, 2000)


@pytest.mark.parametrize("override,message", [
    ("metrics.n_fake=30", "30 generated samples (metrics.n_fake) are too few: fid, kid, is, pr, "
                          "dc need at least 50; use more samples or leave them out "
                          "(metrics.names; ganrun-eval names=)"),
    ("metrics.kid_subset_size=20", "metrics.kid_subset_size=20: KID needs subsets of at least 50 samples"),
    ("metrics.is_splits=0", "metrics.is_splits=0: must be an integer >= 1"),
])
def test_guards_refuse_a_config_before_training(override, message):
    proc = subprocess.run([GANRUN, override], capture_output=True, text=True, env=cli_env())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"ganrun: error: {message}"
