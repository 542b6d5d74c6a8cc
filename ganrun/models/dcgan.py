"""DCGAN (Radford et al. 2015) for square images of 8 to 64 px, 1 or 3 channels.

G: latent -> 4x4 by a transposed conv, then upsampling blocks (transposed conv,
kernel 4, stride 2; or nearest upsampling and a 3x3 conv) that halve the width
and double the size up to the image; D mirrors it with strided convs down to 4x4,
whose flattened map is D's features, and a linear head (a 4x4 conv to one value,
written as the linear map it is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import MISSING
from torch import Tensor, nn

from ganrun.errors import one_of
from ganrun.models.layers import (
    MODELS,
    Discriminator,
    Generator,
    ModelConfig,
    ModelFamily,
    make_activation,
)
from ganrun.ranges import at_least


@MODELS.register
class DCGAN(ModelFamily):
    name = "dcgan"
    image_sizes = (8, 16, 32, 64)

    @dataclass
    class Config(ModelConfig):
        base_channels: int = at_least(1)
        base_channels_d: int | None = at_least(1)  # D's own width (null: base_channels)
        upsample: str = MISSING

    @staticmethod
    def check(params, cfg) -> None:
        one_of("model.upsample", params.upsample, ("transposed", "nearest"))

    @staticmethod
    def build(cfg, data_shape, num_classes, out_activation):
        channels, size, slope = data_shape[0], data_shape[-1], cfg.leaky_slope
        return (DCGANGenerator(cfg.latent_dim, channels, size, cfg.base_channels,
                               cfg.batch_norm_g, cfg.activation, slope, out_activation,
                               cfg.upsample, embed_dim=cfg.embed_dim, num_classes=num_classes),
                DCGANDiscriminator(channels, size, cfg.get("base_channels_d") or cfg.base_channels,
                                   cfg.batch_norm_d,
                                   cfg.activation_d or cfg.activation, slope,
                                   num_classes=num_classes))


def n_resamples(size: int, smallest: int = 8) -> int:
    """Doublings from 4x4 to `size` (a power of two, at least `smallest`)."""
    n = int(math.log2(size)) - 2 if size > 0 else -1
    if size < smallest or 2 ** (n + 2) != size:
        raise ValueError(f"needs a power-of-two image size >= {smallest}, got {size}")
    return n


def dcgan_init(module: nn.Module) -> None:
    """Weights from N(0, 0.02), batch-norm scales from N(1, 0.02), as in the paper."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def upsample_conv(c_in: int, c_out: int, mode: str, bias: bool) -> list[nn.Module]:
    """Double the size: a 4x4 transposed conv, or nearest upsampling + a 3x3 conv."""
    if mode == "transposed":
        return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)]
    if mode != "nearest":
        raise ValueError(f"unknown upsample mode {mode} (transposed or nearest)")
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)]


class DCGANGenerator(Generator):
    def __init__(self, latent_dim: int, channels: int, size: int, base_channels: int,
                 batch_norm: bool, activation: str, slope: float, out_activation: nn.Module,
                 upsample: str = "transposed", num_classes: int = 0, embed_dim: int = 0):
        super().__init__(latent_dim, num_classes, embed_dim)
        self.out_activation = out_activation
        n = n_resamples(size)
        width = base_channels * 2 ** (n - 1)
        layers: list[nn.Module] = [nn.Unflatten(1, (self.input_dim, 1, 1)),
                                   nn.ConvTranspose2d(self.input_dim, width, 4, 1, 0,
                                                      bias=not batch_norm)]  # 1x1 -> 4x4
        layers += [nn.BatchNorm2d(width)] if batch_norm else []
        layers += [make_activation(activation, slope)]
        for _ in range(n - 1):
            layers += upsample_conv(width, width // 2, upsample, bias=not batch_norm)
            layers += [nn.BatchNorm2d(width // 2)] if batch_norm else []
            layers += [make_activation(activation, slope)]
            width //= 2
        layers += upsample_conv(width, channels, upsample, bias=True) + [out_activation]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(self.latent_input(z, labels))


class DCGANDiscriminator(Discriminator):
    def __init__(self, channels: int, size: int, base_channels: int, batch_norm: bool,
                 activation: str, slope: float, num_classes: int = 0):
        super().__init__()
        n = n_resamples(size)
        width = base_channels
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1),
                                   make_activation(activation, slope)]
        for _ in range(n - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=not batch_norm)]
            layers += [nn.BatchNorm2d(width * 2)] if batch_norm else []
            layers += [make_activation(activation, slope)]
            width *= 2
        self.body = nn.Sequential(*layers, nn.Flatten())  # -> (N, width * 4 * 4)
        self.init_head((channels, size, size), width * 16, num_classes)
        self.apply(dcgan_init)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)
