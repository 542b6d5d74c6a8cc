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
