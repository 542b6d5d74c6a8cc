"""Latent noise, samples of a trained generator, and their pictures: an image grid,
or a scatter of 2-D points over the real data."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def sample_latent(n: int, dim: int, kind: str, truncation: float | None = None,
                  device=None, generator: torch.Generator | None = None) -> Tensor:
    """z ~ N(0, I) or U[-1, 1]^dim; with `truncation` t, normal values are resampled
    until |z_i| <= t (the truncation trick) and uniform ones drawn from [-t, t]."""
    if kind == "uniform":
        bound = min(truncation, 1.0) if truncation else 1.0
        z = torch.rand(n, dim, device=device, generator=generator)
        return z.mul_(2 * bound).sub_(bound)
    z = torch.randn(n, dim, device=device, generator=generator)
    if truncation:
        outside = z.abs() > truncation
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), device=device, generator=generator)
            outside = z.abs() > truncation
    return z


@contextmanager
def evaluating(net: torch.nn.Module):
    """`net` in eval mode (batch norm's running statistics, no dropout) for the block,
    then back in the mode it was in."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


@torch.no_grad()
def generate(module, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """Samples of a GANModule's generator (the EMA copy if any) in eval mode (batch
    norm uses its running statistics), in [-1, 1] for images whatever G's output."""
    with evaluating(module.sampler) as G:
        # in G's own type (trainer.precision=64-true or bf16-true), given back as floats
        fake = G(z.to(next(G.parameters()).dtype), labels).float()
    return fake.mul(2.0).sub_(1.0) if module.unit_range else fake


def noise(module, n: int, batch_size: int = 500) -> list[tuple[Tensor, Tensor | None]]:
    """(z, labels) for n samples in batches, from the global random stream: the latent
    of `sample.*` (truncated if asked), uniform class labels when conditional. All drawn
    before any is used (two calls zipped draw one after the other, as ppl's do)."""
    return list(noise_batches(module, n, batch_size))


def noise_batches(module, n: int, batch_size: int = 500, labels: Tensor | None = None):
    """`noise`'s batches one at a time, as they are used (`labels`: those classes
    instead of the module's draw)."""
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        z = sample_latent(m, module.latent_dim, module.cfg.sample.latent,
                          module.cfg.sample.truncation, device=module.device)
        yield z, (labels[start:start + m] if labels is not None else module.sample_labels(m))


def generate_many(module, n: int, batch_size: int = 500, labels: Tensor | None = None) -> Tensor:
    """n samples on fresh noise (`noise_batches`), written batch by batch into one tensor:
    a list of the batches' outputs, joined at the end, kept each batch's freed
    activations from going back (3.7 GB held for 3 million 2-D points, 24 MB)."""
    out = None
    for start, (z, batch) in zip(range(0, n, batch_size),
                                 noise_batches(module, n, batch_size, labels), strict=True):
        fake = generate(module, z, batch)
        if out is None:
            out = fake.new_empty((n, *fake.shape[1:]))
        out[start:start + len(fake)] = fake
    return out if out is not None else torch.empty(0)


def image_grid(images: Tensor, nrow: int | None = None) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (H', W', 3) grid, 2 px gaps. The values become
    bytes before the grid is laid out (a float grid and its copies took ~27 bytes a
    pixel; this, ~9: the images as floats once, as bytes, the 3-channel grid)."""
    from torchvision.utils import make_grid

    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    pixels = images.detach().cpu().float().clamp(-1, 1).add_(1).div_(2)  # make_grid's normalize
    pixels = pixels.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return make_grid(pixels, nrow=nrow, padding=2).permute(1, 2, 0).numpy()


SCATTER_CHUNK = 1 << 20  # points drawn at a time
GREY, BLUE = (170, 170, 170), (31, 119, 180)


def point_scatter(real: Tensor, fake: Tensor, size: int = 384) -> np.ndarray:
    """Real points in grey and generated points in blue on a white (size, size, 3) canvas,
    the axes reaching 1.25 x the farthest real coordinate."""
    limit = scatter_limit(real if real.numel() else fake)
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    draw_points(canvas, real, limit, GREY)
    draw_points(canvas, fake, limit, BLUE)
    return canvas


def scatter_limit(points: Tensor) -> float:
    """Half the width of a scatter's axes: 1.25 x the farthest coordinate."""
    lo, hi = torch.aminmax(points)  # no copy of the points
    return max(-float(lo), float(hi)) * 1.25 + 1e-6


def draw_points(canvas: np.ndarray, points: Tensor, limit: float, colour) -> None:
    """2 x 2 pixel dots on a square canvas whose axes span [-limit, limit], SCATTER_CHUNK
    points at a time (the pixel arithmetic's temporaries, ~100 bytes a point, stay that
    small however many points there are)."""
    size = canvas.shape[0]
    for part in points.split(SCATTER_CHUNK):
        pixels = ((part.float().cpu() / limit + 1) * 0.5 * (size - 1)).round().long()
        inside = ((pixels >= 0) & (pixels < size - 1)).all(dim=1)
        x, y = pixels[inside, 0].numpy(), (size - 2 - pixels[inside, 1]).numpy()
        for dx in (0, 1):
            for dy in (0, 1):
                canvas[y + dy, x + dx] = colour


def save_each(samples: Tensor, folder: Path, points: bool) -> None:
    """A PNG per sample in `folder` (000000.png, ...): the image, or for 2-D points the
    point in blue over all the samples in grey (drawn once, not once per point)."""
    folder.mkdir(parents=True, exist_ok=True)
    if points:
        limit, background = scatter_limit(samples), point_scatter(samples, samples[:0])
    for i, sample in enumerate(samples):
        if points:
            picture = background.copy()
            draw_points(picture, sample[None], limit, BLUE)
        else:
            picture = image_grid(sample[None], 1)
        save_png(picture, folder / f"{i:06d}.png")


def save_png(picture: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(picture).save(tmp)
    tmp.replace(path)
