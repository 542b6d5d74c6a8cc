"""Pieces every model shares: the config every model has, the registry of model
families, activations, and the conditional plumbing of G and D."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ganrun.ranges import at_least, between
from ganrun.registry import Registry

MODELS = Registry("model")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "tanh", "sigmoid", "maxout")
OUT_ACTIVATIONS = ("auto", "tanh", "sigmoid", "none")


@dataclass
class ModelConfig:
    name: str = MISSING
    latent_dim: int = at_least(1)
    conditional: bool = MISSING
    embed_dim: int = at_least(1)
    activation: str = MISSING
    activation_d: str | None = MISSING
    leaky_slope: float = between(0, 1, high_open=True)
    batch_norm_g: bool = MISSING
    batch_norm_d: bool = MISSING
    out_activation: str = MISSING


class ModelFamily:
    """A registered pair of G and D: its config schema, the image sizes it can make
    (None: any, points too) and how it is built."""

    name = "model"
    Config = ModelConfig
    image_sizes: tuple[int, ...] | None = None

    @staticmethod
    def build(cfg, data_shape: tuple[int, ...], num_classes: int,
              out_activation: nn.Module) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    @staticmethod
    def check(params, cfg) -> None:
        """Rules beyond the schema's types (raise UserError naming the key)."""


class Maxout(nn.Module):
    """Maxout (Goodfellow et al. 2013): the maximum of `pieces` linear pieces. Its input
    is a layer `pieces` times as wide: (N, width * pieces) -> (N, width)."""

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, x: Tensor) -> Tensor:
        return x.unflatten(1, (-1, self.pieces)).amax(2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def make_activation(name: str, slope: float = 0.2) -> nn.Module:
    """A fresh hidden-activation module (a regularizer may wrap each one, so none is shared).
    `maxout` needs its layer's width: the MLP builds it (model.maxout_pieces)."""
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)
    if name == "elu":
        return nn.ELU()
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name}")


class Generator(nn.Module):
    """G(z, labels): when conditional, a class embedding is concatenated to z."""

    def __init__(self, latent_dim: int, num_classes: int = 0, embed_dim: int = 0):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.input_dim = latent_dim + (embed_dim if num_classes else 0)
        if num_classes:
            self.embed = nn.Embedding(num_classes, embed_dim)

    def latent_input(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return torch.cat([z, self.embed(labels)], dim=1) if self.num_classes else z


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """PacGAN's packing: each `pack` consecutive samples become one input of `pack`
    times the channels (images) or features (points): (N, C, ...) -> (N / pack, pack C, ...)."""
    return x.reshape(x.shape[0] // pack, pack * x.shape[1], *x.shape[2:])


def packed_shape(shape: tuple[int, ...], pack: int) -> tuple[int, ...]:
    return (shape[0] * pack, *shape[1:])


class Discriminator(nn.Module):
    """D(x, labels) = head(features(x)) (+ <embed(labels), features(x)>, the projection
    discriminator of Miyato & Koyama 2018, when conditional). `head` may be replaced
    by any module mapping (N, F) -> (N, 1). With `pack` > 1 (PacGAN) D is built for
    packed inputs and judges each `pack` consecutive samples together: N samples give
    N / pack outputs."""

    pack = 1

    def init_head(self, in_shape: tuple[int, ...], feature_dim: int, num_classes: int) -> None:
        self.in_shape = tuple(in_shape)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head = nn.Linear(feature_dim, 1)
        if num_classes:
            self.embed = nn.Embedding(num_classes, feature_dim)

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, labels: Tensor | None = None,
                with_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """D's outputs (N,), and with `with_features` its last hidden features (N, F)."""
        if self.pack > 1:
            x = pack_samples(x, self.pack)
        f = self.features(x)
        out = self.head(f).squeeze(1)
        if labels is not None and self.num_classes:
            out = out + (self.embed(labels) * f).sum(1)
        return (out, f) if with_features else out
