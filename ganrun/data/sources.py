"""Data sources: each returns a `Dataset` held in memory.

Images are (N, C, H, W): float32 in [-1, 1] for the small embedded sets, uint8
for the large ones (4x less memory; the loader scales each batch). 2-D mixtures
are (N, 2) float32. Labels are kept where the source has them.

Each source is registered under its name with its config schema (every field
MISSING: configs/dataset/<name>.yaml holds the defaults) and its traits
(`labelled`, `points`): one loader and one YAML per dataset.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor

from ganrun.errors import UserError
from ganrun.ranges import above, at_least, between
from ganrun.registry import Registry

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
# Mixture samples are drawn with a fixed seed, so every run sees the same data.
DATA_SEED = 1234


@dataclass
class Dataset:
    name: str
    data: Tensor
    labels: Tensor | None = None
    num_classes: int = 0
    base: Dataset | None = None  # stacked data: the one-digit set its channels are drawn from

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample: (C, H, W) or (2,)."""
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return self.data.shape[0]


DATASETS = Registry("dataset")


class Source:
    """A registered dataset: its config schema, traits and loader."""

    name = "dataset"
    Config: type
    labelled = False  # class labels: conditional models, the classifier extractor
    points = False  # 2-D points, not images
    stacked = False  # one digit per channel, its mode read per channel (ganrun.data.stacked)
    count: int | None = None  # samples held, where known before loading (else dataset.n_samples)
    element_bytes = 4  # bytes per value held: float32, or 1 for uint8 images
    # Loading holds about twice what is kept at its peak (the 2-D mixtures: modes, noise
    # and their sum beside the result; images: the raw and the resized), measured in
    # tests/test_memory.py.
    load_peak = 2.0

    @staticmethod
    def load(cfg) -> Dataset:
        raise NotImplementedError


def register(name: str, config: type, load, labelled: bool = False, points: bool = False,
             stacked: bool = False, count: int | None = None, element_bytes: int = 4):
    """File the loader `load` as the dataset `name`, with its schema `config`."""
    attrs = {"name": name, "Config": config, "load": staticmethod(load), "labelled": labelled,
             "points": points, "stacked": stacked, "count": count,
             "element_bytes": element_bytes}
    return DATASETS.register(type(name, (Source,), attrs))


def load_dataset(cfg) -> Dataset:
    """The dataset named by `cfg.name`, configured by the rest of `cfg`."""
    return DATASETS[cfg.name].load(cfg)


@dataclass
class ImageConfig:
    name: str = MISSING
    root: str | None = MISSING
    image_size: int = at_least(4)
    channels: int = between(1, 3)
    batch_size: int = at_least(1)


@dataclass
class DownloadableConfig(ImageConfig):
    download: bool = MISSING


@dataclass
class Ring8Config:
    name: str = MISSING
    batch_size: int = at_least(1)
    n_samples: int = at_least(1)
    radius: float = above(0)
    std: float = above(0)


@dataclass
class Grid25Config:
    name: str = MISSING
    batch_size: int = at_least(1)
    n_samples: int = at_least(1)
    spacing: float = above(0)
    std: float = above(0)


# --- embedded ------------------------------------------------------------------


def _digits(cfg) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = resize(images, cfg.image_size).clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)
    images = images.expand(-1, cfg.channels, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.long)
    return Dataset("digits", images, labels, num_classes=10)


