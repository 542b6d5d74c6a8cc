"""Fréchet Inception Distance (Heusel et al. 2017): torch-fidelity's statistics and
distance, the real side's mean and covariance cached with its features."""

from __future__ import annotations

from ganrun.metrics.registry import METRICS, Metric


@METRICS.register
class FID(Metric):
    name = "fid"
    outputs = {"fid": "lower"}
    quality = {"fid": ("kid", "precision", "recall", "ppl")}

    def real_terms(self, real, n_fake, counts):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        return {"fid_stats": lambda: engine.fid_statistics(real)}

    def compute(self, samples):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        return {"fid": engine.fid(engine.fid_statistics(samples.fake), samples.terms["fid_stats"])}

    def working_set(self, n_fake, n_real, dim):
        # torch-fidelity's statistics: the features in float64, centred; the covariance
        return 16.0 * max(n_fake, n_real) * dim + 8.0 * dim * dim
