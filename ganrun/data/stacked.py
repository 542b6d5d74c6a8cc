"""Stacked data: three one-digit images drawn independently per sample, one per colour
channel, so 1000 modes (Stacked MNIST: VEEGAN, Srivastava et al. 2017, Table 2; PacGAN,
Lin et al. 2018, Tables 2 and 3; Unrolled GAN, Metz et al. 2017).

- `stacked_digits`: from scikit-learn's embedded digits (1,797 8x8 images), offline.
- `stacked_mnist`: from torchvision's MNIST files under dataset.root (no download
  unless dataset.download=true).

Each set is a fixed draw (the same in every run; PacGAN's Table 2 draws 128,000 once
too). A sample's label is its mode, 100 x the first channel's class + 10 x the
second's + the third's, and the dataset keeps its base (the one-digit set), whose
classifier reads a generated sample's mode channel by channel (the `stacked_modes`
metric, ganrun.metrics.stacked).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from omegaconf import MISSING

from ganrun.data.sources import DATA_SEED, Dataset, _digits, _torchvision, register
from ganrun.ranges import at_least, between

CHANNELS = 3
DIGITS = 10


@dataclass
class StackedConfig:
    name: str = MISSING
    image_size: int = at_least(4)
    channels: int = between(CHANNELS, CHANNELS)  # one digit per channel
    n_samples: int = at_least(1)
    batch_size: int = at_least(1)


@dataclass
class StackedFilesConfig(StackedConfig):
    root: str = MISSING
    download: bool = MISSING


def stack(base: Dataset, name: str, n: int, seed: int = DATA_SEED) -> Dataset:
    """n samples of `base` (one-channel images, ten classes) stacked three to a sample,
    each channel's image drawn independently from a stream fixed by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(base), (n, CHANNELS), generator=generator)
    images = base.data[index, 0]  # (n, 3, H, W): the image of index[:, c] in channel c
    modes = mode_of(base.labels[index])
    return Dataset(name, images.contiguous(), modes, num_classes=DIGITS**CHANNELS, base=base)


def mode_of(classes: torch.Tensor) -> torch.Tensor:
    """(N, 3) classes per channel -> (N,) modes: 100 x first + 10 x second + third."""
    weights = DIGITS ** torch.arange(classes.shape[1] - 1, -1, -1, device=classes.device)
    return (classes.long() * weights).sum(1)


def _stacked_digits(cfg) -> Dataset:
    base = _digits(SimpleNamespace(image_size=cfg.image_size, channels=1))
    return stack(base, "stacked_digits", cfg.n_samples)


def _stacked_mnist(cfg) -> Dataset:
    """MNIST's 60,000 training images as the base (PacGAN's code stacks train and test,
    70,000), resized to image_size (28 -> 32: the DCGAN's sizes are powers of two)."""
    base = _torchvision(SimpleNamespace(name=cfg.name, root=cfg.root, download=cfg.download,
                                        image_size=cfg.image_size, channels=1), kind="mnist")
    return stack(base, "stacked_mnist", cfg.n_samples)


# Not `labelled`: their 1000 modes are read channel by channel by the base set's
# classifier (the stacked mode count), not learnt by a classifier of their own.
register("stacked_digits", StackedConfig, _stacked_digits, stacked=True)
register("stacked_mnist", StackedFilesConfig, _stacked_mnist, stacked=True, element_bytes=1)
