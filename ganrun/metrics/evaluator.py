"""The Evaluator: one feature extractor, the real data's features computed once and
cached on disk, and `evaluate(fake)` giving every configured metric."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from ganrun.metrics import engine
from ganrun.metrics.extractors import (
    CLASSIFIER_NAME,
    INCEPTION_NAME,
    ClassifierExtractor,
    classifier_path,
    fingerprint,
    load_inception,
    to_uint8_rgb,
    train_classifier,
)
from ganrun.metrics.modes import mode_metrics

log = logging.getLogger("ganrun")

LABELLED = ("digits", "mnist", "fashion_mnist", "cifar10")


def resolve_extractor(name: str, dataset) -> str:
    """`auto`: raw coordinates for 2-D points, the classifier for labelled images,
    InceptionV3 otherwise."""
    if name != "auto":
        return name
    if dataset.data.dim() == 2:
        return "raw"
    return "classifier" if dataset.name in LABELLED and dataset.labels is not None else "inception"


class Evaluator:
    def __init__(self, cfg, dataset, dataset_cfg=None, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.dataset = dataset
        self.dataset_cfg = dataset_cfg
        self.device = torch.device(device)
        self.cache_dir = Path(os.path.expanduser(str(cfg.cache_dir)))
        self.kind = resolve_extractor(cfg.extractor, dataset)
        self.extractor, self.extractor_id = self._load_extractor()
        self.n_real = min(cfg.n_real, len(dataset))
        self.real, self.real_cache_hit = self._real_features()

    # --- the extractor and the real side, cached ------------------------------------

    def _load_extractor(self):
        if self.kind == "raw":
            return None, "raw"
        if self.kind == "inception":
            return load_inception(self.cfg.inception_weights).to(self.device), INCEPTION_NAME
        path = classifier_path(self.cache_dir, self.dataset, self.cfg)
        if path.is_file():
            log.info("metrics: classifier from cache %s", path)
        else:
            log.info("metrics: training the %s classifier (cached as %s)", self.dataset.name, path)
            info = train_classifier(self.dataset, self.cfg, path)
            log.info("metrics: classifier held-out accuracy %.4f", info["accuracy"])
        self.classifier_path = path
        extractor = ClassifierExtractor(CLASSIFIER_NAME, ["penultimate", "logits"],
                                        feature_extractor_weights_path=str(path))
        return extractor.to(self.device), path.stem

    def to(self, device) -> Evaluator:
        self.device = torch.device(device)
        if self.extractor is not None:
            self.extractor.to(self.device)
        return self

    @property
    def protocol(self) -> dict:
        return {"extractor": self.extractor_id, "n_real": self.n_real, "n_fake": self.cfg.n_fake,
                "split": "train", "dataset": self.dataset.name}

    def _real_features(self) -> tuple[dict, bool]:
        key = fingerprint(self.dataset, {"extractor": self.extractor_id, "n_real": self.n_real,
                                         "split": "train"})
        path = self.cache_dir / "stats" / f"{self.dataset.name}-{key}.pt"
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=False), True
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(0))
        data = self.dataset.data[order[: self.n_real]]
        if data.dtype == torch.uint8:
            data = data.float().div(127.5).sub(1.0)
        real = self.features(data)
        real["fid_stats"] = engine.fid_statistics(real["features"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(real, tmp)
        os.replace(tmp, path)
        return real, False

    @torch.no_grad()
    def features(self, samples: Tensor) -> dict[str, Tensor]:
        """{"features": (N, F)[, "logits": (N, K)]} of samples in [-1, 1] (or 2-D points)."""
        if self.extractor is None:
            return {"features": samples.detach().float().cpu()}
        feats, logits = [], []
        for batch in samples.split(self.cfg.batch_size):
            out = self.extractor(to_uint8_rgb(batch).to(self.device))
            feats.append(out[0].float().cpu())
            logits.append(out[1].float().cpu())
        return {"features": torch.cat(feats), "logits": torch.cat(logits)}

    # --- the metrics ------------------------------------------------------------------

    def evaluate(self, fake: Tensor) -> dict[str, float]:
        names, cfg = set(self.cfg.names), self.cfg
        fake_out = self.features(fake)
        f, r = fake_out["features"], self.real["features"]
        out: dict[str, float] = {}
        if "fid" in names:
            out["fid"] = engine.fid(engine.fid_statistics(f), self.real["fid_stats"])
        if "kid" in names:
            out["kid"], out["kid_std"] = engine.kid(f, r, cfg.kid_subsets, cfg.kid_subset_size)
        if "pr" in names:
            out["precision"], out["recall"] = engine.precision_recall(f, r, cfg.pr_k)
        if "dc" in names:
            out["density"], out["coverage"] = engine.density_coverage(f, r, cfg.dc_k)
        if "logits" in fake_out:
            if "is" in names:
                out["is"], out["is_std"] = engine.inception_score(fake_out["logits"])
            if "class_coverage" in names and self.kind == "classifier":
                classes = self.dataset.num_classes
                out["classes_covered"], out["class_kl"] = engine.class_coverage(
                    fake_out["logits"], classes, cfg.class_min_share)
        if "modes" in names and self.kind == "raw" and self.dataset_cfg is not None:
            from ganrun.data import mixture_centres

            out.update(mode_metrics(fake, mixture_centres(self.dataset_cfg), self.dataset_cfg.std))
        return out
