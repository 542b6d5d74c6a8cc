"""The standard GAN's MLP generator and discriminator (points or flattened images)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ganrun.errors import UserError
from ganrun.models.layers import (
    MODELS,
    Discriminator,
    Generator,
    Maxout,
    ModelConfig,
    ModelFamily,
    make_activation,
)
from ganrun.ranges import at_least


@MODELS.register
class MLP(ModelFamily):
    """The standard GAN: MLP G and D, on points or flattened images."""

    name = "mlp"

    @dataclass
    class Config(ModelConfig):
        hidden_dims: list[int] = at_least(1)
        hidden_dims_d: list[int] | None = at_least(1)
        maxout_pieces: int = at_least(2)

    @staticmethod
    def check(params, cfg) -> None:
        for key in ("hidden_dims", "hidden_dims_d"):  # each width >= 1: its declared range
            if params[key] is not None and not params[key]:
                raise UserError(f"model.{key}=[]: must be a non-empty list of widths")

    @staticmethod
    def build(cfg, data_shape, num_classes, out_activation):
        hidden, slope, pieces = list(cfg.hidden_dims), cfg.leaky_slope, cfg.maxout_pieces
        hidden_d = list(cfg.hidden_dims_d) if cfg.hidden_dims_d is not None else hidden
        return (MLPGenerator(cfg.latent_dim, data_shape, hidden, cfg.batch_norm_g,
                             cfg.activation, slope, out_activation, embed_dim=cfg.embed_dim,
                             num_classes=num_classes, pieces=pieces),
                MLPDiscriminator(data_shape, hidden_d, cfg.batch_norm_d,
                                 cfg.activation_d or cfg.activation, slope,
                                 num_classes=num_classes, pieces=pieces))


def hidden_layer(width: int, hidden: int, batch_norm: bool, activation: str, slope: float,
                 pieces: int) -> list[nn.Module]:
    """Linear, [batch norm], activation; a maxout layer is `pieces` times as wide
    before its maximum."""
    out = hidden * pieces if activation == "maxout" else hidden
    layers: list[nn.Module] = [nn.Linear(width, out)]
    layers += [nn.BatchNorm1d(out)] if batch_norm else []
    layers += [Maxout(pieces) if activation == "maxout" else make_activation(activation, slope)]
    return layers


class MLPGenerator(Generator):
    def __init__(self, latent_dim: int, out_shape: tuple[int, ...], hidden_dims: list[int],
                 batch_norm: bool, activation: str, slope: float, out_activation: nn.Module,
                 num_classes: int = 0, embed_dim: int = 0, pieces: int = 2):
        super().__init__(latent_dim, num_classes, embed_dim)
        self.out_shape = tuple(out_shape)
        self.out_activation = out_activation
        layers: list[nn.Module] = []
        width = self.input_dim
        for hidden in hidden_dims:
            layers += hidden_layer(width, hidden, batch_norm, activation, slope, pieces)
            width = hidden
        layers += [nn.Linear(width, math.prod(self.out_shape)), out_activation]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(self.latent_input(z, labels)).view(z.shape[0], *self.out_shape)


class MLPDiscriminator(Discriminator):
    def __init__(self, in_shape: tuple[int, ...], hidden_dims: list[int], batch_norm: bool,
                 activation: str, slope: float, num_classes: int = 0, pieces: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for i, hidden in enumerate(hidden_dims):
            # No batch norm on the input layer (as in DCGAN's discriminator).
            layers += hidden_layer(width, hidden, batch_norm and i > 0, activation, slope, pieces)
            width = hidden
        self.body = nn.Sequential(*layers)
        self.init_head(in_shape, width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)
