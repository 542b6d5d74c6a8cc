"""Exact mode metrics on the 2-D mixtures, as in Unrolled GAN, VEEGAN and PacGAN.

Each generated point is assigned to its nearest mode centre; it is high quality
when it lies within 3 standard deviations of that centre. A mode is covered when
it holds at least `min_share` of the high-quality samples a uniform generator
would put there (PacGAN: at least 20 of the expected 100, i.e. 0.2). Reverse KL
is KL(q || uniform) for q the histogram of high-quality samples over modes.

"Within 3 std" is a distance in the plane, as in PacGAN's code (Mahalanobis
distance under 3). A 2-D Gaussian puts 1 - exp(-9/2) = 98.9% of its mass there,
not the 1-D rule's 99.7%: samples of the true mixture score about 98.9%, points
exactly on the centres 100%.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mode_metrics(points: Tensor, centres: Tensor, std: float, min_share: float = 0.2) -> dict:
    """{"modes": covered modes, "high_quality": share of points within 3 std of a mode,
    "reverse_kl": KL(mode histogram || uniform)} for `points` (N, 2)."""
    points, centres = points.double().cpu(), centres.double().cpu()
    n, k = points.shape[0], centres.shape[0]
    distance, nearest = torch.cdist(points, centres).min(dim=1)
    good = distance <= 3 * std
    counts = torch.bincount(nearest[good], minlength=k).double()
    covered = int((counts >= min_share * n / k).sum())
    total = counts.sum()
    if total == 0:
        reverse_kl = math.inf
    else:
        q = counts[counts > 0] / total
        reverse_kl = float((q * (q * k).log()).sum())
    return {"modes": covered, "high_quality": float(good.double().mean()),
            "reverse_kl": reverse_kl}
