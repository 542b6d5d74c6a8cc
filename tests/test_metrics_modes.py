"""Mode metrics on the 2-D mixtures against points whose answer is known."""

from __future__ import annotations

import math

import torch
from omegaconf import OmegaConf

from ganrun.data import load_dataset, mixture_centres
from ganrun.metrics import mode_metrics

RING = OmegaConf.create({"name": "ring8", "n_samples": 4000, "radius": 2.0, "std": 0.02})
GRID = OmegaConf.create({"name": "grid25", "n_samples": 5000, "spacing": 2.0, "std": 0.05})


def test_points_from_the_ring_modes_cover_all_eight():
    real = load_dataset(RING).data
    result = mode_metrics(real, mixture_centres(RING), RING.std)
    assert result["modes"] == 8
    # A 2-D isotropic Gaussian puts 1 - exp(-3^2 / 2) = 98.89% within 3 std (Euclidean).
    assert abs(result["high_quality"] - (1 - math.exp(-4.5))) < 0.004
    assert result["reverse_kl"] < 0.01
    at_centres = mixture_centres(RING).repeat(50, 1)
    exact = mode_metrics(at_centres, mixture_centres(RING), RING.std)
    assert exact == {"modes": 8, "high_quality": 1.0, "reverse_kl": 0.0}


def test_points_from_one_mode_cover_one():
    centres = mixture_centres(RING)
    one = centres[3] + 0.02 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    result = mode_metrics(one, centres, RING.std)
    assert result["modes"] == 1
    assert result["high_quality"] > 0.98
    assert abs(result["reverse_kl"] - math.log(8)) < 1e-9  # all mass on one of 8 modes


def test_uniform_points_are_mostly_low_quality():
    uniform = torch.rand(5000, 2, generator=torch.Generator().manual_seed(0)) * 6 - 3
    assert mode_metrics(uniform, mixture_centres(RING), RING.std)["high_quality"] < 0.2
    grid = mode_metrics(torch.rand(5000, 2) * 10 - 5, mixture_centres(GRID), GRID.std)
    assert grid["high_quality"] < 0.2


def test_grid25_real_points_and_a_collapsed_half():
    real = load_dataset(GRID).data
    centres = mixture_centres(GRID)
    assert mode_metrics(real, centres, GRID.std)["modes"] == 25
    half = real[real[:, 0] < 0.5]  # the left three columns: 15 modes
    result = mode_metrics(half, centres, GRID.std)
    assert result["modes"] == 15
    assert abs(result["reverse_kl"] - math.log(25 / 15)) < 0.02


def test_no_high_quality_sample_gives_infinite_kl():
    far = torch.full((10, 2), 50.0)
    result = mode_metrics(far, mixture_centres(RING), RING.std)
    assert result == {"modes": 0, "high_quality": 0.0, "reverse_kl": math.inf}


def test_the_papers_rules_count_differently_on_one_sample_set():
    """Three modes of the ring: 100 points exactly on mode 0, one on mode 1, and 20
    points at 2 std from mode 2 (high quality under 3 std, not under DynGAN's 1 std),
    plus 79 far away (low quality, nearest to mode 4)."""
    centres = mixture_centres(RING)
    std = RING.std
    offset = torch.tensor([2 * std, 0.0], dtype=torch.float64)
    far = centres[4].double() * 3  # radius 6: low quality, nearest to mode 4
    points = torch.cat([centres[0].double().repeat(100, 1), centres[1].double().view(1, 2),
                        (centres[2].double() + offset).repeat(20, 1), far.repeat(79, 1)])
    n, k = 200, 8
    # ganrun's default: covered with >= 0.2 * n / k = 5 high-quality points: modes 0, 2.
    default = mode_metrics(points, centres, std)
    assert default["modes"] == 2 and default["high_quality"] == 121 / n
    q = torch.tensor([100, 1, 20], dtype=torch.float64) / 121
    assert abs(default["reverse_kl"] - float((q * (q * k).log()).sum())) < 1e-12
    # VEEGAN / PacGAN: >= 1 high-quality sample: modes 0, 1, 2.
    assert mode_metrics(points, centres, std, min_count=1)["modes"] == 3
    # DynGAN: within 1 std, >= 1 sample, every sample in the KL histogram (mode 4 gets 79).
    dyn = mode_metrics(points, centres, std, threshold=1.0, min_count=1, kl="all")
    assert dyn["modes"] == 2 and dyn["high_quality"] == 101 / n
    q = torch.tensor([100, 1, 20, 79], dtype=torch.float64) / n
    assert abs(dyn["reverse_kl"] - float((q * (q * k).log()).sum())) < 1e-12
