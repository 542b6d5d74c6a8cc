"""The standard GAN's MLP generator and discriminator (points or flattened images)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import MISSING
from torch import Tensor, nn

from ganrun.models.layers import (
    MODELS,
    Discriminator,
    Generator,
    ModelConfig,
    ModelFamily,
    make_activation,
)


@MODELS.register
class MLP(ModelFamily):
    """The standard GAN: MLP G and D, on points or flattened images."""

    name = "mlp"

    @dataclass
    class Config(ModelConfig):
        hidden_dims: list[int] = MISSING

    @staticmethod
    def build(cfg, data_shape, num_classes, out_activation):
        hidden, slope = list(cfg.hidden_dims), cfg.leaky_slope
        return (MLPGenerator(cfg.latent_dim, data_shape, hidden, cfg.batch_norm_g,
                             cfg.activation, slope, out_activation, embed_dim=cfg.embed_dim,
                             num_classes=num_classes),
                MLPDiscriminator(data_shape, hidden, cfg.batch_norm_d,
                                 cfg.activation_d or cfg.activation, slope,
                                 num_classes=num_classes))


class MLPGenerator(Generator):
    def __init__(self, latent_dim: int, out_shape: tuple[int, ...], hidden_dims: list[int],
                 batch_norm: bool, activation: str, slope: float, out_activation: nn.Module,
                 num_classes: int = 0, embed_dim: int = 0):
        super().__init__(latent_dim, num_classes, embed_dim)
        self.out_shape = tuple(out_shape)
        self.out_activation = out_activation
        layers: list[nn.Module] = []
        width = self.input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden)]
            layers += [nn.BatchNorm1d(hidden)] if batch_norm else []
            layers += [make_activation(activation, slope)]
            width = hidden
        layers += [nn.Linear(width, math.prod(self.out_shape)), out_activation]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(self.latent_input(z, labels)).view(z.shape[0], *self.out_shape)


class MLPDiscriminator(Discriminator):
    def __init__(self, in_shape: tuple[int, ...], hidden_dims: list[int], batch_norm: bool,
                 activation: str, slope: float, num_classes: int = 0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for i, hidden in enumerate(hidden_dims):
            layers += [nn.Linear(width, hidden)]
            # No batch norm on the input layer (as in DCGAN's discriminator).
            layers += [nn.BatchNorm1d(hidden)] if batch_norm and i > 0 else []
            layers += [make_activation(activation, slope)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.init_head(in_shape, width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)
