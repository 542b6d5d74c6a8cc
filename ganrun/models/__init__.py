"""Plain torch generators and discriminators; they know nothing of losses.

Every generator is `G(z, labels=None)`; every discriminator is
`D(x, labels=None) = head(features(x))` (+ a class projection when conditional),
so feature-level techniques reach D's last hidden features without knowing the
architecture, and may replace `D.head`.
"""

from __future__ import annotations

from torch import nn

from ganrun.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganrun.models.layers import (
    MODELS,
    Discriminator,
    Generator,
    Maxout,
    make_activation,
    packed_shape,
)
from ganrun.models.mlp import MLPDiscriminator, MLPGenerator
from ganrun.models.resnet import ResNetDiscriminator, ResNetGenerator
from ganrun.registry import import_all

import_all(__name__)  # a new family's file registers itself (@MODELS.register)


def output_activation(name: str, points: bool) -> nn.Module:
    """The generator's last activation; `auto` matches the data range."""
    if name == "auto":
        name = "none" if points else "tanh"
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown output activation {name}")


def build_models(cfg, data_shape: tuple[int, ...], num_classes: int = 0,
                 pack: int = 1) -> tuple[nn.Module, nn.Module]:
    """Generator and discriminator for data of `data_shape` (C, H, W) or (2,);
    conditional on `num_classes` classes when it is > 0; D judging `pack` samples
    at once (PacGAN) when it is > 1."""
    family, data_shape = MODELS[cfg.name], tuple(data_shape)
    out_act = output_activation(cfg.out_activation, points=len(data_shape) == 1)
    G, D = family.build(cfg, data_shape, num_classes, out_act)
    if pack > 1:  # D for inputs of pack x the channels; this second G is not used
        _, D = family.build(cfg, packed_shape(data_shape, pack), num_classes, out_act)
        D.pack = pack
    return G, D


__all__ = ["MODELS", "build_models", "output_activation", "make_activation", "Maxout", "Generator", "Discriminator",
           "MLPGenerator", "MLPDiscriminator", "DCGANGenerator", "DCGANDiscriminator",
           "ResNetGenerator", "ResNetDiscriminator"]
