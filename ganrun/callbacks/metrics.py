"""Metrics every `every` generator steps and at the end: FID, KID, IS, precision /
recall, density / coverage, class and mode coverage, as `metrics.*` configures
them, of the generator that samples (module.sampler). Under DDP each process generates and extracts the
features of its share of the samples; torchmetrics gathers them and process 0
scores the whole set. The noise depends on (seed, step) alone: the same samples
with any number of processes (with n_fake >= 500 x processes, the very same
batches through G), and the same training run whether metrics are on or off."""

from __future__ import annotations

import logging
import time

import torch

from ganrun import loggers
from ganrun.callbacks.base import EveryNSteps, run_dir, share_buffers
from ganrun.metrics.registry import METRICS
from ganrun.metrics.state import GeneratedFeatures
from ganrun.outputs import METRICS_LOG, append_jsonl
from ganrun.samples import generate, save_png
from ganrun.samples import noise as sample_noise

log = logging.getLogger("ganrun")

BATCH = 500  # samples generated at a time
PPL_STREAM = 7919  # PPL's latent pairs: a stream of their own, apart from the samples'


def evaluation_seed(seed: int, step: int) -> int:
    return seed * 100_003 + step


def shares(n: int, world: int, batch: int = BATCH) -> list[tuple[int, int]]:
    """The evaluation's batches (first, count) in sample order: `batch` at a time, or
    smaller when there would be fewer batches than processes; process r takes batches
    r, r + W, ... The noise is drawn 500 at a time whatever the batches."""
    size = min(batch, -(-n // world))
    return [(first, min(size, n - first)) for first in range(0, n, size)]


@torch.no_grad()
def measure(module, evaluator, state: GeneratedFeatures, n: int, seed: int, step: int,
            rank: int = 0, world: int = 1) -> dict[str, float]:
    """Generate this process's share of the n samples of evaluation (seed, step), add
    their features to `state` and return the scores (on process 0)."""
    devices = [module.device] if module.device.type == "cuda" else []
    batches = shares(n, world)
    # Noise of its own, fixed by seed and step: every process draws all of it (cheap)
    # and generates its own batches, so the samples do not depend on the process count.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(evaluation_seed(seed, step))
        noise = sample_noise(module, n, BATCH)
    z = torch.cat([z for z, _ in noise])
    labels = torch.cat([y for _, y in noise]) if module.num_classes else None
    for first, count in batches[rank::world]:
        rows = slice(first, first + count)
        fake = generate(module, z[rows], labels[rows] if labels is not None else None)
        state.update(first, evaluator.features(fake))
    results = state.compute()
    state.reset()
    if rank == 0 and evaluator.ppl_distance is not None:  # process 0 alone: few samples
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(evaluation_seed(seed, step) + PPL_STREAM)
            results["ppl"] = evaluator.path_length(module)
    return results


class Metrics(EveryNSteps):
    def __init__(self, every: int):
        super().__init__(every)
        self.evaluator = self.state = None
        self.last: dict[str, float] = {}  # the last scores: metrics.json's "metrics"
        self.measured_at = -1

    def setup(self, trainer, pl_module, stage: str) -> None:
        """The evaluator (feature extractor, cached real statistics): process 0 builds it
        first (training the classifier if it is not cached), then the others load it."""
        cfg = pl_module.cfg
        if not cfg.metrics.names or self.evaluator is not None:
            return
        from ganrun.metrics.evaluator import READING, Evaluator

        def build():
            with torch.random.fork_rng(devices=[]):  # a cached classifier or not: same run
                return Evaluator(cfg.metrics, trainer.datamodule.dataset, cfg.dataset,
                                 with_real=trainer.is_global_zero)

        if trainer.is_global_zero:
            self.evaluator = build()
        trainer.strategy.barrier("ganrun.evaluator")
        if not trainer.is_global_zero:
            self.evaluator = build()
        self.state = GeneratedFeatures(self.evaluator.scores, tuple(
            READING + name for name in self.evaluator.readers))

    def summary(self) -> dict:
        return {"metrics": self.last}  # metrics.json's `metrics`: the last scores

    def hparams_metrics(self) -> list[str]:
        """The TensorBoard scalars of the metrics this run measures: those of
        metrics.names that apply to its data and extractor (HParams' columns): the
        outputs that rank runs, not their spreads (kid_std)."""
        if self.evaluator is None:
            return []
        skipped = self.evaluator.skipped
        return [f"metrics/{output}" for name in self.evaluator.cfg.names if name not in skipped
                for output in METRICS[name].ranked()]

    def due(self, module) -> bool:
        return self.evaluator is not None and super().due(module)

    def act(self, trainer, module, step: int) -> None:
        if step == self.measured_at:
            return
        self.measured_at = step
        started = time.perf_counter()
        share_buffers(trainer, module)
        self.state.to(module.device)
        self.evaluator.to(module.device)
        results = measure(module, self.evaluator, self.state, module.cfg.metrics.n_fake,
                          module.cfg.seed, step, trainer.global_rank, trainer.world_size)
        if not trainer.is_global_zero:
            return
        self.last = results
        loggers.scalars(trainer, {f"metrics/{k}": v for k, v in results.items()}, step)
        record = {"step": step, "images_seen": module.images_seen,
                  **self.evaluator.protocol, "seconds": round(time.perf_counter() - started, 3),
                  "metrics": results}
        append_jsonl(run_dir(trainer) / METRICS_LOG, record)
        for name, picture in self.evaluator.pictures().items():  # a histogram of modes...
            path = run_dir(trainer) / "samples" / f"{name}_step_{step:07d}.png"
            save_png(picture, path)
            loggers.picture(trainer, f"metrics/{name}", picture, step, path)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in results.items())
        log.info("metrics at step %d (%s): %s", step, self.evaluator.extractor_id, shown)
