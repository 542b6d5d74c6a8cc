"""Metrics: our numbers against torch-fidelity's, the digits classifier, the caches."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch_fidelity
from omegaconf import OmegaConf

from ganrun.data import load_dataset
from ganrun.errors import UserError
from ganrun.metrics import engine, registry
from ganrun.metrics.evaluator import Evaluator
from ganrun.metrics.extractors import (
    CLASSIFIER_NAME,
    INCEPTION_NAME,
    UInt8Images,
    holdout_split,
    write_random_inception_weights,
)

from conftest import compose_cfg


def metrics_cfg(**overrides):
    cfg, _ = compose_cfg(*(f"metrics.{k}={v}" for k, v in overrides.items()))
    return cfg.metrics, cfg.dataset


def _digits_pair(n_fake=300):
    dataset = load_dataset(OmegaConf.create({"name": "digits", "image_size": 16, "channels": 1}))
    g = torch.Generator().manual_seed(5)
    # "Generated": real digits with noise, so the two sets differ.
    fake = (dataset.data[torch.randperm(len(dataset), generator=g)[:n_fake]]
            + 0.3 * torch.randn(n_fake, 1, 16, 16, generator=g)).clamp(-1, 1)
    return dataset, fake


def _uint8(x):
    from ganrun.metrics.extractors import to_uint8_rgb

    return to_uint8_rgb(x)


def _torch_fidelity(evaluator, fake, name, weights, **kw):
    order = torch.randperm(len(evaluator.dataset), generator=torch.Generator().manual_seed(0))
    real = evaluator.dataset.data[order[: evaluator.n_real]]
    return torch_fidelity.calculate_metrics(
        input1=UInt8Images(_uint8(fake)), input2=UInt8Images(_uint8(real)), cuda=False, verbose=False,
        fid=True, kid=True, isc=True, prc=True, feature_extractor=name,
        feature_extractor_weights_path=weights, save_cpu_ram=True, batch_size=64,
        kid_subsets=evaluator.cfg.kid_subsets,
        kid_subset_size=evaluator.counts.kid_subset_size, isc_splits=evaluator.counts.is_splits,
        prc_neighborhood=evaluator.cfg.pr_k, **kw)


def _assert_equal(ours, theirs, with_is=True):
    pairs = {"fid": "frechet_inception_distance", "kid": "kernel_inception_distance_mean",
             "precision": "precision", "recall": "recall"}
    if with_is:
        pairs["is"] = "inception_score_mean"
    for mine, key in pairs.items():
        assert ours[mine] == pytest.approx(theirs[key], rel=1e-4, abs=1e-9), mine


def test_classifier_metrics_equal_torch_fidelity():
    dataset, fake = _digits_pair()
    cfg, dcfg = metrics_cfg(n_real=400, kid_subsets=10, kid_subset_size=200)
    evaluator = Evaluator(cfg, dataset, dcfg)
    ours = evaluator.evaluate(fake)
    theirs = _torch_fidelity(evaluator, fake, CLASSIFIER_NAME, str(evaluator.classifier_path),
                             feature_layer_fid="penultimate", feature_layer_kid="penultimate",
                             feature_layer_prc="penultimate", feature_layer_isc="logits")
    _assert_equal(ours, theirs)
    assert ours["fid"] > 0.1  # the noisy digits are measurably different


def test_inception_metrics_equal_torch_fidelity(tmp_path, monkeypatch):
    # The equality with torch-fidelity, not the sample-count guards, is checked here: a
    # smaller minimum keeps InceptionV3 on a CPU to 4 x 24 images.
    monkeypatch.setattr(registry, "MIN_SAMPLES", 10)
    weights = write_random_inception_weights(tmp_path / "inception.pth")
    dataset, fake = _digits_pair(n_fake=24)
    dataset.data = dataset.data[:24]
    cfg, dcfg = metrics_cfg(extractor="inception", inception_weights=str(weights), n_real=24,
                            kid_subsets=5, kid_subset_size=12, pr_k=1, dc_k=1,
                            names="[fid,kid,is,pr]")
    evaluator = Evaluator(cfg, dataset, dcfg)
    ours = evaluator.evaluate(fake)
    assert evaluator.counts.is_splits == 2  # 24 samples: two splits of >= 10
    theirs = _torch_fidelity(evaluator, fake, INCEPTION_NAME, str(weights),
                             feature_layer_isc="logits_unbiased")
    _assert_equal(ours, theirs)


@pytest.mark.parametrize("dim,n_fake,n_real,shift", [(128, 300, 400, 0.3), (16, 200, 200, 0.0)])
def test_kid_and_precision_recall_are_torch_fidelitys_bit_for_bit(dim, n_fake, n_real, shift):
    # Our KID and precision/recall repeat torch-fidelity's operations so that their real
    # parts can be cached: the results, cached or not, must be exactly theirs, also for
    # two samples of one distribution (KID near 0, where rounding would show).
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    g = torch.Generator().manual_seed(dim)
    real = torch.randn(n_real, dim, generator=g).abs()
    fake = torch.randn(n_fake, dim, generator=g).abs() + shift
    theirs = kid_features_to_metric(fake, real, kid_subsets=7, kid_subset_size=150, verbose=False)
    cached = engine.kid_real_terms(real, engine.kid_draws(n_fake, n_real, 7, 150))
    for real_terms in (None, cached):
        assert engine.kid(fake, real, 7, 150, real_terms) == (
            theirs["kernel_inception_distance_mean"], theirs["kernel_inception_distance_std"])
    theirs = prc_features_to_metric(fake, real, prc_neighborhood=3, prc_batch_size=10000,
                                    save_cpu_ram=True, verbose=False)
    for radii in (None, engine.knn_radii(real, 3), engine.knn_radii(real, 3, block=7)):
        assert engine.precision_recall(fake, real, 3, radii) == (theirs["precision"],
                                                                theirs["recall"])


def test_missing_inception_weights_name_both_ways_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def offline(*args, **kwargs):
        raise OSError("no internet")

    monkeypatch.setattr(fe, "load_state_dict_from_url", offline)
    dataset, _ = _digits_pair()
    cfg, dcfg = metrics_cfg(extractor="inception")
    with pytest.raises(UserError) as e:
        Evaluator(cfg, dataset, dcfg)
    message = str(e.value)
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "metrics.inception_weights=" in message
    assert "offline without them: metrics.extractor=random_conv" in message  # and a way on


def test_digits_classifier_is_accurate_and_real_digits_score_high():
    dataset, _ = _digits_pair()
    cfg, dcfg = metrics_cfg()
    evaluator = Evaluator(cfg, dataset, dcfg)
    assert evaluator.extractor.info["accuracy"] >= 0.95
    held_out, _ = holdout_split(len(dataset), cfg.classifier_holdout)
    scores = evaluator.evaluate(dataset.data[held_out])
    assert scores["is"] >= 8.0
    assert scores["classes_covered"] == 10
    assert scores["class_kl"] < 0.05
    assert scores["precision"] > 0.8 and scores["recall"] > 0.8


def test_second_evaluator_reads_the_caches(monkeypatch):
    dataset, fake = _digits_pair()
    cfg, dcfg = metrics_cfg(n_real=500, n_fake=len(fake))
    first = Evaluator(cfg, dataset, dcfg)
    first_scores = first.evaluate(fake)  # the first evaluation caches the real terms too
    classifier_mtime = first.classifier_path.stat().st_mtime_ns

    import ganrun.metrics.evaluator as evaluator_module

    def must_not_run(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"{what} was computed again")
        return fail

    monkeypatch.setattr(evaluator_module, "train_classifier", must_not_run("the classifier"))
    monkeypatch.setattr(Evaluator, "features", _count_calls(Evaluator.features))
    knn_radii = engine.knn_radii
    for real_only in ("knn_radii", "kid_real_terms"):  # the real parts of PR, D/C and KID
        monkeypatch.setattr(engine, real_only, must_not_run(real_only))
    second = Evaluator(cfg, dataset, dcfg)
    assert second.real_cache_hit and Evaluator.features.calls == 0  # no real features recomputed
    assert first.classifier_path.stat().st_mtime_ns == classifier_mtime
    monkeypatch.setattr(engine, "knn_radii", knn_radii)  # generated samples need their own
    assert second.evaluate(fake) == first_scores  # KID from the cached real terms


def _count_calls(fn):
    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        return fn(*args, **kwargs)

    wrapper.calls = 0
    return wrapper


@pytest.mark.parametrize("block", [4096, 7])  # one block, and rows a few at a time
def test_density_and_coverage_by_hand(monkeypatch, block):
    monkeypatch.setattr(engine, "DC_BLOCK", block)
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 3)), rng.normal(loc=0.3, size=(20, 3))
    k = 4
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    radius = np.sort(d_rr, axis=1)[:, k]
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=2)
    inside = d_rf <= radius[:, None]
    assert engine.dc_radii(torch.tensor(real), k).numpy() == pytest.approx(radius)
    density, coverage = engine.density_coverage(torch.tensor(fake), torch.tensor(real), k)
    assert density == pytest.approx(inside.sum() / (k * 20))
    assert coverage == pytest.approx(inside.any(axis=1).mean())


def test_class_coverage_counts_and_kl():
    logits = torch.zeros(100, 4)
    predicted = torch.tensor([0] * 60 + [1] * 35 + [2] * 5)
    logits[torch.arange(100), predicted] = 1.0
    covered, kl = engine.class_coverage(logits, 4, min_share=0.2)  # threshold 5% of samples
    assert covered == 3
    q = np.array([0.6, 0.35, 0.05])
    assert kl == pytest.approx((q * np.log(q * 4)).sum())


def test_cache_writes_of_parallel_jobs_do_not_mix(tmp_path, monkeypatch):
    # Two jobs of a parallel sweep write the same cache entry at once: the second starts
    # and finishes while the first is half way through. Both must land whole, neither
    # may trip over the other's temporary file.
    import ganrun.metrics.extractors as extractors

    target = tmp_path / "stats" / "digits-abc.pt"
    real_save, real_pid = torch.save, os.getpid()

    def save_with_a_second_job_in_between(obj, path):
        with open(path, "wb") as f:
            if os.getpid() == real_pid:  # the first job has opened its file when...
                monkeypatch.setattr(extractors.os, "getpid", lambda: real_pid + 1)
                extractors.save_cached({"job": 2}, target)  # ...another writes the entry
                monkeypatch.setattr(extractors.os, "getpid", lambda: real_pid)
            real_save(obj, f)

    monkeypatch.setattr(extractors.torch, "save", save_with_a_second_job_in_between)
    extractors.save_cached({"job": 1}, target)
    assert torch.load(target) == {"job": 1}  # the last rename wins, whole
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporaries left


@pytest.mark.parametrize("data", [("dataset=digits",), ("dataset=ring8", "model.conditional=false")],
                         ids=["digits", "ring8"])
def test_the_metrics_callback_scores_what_the_evaluator_scores(train_fast, data):
    """One process: the callback's torchmetrics state (features gathered, put back in
    sample order) gives the numbers of the Evaluator on the same samples, drawn the
    way evaluations always drew them (the noise of seed and step, 500 at a time)."""
    from ganrun.callbacks.metrics import evaluation_seed
    from ganrun.cli.tools import load_module
    from ganrun.samples import generate_many

    result, run_dir = train_fast(*data, "metrics=default", "metrics.every=4",
                                 "metrics.n_fake=1200", "train.steps=4")
    module, cfg = load_module(run_dir / "checkpoints" / "last.ckpt")
    evaluator = Evaluator(cfg.metrics, load_dataset(cfg.dataset), cfg.dataset)
    torch.manual_seed(evaluation_seed(cfg.seed, 4))
    expected = evaluator.evaluate(generate_many(module, 1200))
    assert result["metrics"] == expected and expected
