"""Density and coverage (Naeem et al. 2020): balls around the real samples, their
radii cached with the real features."""

from __future__ import annotations

from ganrun.metrics.registry import METRICS, Metric


@METRICS.register
class DensityCoverage(Metric):
    name = "dc"
    outputs = {"density": "higher", "coverage": "higher"}
    neighbours = "dc_k"

    def real_terms(self, real, n_fake, counts):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        k = self.cfg.dc_k
        return {f"dc_k{k}": lambda: engine.dc_radii(real, k)}

    def compute(self, samples):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        k = self.cfg.dc_k
        density, coverage = engine.density_coverage(samples.fake, samples.real, k,
                                                    samples.terms[f"dc_k{k}"])
        return {"density": density, "coverage": coverage}

    def working_set(self, n_fake, n_real, dim):
        from ganrun.metrics import engine  # torch-fidelity: only when computing

        copies = 8.0 * (n_fake + n_real) * dim  # both sides in float64
        radii = 16.0 * min(engine.DC_BLOCK, n_real) * n_real  # real k-NN radii (pieces, join)
        balls = 17.0 * min(engine.DC_BLOCK, n_real) * n_fake  # a block of real rows x fakes
        return copies + max(radii, balls)
