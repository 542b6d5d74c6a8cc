"""Inception Score (Salimans et al. 2016) of the generated samples' class logits:
torch-fidelity's. It uses fewer splits, with a warning, where a split would hold
fewer than its minimum of samples."""

from __future__ import annotations

from ganrun.metrics.registry import METRICS, Metric


@METRICS.register
class InceptionScore(Metric):
    name = "is"
    outputs = {"is": "higher", "is_std": None}
    quality = {"is": ("is_std", "classes_covered")}
    reads = "logits"
    sides = ("fake",)
    counted = "is_splits"

    def count(self, n_fake, n_real):
        splits = self.cfg.is_splits
        if n_fake >= splits * self.minimum():
            return splits, None
        fewer = n_fake // self.minimum()
        return fewer, (f"is: {fewer} splits, not is_splits={splits} (each split keeps at "
                       f"least {self.minimum()} of {n_fake} samples)")

    def compute(self, samples):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        score, std = engine.inception_score(samples.logits, samples.counts.is_splits)
        return {"is": score, "is_std": std}
