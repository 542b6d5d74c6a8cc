"""Perceptual path length (Karras et al. 2019) as a registered metric; its machinery
(latent interpolation, the LPIPS and feature distances) is in ganrun.metrics.ppl."""

from __future__ import annotations

from ganrun.errors import UserError
from ganrun.metrics.registry import METRICS, Metric

MIN_PAIRS = 100  # latent pairs: its 1%/99% trimming needs at least this many


@METRICS.register
class PPL(Metric):
    name = "ppl"
    outputs = {"ppl": "lower"}
    reads = "generator"  # latent interpolations: the metrics callback measures it
    sides = ()

    def check(self):
        if self.cfg.ppl_samples < MIN_PAIRS:
            raise UserError(f"metrics.ppl_samples={self.cfg.ppl_samples}: ppl needs at least "
                            f"{MIN_PAIRS} latent pairs (its 1%/99% trimming)")

    def compute(self, module, distance) -> dict[str, float]:
        """PPL of a GANModule's generator under `distance`, from the global random
        stream (the caller seeds it)."""
        from ganrun.metrics.ppl import perceptual_path_length

        cfg = self.cfg
        return {"ppl": perceptual_path_length(module, distance, cfg.ppl_samples, cfg.ppl_epsilon,
                                              cfg.ppl_sampling)}
