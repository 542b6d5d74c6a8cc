"""Callbacks that make a run fail in one known way, added as a user adds their own
(`+callbacks.<name>._target_=health_helpers.<Class>`), so that the health warnings
can be seen to fire on a failure whose cause is known."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn


def _last_linear(net: nn.Module) -> nn.Module:
    return [m for m in net.modules() if isinstance(m, nn.Linear | nn.ConvTranspose2d | nn.Conv2d)][-1]


class CollapseG(pl.Callback):
    """After every step G makes one sample whatever z: its last layer's weights are
    zeroed (the output is its bias), set to `value` everywhere."""

    def __init__(self, value: float = 0.0):
        self.value = value

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        layer = _last_linear(pl_module.G)
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.fill_(self.value)


class FlipD(pl.Callback):
    """Right after every `every`-th generator step, D's head changes sign: what D
    learnt to call real it now calls fake, and the next interval D wins it back."""

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.g_steps % self.every == 0:
            head = _last_linear(pl_module.D)
            with torch.no_grad():
                head.weight.neg_()
                head.bias.neg_()
