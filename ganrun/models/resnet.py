"""SNGAN's ResNet generator and discriminator (Miyato et al. 2018, the 32 px CIFAR
architecture), for 16, 32 and 64 px.

G: z -> 4x4 by a linear layer, residual up-blocks (nearest upsampling) to the
image size, then BN, activation, a 3x3 conv and the output activation.
D: an "optimized" first down-block, residual down-blocks to 8x8, two plain
residual blocks, the activation and a global sum pooling: D's features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ganrun.models.dcgan import n_resamples
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
class ResNet(ModelFamily):
    name = "resnet"
    image_sizes = (16, 32, 64)

    @dataclass
    class Config(ModelConfig):
        g_channels: int = at_least(1)
        d_channels: int = at_least(1)

    @staticmethod
    def build(cfg, data_shape, num_classes, out_activation):
        channels, size, slope = data_shape[0], data_shape[-1], cfg.leaky_slope
        return (ResNetGenerator(cfg.latent_dim, channels, size, cfg.g_channels,
                                cfg.batch_norm_g, cfg.activation, slope, out_activation,
                                embed_dim=cfg.embed_dim, num_classes=num_classes),
                ResNetDiscriminator(channels, size, cfg.d_channels, cfg.batch_norm_d,
                                    cfg.activation_d or cfg.activation, slope,
                                    num_classes=num_classes))


def xavier(module: nn.Module, gain: float = 1.0) -> None:
    """Xavier-uniform weights and zero biases, as in the SNGAN reference code."""
    if isinstance(module, nn.Conv2d | nn.Linear | nn.Embedding):
        nn.init.xavier_uniform_(module.weight, gain)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def residual_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """A 3x3 conv of a residual branch; the reference code scales these by sqrt(2)
    (the ReLU halves the variance), and everything else by 1."""
    conv = nn.Conv2d(c_in, c_out, 3, 1, 1)
    xavier(conv, math.sqrt(2))
    return conv


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, batch_norm: bool, activation: str, slope: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in) if batch_norm else nn.Identity()
        self.act1 = make_activation(activation, slope)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = residual_conv(c_in, c_out)
        self.bn2 = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        self.act2 = make_activation(activation, slope)
        self.conv2 = residual_conv(c_out, c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        xavier(self.shortcut)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self.up(self.act1(self.bn1(x))))
        h = self.conv2(self.act2(self.bn2(h)))
        return h + self.shortcut(self.up(x))


class DownBlock(nn.Module):
    """A residual block of D; `first` is SNGAN's optimized block (no activation on
    its input, the shortcut pools before its 1x1 conv). Batch norm, when asked for,
    precedes each activation as in G, except on the first block: D's input layer
    gets none (as in DCGAN)."""

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool, batch_norm: bool,
                 activation: str, slope: float):
        super().__init__()
        self.first = first
        norm = batch_norm and not first
        self.bn1 = nn.BatchNorm2d(c_in) if norm else nn.Identity()
        self.act1 = nn.Identity() if first else make_activation(activation, slope)
        self.conv1 = residual_conv(c_in, c_out)
        self.bn2 = nn.BatchNorm2d(c_out) if norm else nn.Identity()
        self.act2 = make_activation(activation, slope)
        self.conv2 = residual_conv(c_out, c_out)
        self.pool = nn.AvgPool2d(2) if down else nn.Identity()
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if (down or c_in != c_out) else nn.Identity()
        xavier(self.shortcut)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(self.act2(self.bn2(self.conv1(self.act1(self.bn1(x))))))
        h = self.pool(h)
        skip = self.shortcut(self.pool(x)) if self.first else self.pool(self.shortcut(x))
        return h + skip


class ResNetGenerator(Generator):
    def __init__(self, latent_dim: int, channels: int, size: int, width: int, batch_norm: bool,
                 activation: str, slope: float, out_activation: nn.Module,
                 num_classes: int = 0, embed_dim: int = 0):
        super().__init__(latent_dim, num_classes, embed_dim)
        self.out_activation = out_activation
        self.width = width
        self.linear = nn.Linear(self.input_dim, 4 * 4 * width)
        blocks = [UpBlock(width, width, batch_norm, activation, slope)
                  for _ in range(n_resamples(size, smallest=16))]
        self.blocks = nn.Sequential(*blocks)
        to_image = nn.Conv2d(width, channels, 3, 1, 1)
        self.out = nn.Sequential(nn.BatchNorm2d(width) if batch_norm else nn.Identity(),
                                 make_activation(activation, slope), to_image, out_activation)
        xavier(self.linear)
        xavier(to_image)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.linear(self.latent_input(z, labels)).view(z.shape[0], self.width, 4, 4)
        return self.out(self.blocks(h))


class ResNetDiscriminator(Discriminator):
    def __init__(self, channels: int, size: int, width: int, batch_norm: bool, activation: str,
                 slope: float, num_classes: int = 0):
        super().__init__()
        n_down = n_resamples(size, smallest=16) - 1  # to 8x8: the first block and n_down - 1
        blocks = [DownBlock(channels, width, True, True, batch_norm, activation, slope)]
        blocks += [DownBlock(width, width, True, False, batch_norm, activation, slope)
                   for _ in range(n_down - 1)]
        blocks += [DownBlock(width, width, False, False, batch_norm, activation, slope)
                   for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.act = make_activation(activation, slope)
        self.init_head((channels, size, size), width, num_classes)
        xavier(self.head)
        if num_classes:
            xavier(self.embed)  # the reference's projection embedding; N(0, 1) would swamp the head

    def features(self, x: Tensor) -> Tensor:
        return self.act(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
