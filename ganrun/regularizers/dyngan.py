"""DynGAN (Luo et al., "DynGAN: Solving Mode Collapse in GANs with Dynamic
Clustering", IEEE TPAMI 2024): find the real samples the generator fails to
produce, give them partitions of their own, and train G and D conditioned on the
partition.

- Detection, every `detect_every` generator steps: D's probability on every real
  sample, averaged over detections (score <- (1 - ema) score + ema p, from 0); a
  sample is collapsed when its score exceeds 1 / (1 + delta). For the optimal D of
  the minimax game, D*(x) = p(x) / (p(x) + q(x)), so this says q(x) < delta p(x):
  the generator puts almost no mass where the sample lies. For critic losses
  (wgan, hinge, ...), whose outputs are no probabilities, p is the share of a
  batch of generated samples that D scores below the real one (1 where D ranks the
  sample above everything G makes, as D* does for a collapsed sample).
- Partitioning, every `partition_every` steps, when at least `min_collapsed` of the
  data is collapsed and fewer than `max_partitions` partitions exist: the collapsed
  samples of each partition move to a new partition (one new partition per old
  one that has any; past the cap, into the last), then k-means on D's features
  refines the partitions, each sample's distance to its own partition weighted by
  its score (a sample G already covers stays where it is; a collapsed one may move).
- Conditioning: G and D take the partition index as a class (G's embedding, D's
  projection); real samples carry their partition, generated ones draw theirs from
  the prior, each partition's share of the data.

Settings after the authors' synthetic code (HelloSeeing/DynGAN): delta 0.2, ema
0.1, detection every 500 and partitioning every 3000 iterations, at most 30
partitions, a split when 1% of the data is collapsed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ganrun import loggers
from ganrun.errors import UserError
from ganrun.losses import real_probability
from ganrun.ranges import above, at_least, between
from ganrun.regularizers.base import REGULARIZERS, Regularizer
from ganrun.samples import evaluating, generate, noise

log = logging.getLogger("ganrun")


def weighted_kmeans(features: Tensor, labels: Tensor, scores: Tensor, k: int,
                    iterations: int = 100, tol: float = 1e-4) -> Tensor:
    """k-means from the partitions `labels` (centres: their members' means), with
    each sample's Euclidean distance to its starting partition times its score.
    Returns the new labels; a partition left empty keeps its centre."""
    features = features.float()
    centres = _means(features, labels, k, features.new_zeros(k, features.shape[1]))
    rows = torch.arange(features.shape[0], device=features.device)
    weight = torch.ones(features.shape[0], k, device=features.device)
    weight[rows, labels] = scores.float()
    for _ in range(iterations):
        assigned = (torch.cdist(features, centres) * weight).argmin(1)
        moved = _means(features, assigned, k, centres)
        shift = float((moved - centres).norm())
        centres = moved
        if shift < tol:
            break
    return (torch.cdist(features, centres) * weight).argmin(1)


def _means(features: Tensor, labels: Tensor, k: int, fallback: Tensor) -> Tensor:
    sums = features.new_zeros(k, features.shape[1]).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=k).unsqueeze(1).to(features.dtype)
    return torch.where(counts > 0, sums / counts.clamp(min=1), fallback)


@REGULARIZERS.register
class DynGAN(Regularizer):
    name = "dyngan"
    acts_on_d = True
    excludes = ("pacgan", "experience_replay")
    excludes_why = "DynGAN judges single samples with their partitions"
    answers = ("mode_collapse",)
    conditions = 30  # G and D are built conditional on max_partitions partitions
    label_kind = "partitions"
    trait_keys = {"conditions": "max_partitions"}

    @dataclass
    class Config:
        delta: float = above(0)
        ema: float = between(0, 1)
        detect_every: int | None = at_least(1)
        partition_every: int | None = at_least(1)
        min_collapsed: float = between(0, 1)
        max_partitions: int = at_least(2)
        kmeans_iterations: int = at_least(1)

    @staticmethod
    def check(params, cfg) -> None:
        if (params.detect_every is None) != (params.partition_every is None):
            raise UserError("regularizer.dyngan: set both detect_every and partition_every, or "
                            "neither (null: 1/60 and 1/10 of train.steps)")
        if params.detect_every is not None and params.partition_every % params.detect_every:
            raise UserError(f"regularizer.dyngan.partition_every={params.partition_every} must "
                            f"be a multiple of detect_every={params.detect_every} (partitions "
                            "are made from a detection)")
        if cfg.model.conditional:
            raise UserError("regularizer dyngan conditions G and D on its partitions: it "
                            "cannot be combined with model.conditional=true")

    def __init__(self, delta: float = 0.2, ema: float = 0.1, detect_every: int | None = 500,
                 partition_every: int | None = 3000, min_collapsed: float = 0.01,
                 max_partitions: int = 30, kmeans_iterations: int = 100,
                 total_steps: int = 30_000):
        self.delta, self.ema = delta, ema
        if detect_every is None:  # the authors' schedule, scaled: 500 and 3000 of 30,000
            detect_every = max(1, total_steps // 60)
            partition_every = 6 * detect_every
        self.detect_every, self.partition_every = detect_every, partition_every
        # Scores start at 0: n detections raise one to at most 1 - (1 - ema)^n.
        detections = total_steps // detect_every
        reachable = 1.0 - (1.0 - ema) ** detections
        if reachable <= 1.0 / (1.0 + delta):
            log.warning("dyngan: %d detections in train.steps=%d raise a score to at most %.3f, "
                        "not above 1/(1+delta) = %.3f: no sample can be marked collapsed and "
                        "DynGAN stays a plain GAN; lower detect_every or set detect_every and "
                        "partition_every to null (the authors' schedule scaled to the budget)",
                        detections, total_steps, reachable, 1.0 / (1.0 + delta))
        self.min_collapsed, self.max_partitions = min_collapsed, max_partitions
        self.kmeans_iterations = kmeans_iterations
        self.conditions = max_partitions  # G and D are built conditional on this many
        self.scores: Tensor | None = None  # (N,) per real sample
        self.partition: Tensor | None = None  # (N,) partition index per real sample
        self.prior: Tensor | None = None  # (max_partitions,) each partition's share
        self.partitions = 1
        self.collapsed_share = 0.0
        self.splits: list[dict] = []  # when partitions were made, for metrics.json

    @property
    def threshold(self) -> float:
        return 1.0 / (1.0 + self.delta)

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        # The projection of a partition D has not seen yet starts at zero: a new
        # partition begins as D's unconditional view, not as a random direction.
        nn.init.zeros_(D.embed.weight)

    def attach(self, module) -> None:
        """Per-sample state for the training set, created once (or restored)."""
        self.bind(len(module.real_data()), module.device)

    def bind(self, n: int, device) -> None:
        """Per-sample state for a dataset of n samples, created once (or restored)."""
        if self.scores is None:
            self.scores = torch.zeros(n, device=device)
            self.partition = torch.zeros(n, dtype=torch.long, device=device)
            self.prior = torch.zeros(self.max_partitions, device=device)
            self.prior[0] = 1.0
        else:
            self.scores, self.partition, self.prior = (
                t.to(device) for t in (self.scores, self.partition, self.prior))

    # --- what the training step asks -------------------------------------------------

    def real_labels(self, index: Tensor) -> Tensor:
        return self.partition[index]

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Partitions of n generated samples, drawn from the prior (on the CPU with a
        `generator` of the CPU: fixed-noise grids)."""
        prior = self.prior if generator is None else self.prior.cpu()
        return torch.multinomial(prior, n, replacement=True, generator=generator)

    # --- detection and partitioning ---------------------------------------------------

    def detect(self, probability: Tensor) -> Tensor:
        """Fold D's probabilities on every real sample into the scores; the collapsed
        mask (N,)."""
        self.scores.lerp_(probability.to(self.scores), self.ema)
        collapsed = self.scores > self.threshold
        self.collapsed_share = float(collapsed.float().mean())
        return collapsed

    def split(self, collapsed: Tensor, features: Tensor) -> bool:
        """New partitions from the collapsed samples, refined by k-means on D's
        `features` (N, F); the prior becomes each partition's share. False when the
        rule says not to split (too few collapsed, or no partition left)."""
        if self.collapsed_share < self.min_collapsed or self.partitions >= self.max_partitions:
            return False
        labels = self.partition.clone()
        for old in range(self.partitions):
            moving = collapsed & (self.partition == old)
            if moving.any():
                labels[moving] = min(self.partitions, self.max_partitions - 1)
                self.partitions = min(self.partitions + 1, self.max_partitions)
        self.partition = weighted_kmeans(features, labels, self.scores, self.partitions,
                                         self.kmeans_iterations)
        counts = torch.bincount(self.partition, minlength=self.max_partitions).float()
        self.prior = counts / counts.sum()
        return True

    def summary(self) -> dict:
        """metrics.json's `dyngan`: the partitions, their prior and every split."""
        if self.prior is None:
            return {}
        return {"partitions": self.partitions, "collapsed_share": self.collapsed_share,
                "prior": [round(p, 6) for p in self.prior[:self.partitions].tolist()],
                "splits": self.splits}

    def state_dict(self) -> dict:
        return {"scores": self.scores, "partition": self.partition, "prior": self.prior,
                "partitions": self.partitions, "collapsed_share": self.collapsed_share,
                "splits": self.splits}

    def load_state_dict(self, state: dict) -> None:
        self.scores, self.partition, self.prior = state["scores"], state["partition"], state["prior"]
        self.partitions, self.collapsed_share = state["partitions"], state["collapsed_share"]
        self.splits = list(state.get("splits", []))

    # --- in the run: called by the module after each generator step --------------------

    @torch.no_grad()
    def after_step(self, module) -> None:
        step = module.g_steps
        if step % self.detect_every:
            return
        real_out, features = _judge_all(module, self.partition)
        fake_out = None
        if not module.probability_outputs:  # critic values: ranked against generated ones
            fake_out = _judge_generated(module, step)
        collapsed = self.detect(real_probability(real_out, fake_out,
                                                     module.probability_outputs))
        split = step % self.partition_every == 0 and self.split(collapsed, features)
        if split:
            self.splits.append({"step": step, "partitions": self.partitions,
                                "collapsed_share": round(self.collapsed_share, 6)})
        if module.trainer is not None and module.trainer.is_global_zero:
            loggers.scalars(module.trainer, {"dyngan/partitions": self.partitions,
                                             "dyngan/collapsed_share": self.collapsed_share},
                            step)
            if split:
                log.info("dyngan: step %d: %.1f%% of the real samples collapsed; %d partitions, "
                         "prior %s", step, 100 * self.collapsed_share, self.partitions,
                         " ".join(f"{p:.3f}" for p in self.prior[:self.partitions].tolist()))


def _judge_all(module, partition: Tensor, batch: int = 4096) -> tuple[Tensor, Tensor]:
    """D's outputs and features on every real sample (as training sees it), each with
    its partition, D in eval mode."""
    data = module.real_data()
    outs, feats = [], []
    with evaluating(module.D) as D:
        for first in range(0, data.shape[0], batch):
            x = module.as_d_input(data[first:first + batch].to(module.device))
            out, feat = D(x, partition[first:first + batch], with_features=True)
            outs.append(out)
            feats.append(feat)
    return torch.cat(outs), torch.cat(feats)


def _judge_generated(module, step: int, n: int = 4096) -> Tensor:
    """D's outputs on n generated samples (noise of its own, fixed by seed and step)."""
    devices = [module.device] if module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(module.cfg.seed * 100_003 + step + 7)
        batches = noise(module, n)
    outs = []
    with evaluating(module.D) as D:
        for z, labels in batches:
            outs.append(D(module.as_d_input(generate(module, z, labels)), labels))
    return torch.cat(outs)
