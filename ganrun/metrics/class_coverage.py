"""Class coverage: how many of the dataset's classes the classifier finds among the
generated samples, and KL(predicted class histogram || uniform)."""

from __future__ import annotations

from ganrun.metrics.registry import METRICS, Metric


@METRICS.register
class ClassCoverage(Metric):
    name = "class_coverage"
    outputs = {"classes_covered": "higher", "class_kl": "lower"}
    quality = {"classes_covered": ("class_kl",)}
    reads = "logits"
    sides = ()  # it counts samples: no minimum

    def skipped(self, extractor, dataset=None):
        if extractor != "classifier":
            return "needs the classifier extractor (labelled images)"
        return None

    def compute(self, samples):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        covered, kl = engine.class_coverage(samples.logits, samples.dataset.num_classes,
                                            self.cfg.class_min_share)
        return {"classes_covered": covered, "class_kl": kl}
