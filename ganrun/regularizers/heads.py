"""Layers added to D's head that let it compare the samples of a batch: minibatch
discrimination (Salimans et al. 2016) and minibatch standard deviation (ProGAN)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ganrun.ranges import at_least
from ganrun.regularizers.base import REGULARIZERS, Regularizer


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016: features f (N, A) -> M = f T as (N, B, C); for each of the B
    kernels, o_b(x_i) = sum_j exp(-||M_i,b - M_j,b||_1); returns [f, o] of (N, A + B)."""

    def __init__(self, in_features: int, kernels: int, kernel_dim: int):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.1)

    def forward(self, f: Tensor) -> Tensor:
        m = (f @ self.T).view(-1, self.kernels, self.kernel_dim)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)  # (N, N, B)
        o = torch.exp(-l1).sum(1) - 1.0  # leave out each sample's match with itself
        return torch.cat([f, o], dim=1)


class MinibatchStdDev(nn.Module):
    """ProGAN (Karras et al. 2018): append the mean over features of the standard
    deviation across groups of `group_size` samples, as one more feature."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, f: Tensor) -> Tensor:
        n = f.shape[0]
        g = math.gcd(self.group_size, n)
        std = f.view(g, n // g, -1).var(0, unbiased=False).add(1e-8).sqrt()  # (N/g, A)
        stat = std.mean(1, keepdim=True).repeat(g, 1)  # group member i -> row i % (N/g)
        return torch.cat([f, stat], dim=1)


def _extend_head(D: nn.Module, layer: nn.Module, extra: int) -> None:
    """Put `layer` (features -> features + `extra` columns) before D's final linear."""
    head = D.head
    layers = list(head) if isinstance(head, nn.Sequential) else [head]
    final = layers[-1]
    layers = layers[:-1] + [layer, nn.Linear(final.in_features + extra, final.out_features)]
    D.head = nn.Sequential(*layers)


@REGULARIZERS.register
class MinibatchDiscriminationLayer(Regularizer):
    name = "minibatch_discrimination"
    answers = ("mode_collapse",)
    acts_on_d = True
    joins_fleets = True  # a fleet stacks its layer: each member compares its own samples

    @dataclass
    class Config:
        kernels: int = at_least(1)
        kernel_dim: int = at_least(1)

    def __init__(self, kernels: int = 32, kernel_dim: int = 8):
        self.kernels, self.kernel_dim = kernels, kernel_dim

    def rewrap(self, G: nn.Module, D: nn.Module) -> None:
        pass  # the stacked D holds the members' layers

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        in_features = _head_in_features(D)
        _extend_head(D, MinibatchDiscrimination(in_features, self.kernels, self.kernel_dim),
                     self.kernels)


@REGULARIZERS.register
class MinibatchStdDevLayer(Regularizer):
    name = "minibatch_stddev"
    acts_on_d = True
    joins_fleets = True  # a fleet applies its layer to each member's rows

    @dataclass
    class Config:
        group_size: int = at_least(2)

    def __init__(self, group_size: int = 4):
        self.group_size = group_size

    def rewrap(self, G: nn.Module, D: nn.Module) -> None:
        pass  # the stacked D holds the members' layers

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        _extend_head(D, MinibatchStdDev(self.group_size), 1)


def _head_in_features(D: nn.Module) -> int:
    head = D.head
    return (list(head)[-1] if isinstance(head, nn.Sequential) else head).in_features
