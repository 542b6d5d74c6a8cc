"""Feature extractors, all in torch-fidelity's form (uint8 (N, 3, H, W) in, a tuple of
feature tensors out), so torch-fidelity's own metric code runs on their features.

- `classifier`: a small CNN trained on the dataset's own labels, cached on disk by a
  fingerprint of the data and its config; penultimate layer for FID / KID / PR,
  logits for IS and class coverage. Works offline.
- `inception`: torch-fidelity's InceptionV3 (the standard FID network); weights from
  the torch hub cache or `metrics.inception_weights`.
- `random_conv`: a fixed convolutional network with seeded random weights, for
  unlabelled images offline (Naeem et al. 2020 study randomly initialised networks
  as embeddings for data far from ImageNet). Its numbers are on its own scale.
- raw coordinates for the 2-D mixtures (no network).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity import FeatureExtractorBase, register_feature_extractor

from ganrun.errors import UserError

log = logging.getLogger(__name__)

CLASSIFIER_NAME = "ganrun-classifier"
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
RANDOM_CONV_NAME = "ganrun-random-conv"
RANDOM_CONV_SEED = 0


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Images in [-1, 1], (N, 1 or 3, H, W) -> uint8 (N, 3, H, W), as torch-fidelity reads them."""
    x = images.detach().float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


# --- the classifier ---------------------------------------------------------------------


class ClassifierNet(nn.Module):
    """conv-pool, conv-pool, a hidden layer of `width` (the features), then the logits."""

    def __init__(self, channels: int, size: int, num_classes: int, width: int = 128):
        super().__init__()
        self.channels, self.size, self.num_classes, self.width = channels, size, num_classes, width
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * (size // 4) ** 2, width), nn.ReLU(),
        )
        self.logits = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(x)
        return features, self.logits(features)

    def spec(self) -> dict:
        return {"channels": self.channels, "size": self.size, "num_classes": self.num_classes,
                "width": self.width}


def fingerprint(dataset, extra: dict) -> str:
    """A short hash of the data, its labels and `extra` (the config that shaped it)."""
    h = hashlib.sha1()
    h.update(json.dumps({"name": dataset.name, "shape": list(dataset.data.shape), **extra},
                        sort_keys=True).encode())
    h.update(dataset.data.contiguous().numpy().tobytes())
    if dataset.labels is not None:
        h.update(dataset.labels.numpy().tobytes())
    return h.hexdigest()[:16]


def classifier_path(cache_dir: Path, dataset, cfg) -> Path:
    key = fingerprint(dataset, {"classifier": {"steps": cfg.classifier_steps,
                                               "holdout": cfg.classifier_holdout}})
    return Path(cache_dir) / "classifiers" / f"{dataset.name}-{key}.pt"


def save_cached(obj, path: Path) -> None:
    """torch.save into the shared cache: via a temporary file of this process's own and a
    rename, so jobs of a parallel sweep writing the same entry never mix their bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_cached(path) -> dict:
    """A file of ganrun's cache; a damaged one (a copy cut short, a disk error) is named,
    with the fix: it is rebuilt once deleted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same answer
        raise UserError(f"{path} cannot be read ({e.__class__.__name__}); it is in ganrun's "
                        "cache (metrics.cache_dir): delete it and it is rebuilt") from None


