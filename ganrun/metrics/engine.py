"""Metrics from features. FID and IS are torch-fidelity's own functions, called on
features we extract once. KID and precision/recall repeat torch-fidelity's
estimators (the same subsets, k-NN balls and distances), so that their real-only
parts (KID's real-real kernel sums, the real k-NN radii) can be cached with the
real features; their results are torch-fidelity's bit for bit (tests check it).
Density/coverage (Naeem et al. 2020) and class coverage, which torch-fidelity
lacks, are written out here.

Convention (torch-fidelity's): the first set is generated, the second real.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kernel_poly

PR_BLOCK = 10000  # torch-fidelity's default prc_batch_size
KID_SEED = 2020  # torch-fidelity's default rng_seed
DC_BLOCK = 4096  # rows at a time for density/coverage (float64 distances)


def fid_statistics(features: Tensor) -> dict:
    """Mean and covariance, as torch-fidelity computes them (from float32 features)."""
    return fid_features_to_statistics(features.float().cpu())


def fid(fake_stats: dict, real_stats: dict) -> float:
    return fid_statistics_to_metric(fake_stats, real_stats, verbose=False)[
        "frechet_inception_distance"]


def kid_draws(n_fake: int, n_real: int, subsets: int, size: int) -> list[tuple]:
    """torch-fidelity's subsets: for each, `size` fakes then `size` reals, drawn without
    replacement from its fixed seed, so the draws depend only on the four counts."""
    rng = np.random.RandomState(KID_SEED)
    return [(rng.choice(n_fake, size, replace=False), rng.choice(n_real, size, replace=False))
            for _ in range(subsets)]


def _off_diagonal_sum(x: np.ndarray) -> np.float32:
    """Sum of torch-fidelity's kernel `kernel_poly(x, x)` off its diagonal, with the very
    operations of its `mmd2`, so the float32 result is bit for bit theirs."""
    k = kernel_poly(x, x)
    return (k.sum(axis=1) - np.diagonal(k)).sum()


def kid_real_terms(real: Tensor, draws: list[tuple]) -> np.ndarray:
    """The real side of each subset's MMD: a third of KID's work, cached with the real
    features for a given n_fake."""
    real = real.cpu().numpy()
    return np.array([_off_diagonal_sum(real[r]) for _, r in draws], dtype=np.float32)


def kid_size(subset_size: int, n_fake: int, n_real: int) -> int:
    return min(subset_size, n_fake, n_real)


def kid(fake: Tensor, real: Tensor, subsets: int, subset_size: int,
        real_terms: np.ndarray | None = None) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): mean and std over subsets of the
    unbiased MMD^2 with the cubic polynomial kernel. torch-fidelity's
    `kid_features_to_metric` step for step (its subsets, kernel and float32 sums), with
    the real side's terms passed in when cached."""
    m = kid_size(subset_size, len(fake), len(real))
    draws = kid_draws(len(fake), len(real), subsets, m)
    if real_terms is None:
        real_terms = kid_real_terms(real, draws)
    fake, real = fake.cpu().numpy(), real.cpu().numpy()
    mmds = np.zeros(subsets)
    for i, ((f, r), real_term) in enumerate(zip(draws, real_terms, strict=True)):
        subset = fake[f]
        cross = kernel_poly(subset, real[r]).sum(axis=0).sum()
        mmds[i] = (_off_diagonal_sum(subset) + real_term) / (m * (m - 1)) - 2 * cross / (m * m)
    return float(np.mean(mmds)), float(np.std(mmds))


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    out = isc_features_to_metric(logits.cpu(), splits=splits)
    return out["inception_score_mean"], out["inception_score_std"]


def _cdist(rows: Tensor, cols: Tensor, block: int = PR_BLOCK) -> Tensor:
    """Pairwise distances in blocks, in torch-fidelity's order of operations, so the
    comparisons below see the very numbers theirs do."""
    return torch.cat([torch.cat([torch.cdist(r, c) for c in cols.split(block)], dim=1)
                      for r in rows.split(block)])


def knn_radii(features: Tensor, k: int, block: int = PR_BLOCK) -> Tensor:
    """Distance from each sample to its k-th nearest other sample: the radius of its
    k-NN ball. This is the real side's share of precision/recall (float32, as
    torch-fidelity) and of density/coverage (float64), cached with the real features.
    Rows go `block` at a time, so 50k samples need a 10k x 50k matrix, not 50k x 50k."""
    # The (k+1)-th smallest (itself is at 0): the value torch-fidelity's kthvalue picks,
    # found by topk, several times faster on CPU.
    return torch.cat([_cdist(rows, features, block).topk(k + 1, dim=1, largest=False).values[:, k]
                      for rows in features.split(block)])


def precision_recall(fake: Tensor, real: Tensor, k: int,
                     real_radii: Tensor | None = None) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019 with k-NN balls: precision is the share of fakes inside
    some real ball, recall the share of reals inside some fake ball. The same sums as
    torch-fidelity's `prc_features_to_metric`, with the real radii passed in (cached)
    and the real-fake distances computed once for both."""
    fake, real = fake.float().cpu(), real.float().cpu()
    if real_radii is None:
        real_radii = knn_radii(real, k)
    real_to_fake = _cdist(real, fake)
    fake_to_real = real_to_fake.T
    recall = (real_to_fake <= knn_radii(fake, k)).any(dim=1).float().mean().item()
    precision = (fake_to_real <= real_radii).any(dim=1).float().mean().item()
    return precision, recall


def dc_radii(real: Tensor, k: int) -> Tensor:
    """The real k-NN radii of density/coverage, in float64."""
    return knn_radii(real.double().cpu(), k, DC_BLOCK)


def density_coverage(fake: Tensor, real: Tensor, k: int,
                     real_radii: Tensor | None = None) -> tuple[float, float]:
    """Naeem et al. 2020: around each real sample a ball to its k-th nearest real
    neighbour; density = mean number of balls a fake falls in, divided by k;
    coverage = share of real balls holding at least one fake."""
    fake, real = fake.double().cpu(), real.double().cpu()
    if real_radii is None:
        real_radii = dc_radii(real, k)
    inside, covered = 0, 0
    for rows, radii in zip(real.split(DC_BLOCK), real_radii.split(DC_BLOCK), strict=True):
        balls = _cdist(rows, fake, DC_BLOCK) <= radii[:, None]
        inside += balls.sum().item()
        covered += balls.any(dim=1).sum().item()
    return inside / (k * fake.shape[0]), covered / real.shape[0]


def class_coverage(logits: Tensor, num_classes: int, min_share: float) -> tuple[int, float]:
    """Classes predicted for at least `min_share` of a uniform share of the samples,
    and KL(predicted class histogram || uniform)."""
    predicted = logits.argmax(dim=1).cpu()
    share = torch.bincount(predicted, minlength=num_classes).double() / predicted.numel()
    covered = int((share >= min_share / num_classes).sum())
    q = share[share > 0]
    return covered, float((q * (q * num_classes).log()).sum()) if q.numel() else math.inf
