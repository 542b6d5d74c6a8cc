"""Exact mode metrics on the 2-D mixtures, as in Unrolled GAN, VEEGAN, PacGAN and DynGAN.

Each generated point is assigned to its nearest mode centre; it is high quality
when it lies within `threshold` standard deviations of that centre, a distance in
the plane as in PacGAN's code (Mahalanobis distance under 3 for an isotropic
mode). A 2-D Gaussian puts 1 - exp(-t^2/2) of its mass within t std: 98.9% for
t = 3 (not the 1-D rule's 99.7%), 39.3% for t = 1.

The papers differ, so each rule is a parameter (metrics.modes_*):

| rule                 | VEEGAN / PacGAN (code)     | DynGAN (code)          | ganrun default       |
| high quality         | within 3 std               | within 1 std           | within 3 std         |
| mode covered         | >= 1 high-quality sample   | >= 1 within 1 std      | >= 20% of a uniform  |
|                      |                            |                        | generator's share    |
| reverse KL histogram | high-quality samples only  | every sample, nearest  | high-quality only    |
| generated samples    | 2,500                      | 10,000                 | metrics.n_fake       |

Reverse KL is KL(q || uniform over the modes), q the histogram of samples over
modes; it is infinite when no sample counts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ganrun.metrics.registry import METRICS, Metric

if TYPE_CHECKING:
    from torch import Tensor

KL_HISTOGRAMS = ("high_quality", "all")


def mode_metrics(points: Tensor, centres: Tensor, std: float, threshold: float = 3.0,
                 min_count: int | None = None, min_share: float = 0.2,
                 kl: str = "high_quality") -> dict:
    """{"modes": covered modes, "high_quality": share of points within `threshold` std
    of their nearest mode, "reverse_kl": KL(mode histogram || uniform)} for `points`
    (N, 2). A mode is covered when it holds at least `min_count` high-quality points,
    or, with `min_count` None, at least `min_share` of the n / K a uniform generator
    would put there. `kl`: the histogram of the high-quality points, or of `all`."""
    import torch

    points, centres = points.double().cpu(), centres.double().cpu()
    n, k = points.shape[0], centres.shape[0]
    distance, nearest = torch.cdist(points, centres).min(dim=1)
    good = distance <= threshold * std
    counts = torch.bincount(nearest[good], minlength=k).double()
    needed = min_count if min_count is not None else min_share * n / k
    covered = int((counts >= needed).sum())
    histogram = counts if kl == "high_quality" else torch.bincount(nearest, minlength=k).double()
    total = histogram.sum()
    if total == 0:
        reverse_kl = math.inf
    else:
        q = histogram[histogram > 0] / total
        reverse_kl = float((q * (q * k).log()).sum())
    return {"modes": covered, "high_quality": float(good.double().mean()),
            "reverse_kl": reverse_kl}


def mass_on_modes(points: Tensor, centres: Tensor, std: float, threshold: float = 3.0,
                  min_share: float = 0.2) -> dict:
    """Where a generator's mass lies, whatever its quality: every point counts for its
    nearest mode. {"held": modes holding at least `min_share` of a uniform generator's
    share, "effective": exp(entropy) of that histogram (K for a uniform one, 1 for one
    mode), "near": share of points within `threshold` std of their mode}.

    The health monitor's evidence (ganrun.callbacks.health): samples spread evenly
    between the modes hold every mode with few of them near one (blur); samples on a
    few modes hold few (mode collapse), near them or not."""
    import torch

    points, centres = points.double().cpu(), centres.double().cpu()
    k = centres.shape[0]
    distance, nearest = torch.cdist(points, centres).min(dim=1)
    share = torch.bincount(nearest, minlength=k).double() / max(points.shape[0], 1)
    q = share[share > 0]
    return {"held": int((share >= min_share / k).sum()),
            "effective": float(torch.exp(-(q * q.log()).sum())),
            "near": float((distance <= threshold * std).double().mean())}


@METRICS.register
class Modes(Metric):
    """The mode metrics of the evaluation's samples, by the rules metrics.modes_*."""

    name = "modes"
    outputs = {"modes": "higher", "high_quality": "higher", "reverse_kl": "lower"}
    quality = {"modes": ("high_quality", "reverse_kl")}
    reads = "points"
    sides = ()  # it counts samples: no minimum

    def record(self) -> dict:
        return self.rules

    @property
    def rules(self) -> dict:
        """How it counts: the paper a preset follows."""
        cfg = self.cfg
        return {"threshold": cfg.modes_threshold, "min_count": cfg.modes_min_count,
                "min_share": cfg.modes_min_share, "kl": cfg.modes_kl}

    def compute(self, samples):
        if samples.dataset_cfg is None:  # no mixture to find the modes of
            return {}
        from ganrun.data import mixture_centres

        cfg = samples.dataset_cfg
        return mode_metrics(samples.fake, mixture_centres(cfg), cfg.std, **self.rules)