def holdout_split(n: int, holdout: float) -> tuple[Tensor, Tensor]:
    """(held-out, training) indices of the classifier: a fixed random split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = max(1, int(n * holdout))
    return order[:n_test], order[n_test:]


def train_classifier(dataset, cfg, path: Path) -> dict:
    """Train the classifier on the dataset's labels; save weights and held-out accuracy."""
    generator = torch.Generator().manual_seed(1)
    test, train = holdout_split(len(dataset), cfg.classifier_holdout)
    n_test = len(test)
    images = dataset.data
    scale = (lambda x: x.float().div(127.5).sub(1)) if images.dtype == torch.uint8 else (lambda x: x)
    # Its initial weights from a fixed seed too, not from whatever state the run that
    # first needs it has reached: every run gets the same classifier for the same data.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = ClassifierNet(images.shape[1], images.shape[-1], dataset.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = 0
    while steps < cfg.classifier_steps:
        for batch in train[torch.randperm(len(train), generator=generator)].split(128):
            _, logits = net(scale(images[batch]))
            loss = F.cross_entropy(logits, dataset.labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if steps == cfg.classifier_steps:
                break
    net.eval()
    with torch.no_grad():
        correct = sum((net(scale(images[b]))[1].argmax(1) == dataset.labels[b]).sum().item()
                      for b in test.split(1024))
    info = {"dataset": dataset.name, "accuracy": correct / n_test, "n_train": len(train),
            "n_test": n_test, "steps": cfg.classifier_steps}
    save_cached({"spec": net.spec(), "state_dict": net.state_dict(), "info": info}, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def resized(x: Tensor, size: int) -> Tensor:
    """Square images at `size` pixels (bilinear, antialiased when shrinking)."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=x.shape[-1] > size)


def from_uint8(x: Tensor) -> Tensor:
    """torch-fidelity's uint8 (N, 3, H, W) -> floats in [-1, 1]."""
    return x.float().div(127.5).sub(1.0)


class SavedNetExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of one of ganrun's networks, saved as {"spec", "state_dict"}
    (weights path required)."""

    net_class: type[nn.Module]

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        saved = load_cached(feature_extractor_weights_path)
        self.net = self.net_class(**saved["spec"])
        self.net.load_state_dict(saved["state_dict"])
        self.info = saved.get("info")
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None


class ClassifierExtractor(SavedNetExtractor):
    net_class = ClassifierNet

    @staticmethod
    def get_provided_features_list():
        return "penultimate", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits"}.get(metric, "penultimate")

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        features, logits = self.net(resized(from_uint8(x)[:, : self.net.channels], self.net.size))
        out = {"penultimate": features, "logits": logits}
        return tuple(out[name] for name in self.features_list)

    def embed(self, x: Tensor) -> Tensor:
        """The features of images in [-1, 1] as floats (no rounding to uint8)."""
        return self.net(resized(x, self.net.size))[0]


register_feature_extractor(CLASSIFIER_NAME, ClassifierExtractor)


# --- the random convolutional embedding ---------------------------------------------


class RandomConvNet(nn.Module):
    """Four blocks of 3x3 convolution, leaky ReLU and 2x2 average pooling (32 to 256
    channels), then a 2x2 average pool: 1024 features of an image of `size` pixels.
    He-initialised from a seed, never trained: features spread evenly through the
    layers, so no one scale dominates."""

    WIDTHS = (32, 64, 128, 256)

    def __init__(self, size: int, seed: int = RANDOM_CONV_SEED):
        super().__init__()
        self.size, self.seed = size, seed
        layers, channels = [], 3
        for width in self.WIDTHS:
            layers += [nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
            channels = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        generator = torch.Generator().manual_seed(seed)
        for conv in self.body:
            if isinstance(conv, nn.Conv2d):
                fan_in = conv.in_channels * 9
                gain = (2.0 / (1 + 0.2**2)) ** 0.5
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator)
                                      * gain / fan_in**0.5)
                    conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def spec(self) -> dict:
        return {"size": self.size, "seed": self.seed}


def random_conv_size(image_size: int) -> int:
    """The embedding's input size: 32 pixels for images up to 32, 64 above."""
    return 32 if image_size <= 32 else 64


def random_conv_path(cache_dir: Path, size: int) -> Path:
    """Its weights, written once and read from then on: the numbers stay comparable
    even if a later torch draws random numbers differently."""
    return Path(cache_dir) / "extractors" / f"random-conv{size}-s{RANDOM_CONV_SEED}.pt"


def random_conv_weights(cache_dir: Path, size: int) -> Path:
    path = random_conv_path(cache_dir, size)
    if not path.is_file():
        net = RandomConvNet(size)
        save_cached({"spec": net.spec(), "state_dict": net.state_dict()}, path)
        log.info("metrics: random convolutional embedding written to %s", path)
    return path


class RandomConvExtractor(SavedNetExtractor):
    """Features only: no Inception Score or class coverage from it."""

    net_class = RandomConvNet

    @staticmethod
    def get_provided_features_list():
        return ("features",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "features"

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return (self.net(resized(from_uint8(x), self.net.size)),)

    def embed(self, x: Tensor) -> Tensor:
        """The features of images in [-1, 1] as floats (no rounding to uint8)."""
        return self.net(resized(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, self.net.size))


register_feature_extractor(RANDOM_CONV_NAME, RandomConvExtractor)


# --- inception -------------------------------------------------------------------------


def hub_weights(path: str | None, key: str, filename: str) -> str | None:
    """A pretrained network's weights: `path` (the config key `key`), else `filename`
    in torch hub's cache, else None. A given path that does not exist is refused."""
    if path:
        expanded = os.path.expanduser(path)
        if not os.path.isfile(expanded):
            raise UserError(f"{key}={path}: no such file")
        return expanded
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return str(cached) if cached.is_file() else None


def inception_weights(path: str | None) -> str | None:
    """InceptionV3's weights file; None lets torch-fidelity download into the cache."""
    return hub_weights(path, "metrics.inception_weights", INCEPTION_FILE)


class UInt8Images(torch.utils.data.Dataset):
    """uint8 (3, H, W) images as a Dataset: how torch-fidelity reads an input."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def write_random_inception_weights(path: Path) -> Path:
    """A weights file for torch-fidelity's InceptionV3 with random values: the real
    network's cost and shapes without a download (tests and benchmarks)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(path)
    empty = path.with_name(path.stem + ".empty.pth")
    torch.save({}, empty)
    original = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
    try:
        net = FeatureExtractorInceptionV3(INCEPTION_NAME, ["2048"],
                                          feature_extractor_weights_path=str(empty))
    finally:
        FeatureExtractorInceptionV3.load_state_dict = original
    torch.save(net.state_dict(), path)
    empty.unlink()
    return path


def load_inception(path: str | None):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    weights = inception_weights(path)
    try:
        return FeatureExtractorInceptionV3(INCEPTION_NAME, ["2048", "logits_unbiased"],
                                           feature_extractor_weights_path=weights, verbose=False)
    except Exception as e:  # noqa: BLE001 - a download that failed (URLError), a wrong file
        if weights is not None:
            first = str(e).splitlines()[0] if str(e) else ""
            raise UserError(f"metrics.inception_weights: {weights} is not the InceptionV3 weights "
                            f"file {INCEPTION_FILE} ({e.__class__.__name__}: {first})") from None
        cache = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        raise UserError(
            "metrics.extractor=inception needs the InceptionV3 weights, which could not be "
            f"downloaded ({e.__class__.__name__}). Either put {INCEPTION_FILE} in the torch hub "
            f"cache ({cache}), or pass metrics.inception_weights=/path/to/{INCEPTION_FILE}; "
            "offline without them: metrics.extractor=random_conv (any images, numbers on its "
            "own scale), metrics.extractor=classifier (labelled datasets) or metrics=none"
        ) from None
