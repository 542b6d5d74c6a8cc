"""Kernel Inception Distance (Binkowski et al. 2018): torch-fidelity's estimator step
for step (ganrun.metrics.engine), its real-real kernel sums cached for each count of
generated samples. Its subsets shrink, with a warning, to the samples there are."""

from __future__ import annotations

from ganrun.errors import UserError
from ganrun.metrics.registry import METRICS, Metric


@METRICS.register
class KID(Metric):
    name = "kid"
    outputs = {"kid": "lower", "kid_std": None}
    quality = {"kid": ("fid", "precision", "recall", "ppl")}
    counted = "kid_subset_size"

    def check(self):
        if self.cfg.kid_subset_size < self.minimum():
            raise UserError(f"metrics.kid_subset_size={self.cfg.kid_subset_size}: KID needs "
                            f"subsets of at least {self.minimum()} samples")

    def count(self, n_fake, n_real):
        size = self.cfg.kid_subset_size
        available = min(n for n in (n_fake, n_real) if n is not None)
        if available >= size:
            return size, None
        return available, (f"kid: subsets of {available} samples, not kid_subset_size={size} "
                           f"(only {available} on one side)")

    def _key(self, n_fake: int, n_real: int, counts) -> tuple[str, int]:
        """Its subsets depend on both counts: the cache key of their real terms."""
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        size = engine.kid_size(counts.kid_subset_size, n_fake, n_real)
        return f"kid_n{n_fake}_s{self.cfg.kid_subsets}_m{size}", size

    def real_terms(self, real, n_fake, counts):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        key, size = self._key(n_fake, len(real), counts)
        return {key: lambda: engine.kid_real_terms(
            real, engine.kid_draws(n_fake, len(real), self.cfg.kid_subsets, size))}

    def compute(self, samples):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        fake, real = samples.fake, samples.real
        terms = samples.terms[self._key(len(fake), len(real), samples.counts)[0]]
        kid, std = engine.kid(fake, real, self.cfg.kid_subsets, samples.counts.kid_subset_size,
                              terms)
        return {"kid": kid, "kid_std": std}

    def working_set(self, n_fake, n_real, dim):
        # a subset's draw (numpy permutes all n_fake indices), its kernel matrices (float32)
        m = self.cfg.kid_subset_size
        return 8.0 * max(n_fake, n_real) + 4.0 * dim * m + 12.0 * m * m
