"""Perceptual path length (Karras et al. 2019, StyleGAN §4.2): how much the image
changes along a short step of a latent interpolation,

    PPL = E[ d(G(i(z1, z2; t)), G(i(z1, z2; t + eps))) / eps^2 ],

with i spherical interpolation (slerp) for normal latents and linear (lerp) for
uniform ones, t = 0 ("end" sampling) or t ~ U(0, 1) ("full"), eps = 1e-4, and the
mean taken after dropping the distances below the 1st and above the 99th percentile.

d is LPIPS with VGG16 (the paper's) when its ImageNet weights are at hand, else the
squared distance between features of the run's own extractor (offline; its scale
is its own, and its name goes into the protocol record).

torchmetrics' `perceptual_path_length` is the reference for "end" sampling (a test
checks that both give the same number); ganrun keeps its own loop because torchmetrics
samples only t = 0, draws class labels uniformly (not as the run does, e.g. DynGAN's
partitions) and needs the generator's output in [0, 255].
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganrun.errors import UserError
from ganrun.metrics.extractors import hub_weights, resized
from ganrun.samples import generate, noise

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet weights, as its cache names them
LPIPS_SIZE = 64  # images are resized to this for LPIPS, as torchmetrics' PPL does
LOWER, UPPER = 0.01, 0.99


def interpolate(z1: Tensor, z2: Tensor, t: Tensor, method: str) -> Tensor:
    """Points at fractions t (N, 1) of the way from z1 to z2: on the line ("lerp"), or
    on the great-circle arc ("slerp": the angle from the directions, the endpoints'
    own lengths kept, as torchmetrics' slerp_any; the line where they are parallel)."""
    if method == "lerp":
        return z1 + (z2 - z1) * t
    u1, u2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    omega = (u1 * u2).sum(dim=1, keepdim=True).clamp(-1, 1).acos()
    sin = omega.sin()
    parallel = sin.abs() < 1e-7
    sin = torch.where(parallel, torch.ones_like(sin), sin)
    arc = (((1 - t) * omega).sin() * z1 + (t * omega).sin() * z2) / sin
    return torch.where(parallel, z1 + (z2 - z1) * t, arc)


def trimmed_mean(distances: Tensor, lower: float = LOWER, upper: float = UPPER) -> float:
    """The mean of the distances between their `lower` and `upper` quantiles (both
    kept; the quantiles by the lower neighbour, as StyleGAN's np.percentile and
    torchmetrics do)."""
    d = distances.double()
    lo = torch.quantile(d, lower, interpolation="lower")
    hi = torch.quantile(d, upper, interpolation="lower")
    return d[(d >= lo) & (d <= hi)].mean().item()


def path_lengths(generator, z1: Tensor, z2: Tensor, t: Tensor, epsilon: float, method: str,
                 distance, labels: Tensor | None = None) -> Tensor:
    """d(G(i(z1, z2; t)), G(i(z1, z2; t + eps))) / eps^2 for each pair; `generator`
    maps (z, labels) to samples, `distance` two batches of samples to (N,)."""
    a = generator(interpolate(z1, z2, t, method), labels)
    b = generator(interpolate(z1, z2, t + epsilon, method), labels)
    return distance(a, b).flatten().double() / epsilon**2


@torch.no_grad()
def perceptual_path_length(module, distance, n: int, epsilon: float, sampling: str,
                           batch_size: int = 250) -> float:
    """PPL of a GANModule's (EMA) generator over n latent pairs from the global random
    stream (the caller seeds it): the run's latent (slerp for normal, lerp for uniform)
    and its class labels, the same for both ends of a pair."""
    method = "slerp" if module.cfg.sample.latent == "normal" else "lerp"
    distances = []
    for (z1, labels), (z2, _) in zip(noise(module, n, batch_size), noise(module, n, batch_size),
                                     strict=True):
        t = (torch.rand(len(z1), 1, device=z1.device) if sampling == "full"
             else torch.zeros(len(z1), 1, device=z1.device))
        distances.append(path_lengths(lambda z, y: generate(module, z, y), z1, z2, t, epsilon,
                                      method, distance, labels).cpu())
    return trimmed_mean(torch.cat(distances))


# --- the distances ---------------------------------------------------------------------


class FeatureDistance(nn.Module):
    """Squared Euclidean distance between `embed`'s features: the offline choice."""

    def __init__(self, embed):
        super().__init__()
        self.embed = embed

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return (self.embed(a) - self.embed(b)).pow(2).flatten(1).sum(dim=1)


class LPIPSDistance(nn.Module):
    """LPIPS-VGG16 of images in [-1, 1] (grey ones repeated to three channels), resized
    to LPIPS_SIZE: torchmetrics' network, with its bundled linear layers."""

    def __init__(self, lpips: nn.Module):
        super().__init__()
        self.lpips = lpips

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        def prepare(x):
            return resized(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, LPIPS_SIZE)

        return self.lpips(prepare(a), prepare(b)).flatten()


def vgg16_weights(path: str | None) -> str | None:
    """VGG16's ImageNet weights: `path`, else torch hub's cache; None when neither."""
    return hub_weights(path, "metrics.lpips_weights", VGG16_FILE)


@contextlib.contextmanager
def _hub_holding(weights: str):
    """torch hub's cache, for the moment, a folder where `weights` is VGG16_FILE: so
    torchvision loads a given file the way it loads its own cache, with no download."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if cached.is_file() and os.path.samefile(cached, weights):
        yield
        return
    previous = torch.hub._hub_dir  # None unless set_dir was called: put back as it was
    with tempfile.TemporaryDirectory() as hub:
        (Path(hub) / "checkpoints").mkdir()
        (Path(hub) / "checkpoints" / VGG16_FILE).symlink_to(os.path.abspath(weights))
        torch.hub.set_dir(hub)
        try:
            yield
        finally:
            torch.hub._hub_dir = previous


def load_lpips(weights: str) -> LPIPSDistance:
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    try:
        with _hub_holding(weights):
            metric = LearnedPerceptualImagePatchSimilarity(net_type="vgg")
    except Exception as e:  # noqa: BLE001 - a wrong or damaged file
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{weights} is not VGG16's weights file {VGG16_FILE} "
                        f"({e.__class__.__name__}: {first})") from None
    return LPIPSDistance(metric.net).eval()


def resolve_ppl_net(name: str, lpips_weights: str | None) -> str:
    """`auto`: lpips when VGG16's weights are at hand, else the run's extractor."""
    if name != "auto":
        return name
    return "lpips" if vgg16_weights(lpips_weights) is not None else "extractor"


def missing_vgg16() -> UserError:
    cache = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    return UserError(f"metrics.ppl_net=lpips needs VGG16's ImageNet weights: put {VGG16_FILE} "
                     f"in torch hub's cache ({cache}) or pass metrics.lpips_weights=/path/to/"
                     f"{VGG16_FILE}; offline without them: metrics.ppl_net=extractor")
