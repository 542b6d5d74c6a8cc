"""Metrics from features. FID, KID, IS and precision/recall are torch-fidelity's own
functions, called on features we extract once; density/coverage (Naeem et al.
2020) and class coverage, which torch-fidelity lacks, are written out here.

Convention (torch-fidelity's): the first set is generated, the second real.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric


def fid_statistics(features: Tensor) -> dict:
    """Mean and covariance, as torch-fidelity computes them (from float32 features)."""
    return fid_features_to_statistics(features.float().cpu())


def fid(fake_stats: dict, real_stats: dict) -> float:
    return fid_statistics_to_metric(fake_stats, real_stats, verbose=False)[
        "frechet_inception_distance"]


def kid(fake: Tensor, real: Tensor, subsets: int, subset_size: int) -> tuple[float, float]:
    out = kid_features_to_metric(fake.cpu(), real.cpu(), kid_subsets=subsets,
                                 kid_subset_size=min(subset_size, len(fake), len(real)),
                                 verbose=False)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    out = isc_features_to_metric(logits.cpu(), splits=splits)
    return out["inception_score_mean"], out["inception_score_std"]


def precision_recall(fake: Tensor, real: Tensor, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019 with k-NN balls (torch-fidelity's implementation)."""
    out = prc_features_to_metric(fake.cpu(), real.cpu(), prc_neighborhood=k,
                                 prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    return out["precision"], out["recall"]


def density_coverage(fake: Tensor, real: Tensor, k: int) -> tuple[float, float]:
    """Naeem et al. 2020: around each real sample a ball to its k-th nearest real
    neighbour; density = mean number of balls a fake falls in, divided by k;
    coverage = share of real balls holding at least one fake."""
    fake, real = fake.double().cpu(), real.double().cpu()
    radius = torch.cdist(real, real).kthvalue(k + 1, dim=1).values  # +1: itself at 0
    inside = torch.cdist(real, fake) <= radius[:, None]
    density = inside.sum().item() / (k * fake.shape[0])
    coverage = inside.any(dim=1).double().mean().item()
    return density, coverage


def class_coverage(logits: Tensor, num_classes: int, min_share: float) -> tuple[int, float]:
    """Classes predicted for at least `min_share` of a uniform share of the samples,
    and KL(predicted class histogram || uniform)."""
    predicted = logits.argmax(dim=1).cpu()
    share = torch.bincount(predicted, minlength=num_classes).double() / predicted.numel()
    covered = int((share >= min_share / num_classes).sum())
    q = share[share > 0]
    return covered, float((q * (q * num_classes).log()).sum()) if q.numel() else math.inf
