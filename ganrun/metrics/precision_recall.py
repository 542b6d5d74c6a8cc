"""Precision and recall with k-NN balls (Kynkäänniemi et al. 2019): torch-fidelity's
sums, the real balls' radii cached with the real features."""

from __future__ import annotations

from ganrun.metrics.registry import METRICS, Metric


@METRICS.register
class PrecisionRecall(Metric):
    name = "pr"
    outputs = {"precision": "higher", "recall": "higher"}
    neighbours = "pr_k"

    def real_terms(self, real, n_fake, counts):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        k = self.cfg.pr_k
        return {f"pr_k{k}": lambda: engine.knn_radii(real.float(), k)}

    def compute(self, samples):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        k = self.cfg.pr_k
        precision, recall = engine.precision_recall(samples.fake, samples.real, k,
                                                    samples.terms[f"pr_k{k}"])
        return {"precision": precision, "recall": recall}

    def working_set(self, n_fake, n_real, dim):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        def radii(n):  # k-NN radii: a block of rows against all, its pieces and their join
            return 8.0 * min(engine.PR_BLOCK, n) * n

        # the real-fake distances (pieces and join) and the two comparisons against radii
        pairs = 8.0 * n_real * n_fake + 2.0 * n_real * n_fake
        return max(radii(n_real), pairs / 2 + radii(n_fake), pairs)
