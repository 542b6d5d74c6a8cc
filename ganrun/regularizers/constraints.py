"""Constraints on D's weights (weight clipping, spectral norm) and dropout."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ganrun import batch
from ganrun.errors import UserError
from ganrun.models.layers import Maxout
from ganrun.ranges import above, at_least, between
from ganrun.regularizers.base import REGULARIZERS, Regularizer

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid, Maxout)


@REGULARIZERS.register
class WeightClip(Regularizer):
    """WGAN weight clipping: every D parameter into [-clip, clip] after each D step."""

    name = "weight_clip"
    acts_on_d = True
    joins_fleets, member_numbers = True, ("clip",)
    excludes = ("spectral_norm",)
    excludes_why = "both constrain D's Lipschitz constant"

    @dataclass
    class Config:
        clip: float = above(0)

    def __init__(self, clip: float = 0.01):
        self.clip = clip
        self._params: list[Tensor] = []

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        self._params = list(D.parameters())

    @torch.no_grad()
    def after_d_step(self, D: nn.Module) -> None:
        if isinstance(self.clip, Tensor):  # a fleet's members' own: D's stacked weights
            for p in self._params:
                clip = batch.per_member(self.clip, p)
                p.clamp_(-clip, clip)
            return
        torch._foreach_clamp_min_(self._params, -self.clip)
        torch._foreach_clamp_max_(self._params, self.clip)


@REGULARIZERS.register
class SpectralNorm(Regularizer):
    """Spectral normalisation (Miyato et al. 2018) of D's (and optionally G's) weights."""

    name = "spectral_norm"
    joins_fleets = True  # a fleet stacks the members' parametrizations (ganrun.fleet)
    acts_on_d = True

    @dataclass
    class Config:
        n_power_iterations: int = at_least(1)
        generator: bool = MISSING

    order = 5  # after the layers other regularizers add to D's head

    def __init__(self, n_power_iterations: int = 1, generator: bool = False):
        self.n_power_iterations = n_power_iterations
        self.generator = generator

    def rewrap(self, G: nn.Module, D: nn.Module) -> None:
        pass  # the stacked networks hold the members' parametrizations

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        for net in (D, G) if self.generator else (D,):
            for module in list(net.modules()):
                if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d | nn.Embedding):
                    nn.utils.parametrizations.spectral_norm(
                        module, n_power_iterations=self.n_power_iterations
                    )


@REGULARIZERS.register
class Dropout(Regularizer):
    """Dropout after every hidden activation of D (and/or G); G's output is left alone."""

    name = "dropout"
    joins_fleets = True  # a fleet's dropout draws each member's mask from its own stream

    @dataclass
    class Config:
        rate: float = between(0, 1, high_open=True)
        d: bool = MISSING
        g: bool = MISSING

    @staticmethod
    def check(params, cfg) -> None:
        if not (params.d or params.g):
            raise UserError("regularizer.dropout: set d=true and/or g=true")

    def __init__(self, rate: float = 0.3, d: bool = True, g: bool = False):
        self.rate, self.d, self.g = rate, d, g

    def rewrap(self, G: nn.Module, D: nn.Module) -> None:
        pass  # the stacked networks hold the members' dropout layers (ganrun.fleet.stack)

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        for net, wanted in ((D, self.d), (G, self.g)):
            if wanted:
                _after_activations(net, lambda: nn.Dropout(self.rate),
                                   skip=getattr(net, "out_activation", None))


def _after_activations(net: nn.Module, make, skip: nn.Module | None) -> None:
    for parent in list(net.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, ACTIVATIONS) and child is not skip:
                parent._modules[name] = nn.Sequential(child, make())
