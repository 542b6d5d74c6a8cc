"""An exponential moving average of G's weights, the generator of samples and metrics."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ganrun import batch
from ganrun.ranges import between
from ganrun.regularizers.base import REGULARIZERS, Regularizer


@REGULARIZERS.register
class EMA(Regularizer):
    """An exponential moving average of G's weights (Yazici et al. 2019), used for
    samples and metrics: ema <- d * ema + (1 - d) * theta after each G step.
    Buffers (batch-norm statistics) are copied.

    With `warmup`, d = min(decay, (1 + t) / (10 + t)) at the t-th update (the rule of
    TensorFlow's ExponentialMovingAverage with num_updates): a constant 0.999 would
    keep the average near G's random start for thousands of steps, so short runs
    would judge an untrained generator."""

    name = "ema"
    order = 10  # copies G after every structural change
    joins_fleets, member_numbers = True, ("decay",)

    @dataclass
    class Config:
        decay: float = between(0, 1)
        warmup: bool = MISSING

    def __init__(self, decay: float = 0.999, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self.model: nn.Module | None = None

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        self.model = copy.deepcopy(G).eval().requires_grad_(False)

    def current_decay(self) -> float | Tensor:
        t = self.updates
        if not self.warmup:
            return self.decay
        if isinstance(self.decay, Tensor):  # a fleet's members' own decays
            return self.decay.clamp(max=(1 + t) / (10 + t))
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def after_g_step(self, G: nn.Module) -> None:
        ema_params = list(self.model.parameters())
        weight = 1.0 - self.current_decay()
        if isinstance(weight, Tensor):  # per member, on a fleet's stacked weights
            for ema, p in zip(ema_params, G.parameters(), strict=True):
                ema.lerp_(p.detach(), batch.per_member(weight, ema))
        else:
            torch._foreach_lerp_(ema_params, [p.detach() for p in G.parameters()], weight)
        self.updates += 1
        for ema_buf, buf in zip(self.model.buffers(), G.buffers(), strict=True):
            ema_buf.copy_(buf)

    def sampler(self) -> nn.Module:
        return self.model

    def upgrade_state_dict(self, state_dict: dict) -> None:
        """ganrun <= 0.2 saved the average as the module's `G_ema`."""
        for key in [k for k in state_dict if k.startswith("G_ema.")]:
            state_dict["G_sampler." + key.removeprefix("G_ema.")] = state_dict.pop(key)

    def state_dict(self) -> dict:
        return {"updates": self.updates}  # the weights are in the module's state dict

    def load_state_dict(self, state: dict) -> None:
        self.updates = state.get("updates", 0)
