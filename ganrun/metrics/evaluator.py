"""The Evaluator: one feature extractor, the real data's features computed once and
cached on disk, and `evaluate(fake)` giving every configured metric."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from ganrun.errors import UserError
from ganrun.metrics.extractors import (
    CLASSIFIER_NAME,
    INCEPTION_FILE,
    INCEPTION_NAME,
    RANDOM_CONV_NAME,
    ClassifierExtractor,
    RandomConvExtractor,
    classifier_path,
    fingerprint,
    inception_weights,
    load_cached,
    load_inception,
    random_conv_size,
    random_conv_weights,
    save_cached,
    to_uint8_rgb,
    train_classifier,
)
from ganrun.metrics.guards import counts
from ganrun.metrics.ppl import (
    LOWER,
    UPPER,
    FeatureDistance,
    load_lpips,
    missing_vgg16,
    resolve_ppl_net,
    vgg16_weights,
)
from ganrun.metrics.registry import METRICS, Samples

log = logging.getLogger("ganrun")
READING = "read/"  # a metric's own reading of the generated images, among their features


def resolve_extractor(cfg, dataset) -> str:
    """`metrics.extractor`, with `auto` resolved: raw coordinates for 2-D points, the
    classifier for labelled images, InceptionV3 for other images when its weights are
    at hand (given or in torch hub's cache), else the offline random embedding."""
    if cfg.extractor != "auto":
        return cfg.extractor
    if dataset.data.dim() == 2:
        return "raw"
    from ganrun.data import DATASETS

    source = DATASETS.get(dataset.name)
    if source is not None and source.labelled and dataset.labels is not None:
        return "classifier"
    if inception_weights(cfg.inception_weights) is not None:
        return "inception"
    log.warning("metrics: no InceptionV3 weights (%s in torch hub's cache or "
                "metrics.inception_weights), so extractor auto uses random_conv, a seeded random "
                "embedding: its FID/KID/PR are on their own scale, not Inception's",
                INCEPTION_FILE)
    return "random_conv"


class Evaluator:
    """`with_real=False` (the other processes under DDP) loads only the extractor: they
    extract features, process 0 scores them against the real side."""

    def __init__(self, cfg, dataset, dataset_cfg=None, device: str | torch.device = "cpu",
                 with_real: bool = True, fake_name: str = "generated samples"):
        self.cfg = cfg
        self.dataset = dataset
        self.dataset_cfg = dataset_cfg
        self.device = torch.device(device)
        self.cache_dir = Path(os.path.expanduser(str(cfg.cache_dir)))
        self.metrics = {name: METRICS[name](cfg) for name in cfg.names}
        # No metric reading features or logits (stacked_modes alone): no network to load
        # and no real features to compute.
        extracts = any(m.reads in ("features", "logits") for m in self.metrics.values())
        self.kind = (resolve_extractor(cfg, dataset) if extracts or dataset.data.dim() == 2
                     else "none")
        if cfg.names and set(cfg.names) <= set(self.skipped):
            raise UserError("no metric of metrics.names applies here: " + "; ".join(
                f"{name} {why}" for name, why in self.skipped.items()))
        self.extractor, self.extractor_id = self._load_extractor()
        for name, metric in self.metrics.items():
            if name not in self.skipped:
                metric.prepare(self)
        self.ppl_distance, self.ppl_net = (self._ppl_distance() if "ppl" in cfg.names
                                           else (None, None))
        self.n_real = min(cfg.n_real, len(dataset))
        self.warned: set[str] = set()
        self.counts = self._counts(cfg.n_fake, self.n_real, fake_name)  # before any training
        self.real, self.real_cache_hit = self._real_features() if with_real else (None, False)

    # --- the extractor and the real side, cached ------------------------------------

    def _load_extractor(self):
        if self.kind in ("raw", "none"):
            return None, self.kind
        if self.kind == "inception":
            return load_inception(self.cfg.inception_weights).to(self.device), INCEPTION_NAME
        if self.kind == "random_conv":
            return self._random_conv()
        path = self.classifier_path = self.classifier(self.dataset)
        extractor = ClassifierExtractor(CLASSIFIER_NAME, ["penultimate", "logits"],
                                        feature_extractor_weights_path=str(path))
        return extractor.to(self.device), path.stem

    def classifier(self, dataset) -> Path:
        """The weights of the classifier of `dataset`'s labels: from the cache, else
        trained (from fixed seeds) and cached."""
        path = classifier_path(self.cache_dir, dataset, self.cfg)
        if path.is_file():
            log.info("metrics: classifier from cache %s", path)
        else:
            log.info("metrics: training the %s classifier (cached as %s)", dataset.name, path)
            info = train_classifier(dataset, self.cfg, path)
            log.info("metrics: classifier held-out accuracy %.4f", info["accuracy"])
        return path

    def _random_conv(self) -> tuple[RandomConvExtractor, str]:
        path = random_conv_weights(self.cache_dir, random_conv_size(self.dataset.data.shape[-1]))
        extractor = RandomConvExtractor(RANDOM_CONV_NAME, ["features"],
                                        feature_extractor_weights_path=str(path))
        return extractor.to(self.device), path.stem

    def _ppl_distance(self) -> tuple[torch.nn.Module, str]:
        """PPL's image distance and its name: LPIPS-VGG16, or the squared distance of
        features of this extractor (InceptionV3 in torch-fidelity takes only uint8
        images, too coarse for a step of 1e-4: the random embedding stands in)."""
        cfg = self.cfg
        if resolve_ppl_net(cfg.ppl_net, cfg.lpips_weights) == "lpips":
            weights = vgg16_weights(cfg.lpips_weights)
            if weights is None:
                raise missing_vgg16()
            return load_lpips(weights).to(self.device), "lpips-vgg16"
        if self.kind == "raw":
            return FeatureDistance(torch.nn.Identity()), "raw"
        extractor, name = (self._random_conv() if self.kind in ("inception", "none")
                           else (self.extractor, self.extractor_id))
        return FeatureDistance(extractor.embed), name

    def path_length(self, module) -> float:
        """PPL of the module's generator, from the global random stream (seed it)."""
        return self.metrics["ppl"].compute(module, self.ppl_distance.to(module.device))["ppl"]

    def to(self, device) -> Evaluator:
        self.device = torch.device(device)
        if self.ppl_distance is not None:
            self.ppl_distance.to(self.device)
        if self.extractor is not None:
            self.extractor.to(self.device)
        return self

    def _counts(self, n_fake: int, n_real: int, fake_name: str = "generated samples"):
        """The guards' counts (ganrun.metrics.guards); each adaptation warned of once."""
        out = counts(self.cfg, n_fake, n_real, fake_name,
                     [name for name in self.metrics if name not in self.skipped])
        for sentence in out.adapted:
            if sentence not in self.warned:
                self.warned.add(sentence)
                log.warning("metrics: %s", sentence)
        return out

    @property
    def skipped(self) -> dict[str, str]:
        """Metrics asked for that this data or extractor cannot give, and why."""
        why = {name: metric.skipped(self.kind, self.dataset.name)
               for name, metric in self.metrics.items()}
        return {name: reason for name, reason in why.items() if reason is not None}

    @property
    def protocol(self) -> dict:
        """The record of how the numbers were measured, written next to them."""
        out = {"extractor": self.extractor_id, "n_real": self.n_real, "n_fake": self.cfg.n_fake,
               "split": "train", "dataset": self.dataset.name, **self.counts.record()}
        for name in METRICS.in_order(set(self.metrics) - set(self.skipped)):
            record = self.metrics[name].record()
            if record is not None:
                out[name] = record
        if self.ppl_net is not None:
            cfg = self.cfg
            out["ppl"] = {"net": self.ppl_net, "samples": cfg.ppl_samples,
                          "epsilon": cfg.ppl_epsilon, "sampling": cfg.ppl_sampling,
                          "trimmed": [LOWER, UPPER]}
        if self.skipped:
            out["skipped"] = self.skipped
        return out

    def _real_features(self) -> tuple[dict, bool]:
        """The real side's features (and logits), computed once and cached; the real-only
        terms of the metrics join them in the same file on first use (`_real_terms`)."""
        if self.kind == "none":
            return {"features": torch.zeros(self.n_real, 0)}, False
        key = fingerprint(self.dataset, {"extractor": self.extractor_id, "n_real": self.n_real,
                                         "split": "train"})
        self.stats_path = self.cache_dir / "stats" / f"{self.dataset.name}-{key}.pt"
        if self.stats_path.is_file():
            return load_cached(self.stats_path), True
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(0))
        data = self.dataset.data[order[: self.n_real]]
        if data.dtype == torch.uint8:
            data = data.float().div(127.5).sub(1.0)
        real = self.features(data, read=False)
        save_cached(real, self.stats_path)
        return real, False

    def _real_terms(self, n_fake: int) -> dict:
        """The real-only parts of the configured metrics (`Metric.real_terms`: FID's
        statistics, the k-NN radii of precision/recall and density/coverage, KID's
        real-real kernel sums for n_fake generated samples), computed once and cached
        with the real features. Called after the generated side's features, so that
        this numpy work does not sit between torch's (on few cores their thread pools
        slow each other)."""
        terms = self.real.setdefault("terms", {})
        needed = {key: make for metric in self.metrics.values()
                  for key, make in metric.real_terms(self.real["features"], n_fake,
                                                     self.counts).items()}
        missing = [key for key in needed if key not in terms]
        for key in missing:
            terms[key] = needed[key]()
        if missing:
            save_cached(self.real, self.stats_path)
        return terms

    @property
    def readers(self) -> dict:
        """The metrics that read the generated images themselves (`Metric.read`)."""
        return {name: metric for name, metric in self.metrics.items()
                if metric.reads == "images" and name not in self.skipped}

    @torch.no_grad()
    def features(self, samples: Tensor, read: bool = True) -> dict[str, Tensor]:
        """{"features": (N, F)[, "logits": (N, K)][, "read/<metric>": its reading]} of
        samples in [-1, 1] (or 2-D points); `read=False`: without the readings (the real
        side)."""
        if self.kind == "raw":
            return {"features": samples.detach().float().cpu()}
        batches = samples.split(self.cfg.batch_size)
        if self.extractor is None:  # no metric reads features
            out = {"features": torch.zeros(samples.shape[0], 0)}
        else:
            outs = [self.extractor(to_uint8_rgb(batch).to(self.device)) for batch in batches]
            names = ("features", "logits")[: len(outs[0])]  # the random embedding: no logits
            out = {name: torch.cat([o[i].float().cpu() for o in outs])
                   for i, name in enumerate(names)}
        for name, metric in (self.readers.items() if read else ()):
            out[READING + name] = torch.cat([metric.read(batch.to(self.device)).cpu()
                                             for batch in batches])
        return out

    # --- the metrics ------------------------------------------------------------------

    def evaluate(self, fake: Tensor, fake_name: str = "generated samples") -> dict[str, float]:
        """Every configured metric of the samples `fake`."""
        return self.scores(self.features(fake), fake_name)

    def scores(self, fake_out: dict[str, Tensor],
               fake_name: str = "generated samples") -> dict[str, float]:
        """Every configured metric of generated samples given by their `features`
        (and `logits`): for 2-D points (extractor raw) the features are the points.
        Too few samples for a metric: UserError naming its minimum (`fake_name` says
        what the samples are). In the order of what they read (registry.READS); the
        generator's own (ppl) are the metrics callback's."""
        f, r = fake_out["features"], self.real["features"]
        self.counts = self._counts(len(f), len(r), fake_name)
        readings = {key[len(READING):]: value for key, value in fake_out.items()
                    if key.startswith(READING)}
        samples = Samples(f, fake_out.get("logits"), r, self._real_terms(len(f)), self.counts,
                          self.dataset, self.dataset_cfg, readings)
        out: dict[str, float] = {}
        for name in METRICS.in_order(set(self.metrics) - set(self.skipped)):
            metric = self.metrics[name]
            given = {"generator": False, "logits": "logits" in fake_out, "images": name in readings}
            if given.get(metric.reads, True):
                out.update(metric.compute(samples))
        return out

    def pictures(self) -> dict:
        """The metrics' pictures of their last computation (`Metric.picture`)."""
        pictures = {name: self.metrics[name].picture()
                    for name in METRICS.in_order(set(self.metrics) - set(self.skipped))}
        return {name: picture for name, picture in pictures.items() if picture is not None}