def resize(images: Tensor, size: int) -> Tensor:
    """Float (N, C, H, W) to (N, C, size, size), antialiased when shrinking."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrink = size < images.shape[-1]
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=shrink)


def mixture_centres(cfg) -> Tensor:
    """Mode centres of ring8 (on a circle) or grid25 (on a 5x5 grid), (K, 2)."""
    if cfg.name == "ring8":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return (cfg.radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()
    ticks = (torch.arange(5, dtype=torch.float32) - 2) * cfg.spacing
    return torch.cartesian_prod(ticks, ticks)


def _mixture(cfg) -> Dataset:
    generator = torch.Generator().manual_seed(DATA_SEED)
    centres = mixture_centres(cfg)
    modes = torch.randint(len(centres), (cfg.n_samples,), generator=generator)
    noise = torch.randn(cfg.n_samples, 2, generator=generator) * cfg.std
    return Dataset(cfg.name, centres[modes] + noise, modes, num_classes=len(centres))


# --- torchvision -----------------------------------------------------------------

_TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw/train-images-idx3-ubyte"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw/train-images-idx3-ubyte"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/data_batch_1"),
}
_TRAINING_IMAGES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}


def _torchvision(cfg, kind: str | None = None) -> Dataset:
    """The torchvision set `kind` (default: cfg.name; stacked_mnist loads mnist)."""
    import torchvision

    kind = kind or cfg.name
    class_name, expected = _TORCHVISION[kind]
    root = os.path.expanduser(str(cfg.root))
    dataset_class = _CIFAR10Files() if kind == "cifar10" else getattr(torchvision.datasets, class_name)
    try:
        source = dataset_class(root, train=True, download=cfg.download)
    except Exception as e:  # torchvision raises RuntimeError / URLError / OSError
        how = (
            "the download failed (is there internet?)" if cfg.download
            else "set dataset.download=true to fetch it (needs internet)"
        )
        raise UserError(
            f"dataset={cfg.name}: could not load {class_name} from dataset.root={root} "
            f"(expected {os.path.join(root, expected)}): {e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}; {how}, or point dataset.root at "
            f"the folder that holds it"
        ) from None
    data = torch.as_tensor(source.data)
    data = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)  # -> N, C, H, W
    labels = torch.as_tensor(source.targets, dtype=torch.long)
    images = to_uint8_images(data, cfg.image_size, cfg.channels)
    return Dataset(kind, images, labels, num_classes=10)


def _CIFAR10Files():
    """torchvision's CIFAR10 checking that its files are there, not their md5 sums,
    so a re-packed copy (or a test fixture) loads; downloads are still checked."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    class CIFAR10Files(CIFAR10):
        def _check_integrity(self) -> bool:
            folder = os.path.join(self.root, self.base_folder)
            return all(check_integrity(os.path.join(folder, name))
                       for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            self.meta = {**self.meta, "md5": None}
            super()._load_meta()

    return CIFAR10Files


def to_uint8_images(data: Tensor, size: int, channels: int, chunk: int = 4096) -> Tensor:
    """uint8 (N, C, H, W) to uint8 (N, channels, size, size), resized in chunks."""
    out = torch.empty((data.shape[0], channels, size, size), dtype=torch.uint8)
    for start in range(0, data.shape[0], chunk):
        part = data[start:start + chunk].float()
        part = _convert_channels(resize(part, size), channels)
        out[start:start + chunk] = part.round().clamp_(0, 255).to(torch.uint8)
    return out


def _convert_channels(images: Tensor, channels: int) -> Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 1:  # ITU-R 601-2 luma, as PIL's convert("L")
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
        return (images * weights).sum(1, keepdim=True)
    return images.expand(-1, channels, -1, -1)


# --- image folders ---------------------------------------------------------------


def _image_folder(cfg) -> Dataset:
    """`cfg.where`, if given, names the folder in messages (ganrun-eval's --images)."""
    root = Path(os.path.expanduser(str(cfg.root)))
    where = cfg.get("where") or f"dataset.root={root}"
    if not root.is_dir():
        raise UserError(f"{where}: no such folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise UserError(
            f"{where}: no images found (searched recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)})"
        )
    mode = "L" if cfg.channels == 1 else "RGB"
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda p: _read_image(p, cfg.image_size, mode), paths))
    bad = [(p, err) for p, (img, err) in zip(paths, decoded, strict=True) if img is None]
    good = [img for img, _ in decoded if img is not None]
    if bad:
        first, reason = bad[0]
        log.warning("%s: skipped %d of %d files that could not be read (first: %s: %s)",
                    where, len(bad), len(paths), first, reason)
    if not good:
        raise UserError(f"{where}: none of the {len(paths)} image files could be read")
    return Dataset("image_folder", torch.stack(good))


def _read_image(path: Path, size: int, mode: str) -> tuple[Tensor | None, str]:
    """One image as uint8 (C, size, size): short side resized, centre-cropped."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "PA", "LA", "RGBA", "I", "I;16", "F", "CMYK"):
                img = img.convert("RGBA" if "A" in img.mode or img.mode == "P" else "RGB")
            img = img.convert(mode)
            scale = size / min(img.size)
            w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
            img = img.resize((w, h), Image.BICUBIC)
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            array = np.asarray(img, dtype=np.uint8)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        return None, f"{e.__class__.__name__}: {e}"
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1), ""


register("digits", ImageConfig, _digits, labelled=True, count=1797)
register("ring8", Ring8Config, _mixture, points=True)
register("grid25", Grid25Config, _mixture, points=True)
for _name in _TORCHVISION:
    register(_name, DownloadableConfig, _torchvision, labelled=True,
             count=_TRAINING_IMAGES[_name], element_bytes=1)
register("image_folder", ImageConfig, _image_folder, element_bytes=1)
