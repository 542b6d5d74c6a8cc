"""Failures made on purpose, to see the health monitor name them (tests and
scripts/bench_health.py). Each is a callback added as a user adds their own:

    ganrun dataset=ring8 +callbacks.fault._target_=ganrun.callbacks.faults.OneModeG

The generators below replace G's output by points whose state is known (on one
mode, on the segment between two, spread around the modes, on the data itself)
from generator step `start` on; D trains as usual against them.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor, nn


def _last_layer(net: nn.Module) -> nn.Module:
    return [m for m in net.modules()
            if isinstance(m, nn.Linear | nn.ConvTranspose2d | nn.Conv2d)][-1]


def _normal(z: Tensor) -> Tensor:
    """2-D standard normal noise, one row per latent (any latent size)."""
    return torch.randn(z.shape[0], 2, device=z.device)


class ForcedPoints(pl.Callback):
    """G's output on a 2-D mixture replaced by `points(z)` from step `start` on (before
    it, G is itself). G keeps its parameters, so its optimizer runs as usual."""

    def __init__(self, start: int = 0):
        self.start = start

    def points(self, z: Tensor, centres: Tensor, std: float) -> Tensor:
        raise NotImplementedError

    def setup(self, trainer, pl_module, stage: str) -> None:
        from ganrun.data import mixture_centres

        cfg = pl_module.cfg.dataset
        centres, std = mixture_centres(cfg).to(pl_module.device), float(cfg.std)
        G, own = pl_module.G, pl_module.G.forward

        def forward(z, labels=None, **kwargs):
            if pl_module.g_steps < self.start:
                return own(z, labels, **kwargs)
            # Tied to G's parameters (times 0), so G's loss still has a graph.
            tie = sum(p.sum() for p in G.parameters()) * 0.0
            return self.points(z, centres.to(z.device), std) + tie

        G.forward = forward


class OneModeG(ForcedPoints):
    """Every sample on mode `mode`, spread as the mode is: mode collapse."""

    def __init__(self, start: int = 0, mode: int = 0):
        super().__init__(start)
        self.mode = mode

    def points(self, z, centres, std):
        return centres[self.mode] + std * _normal(z)


class SegmentG(ForcedPoints):
    """Samples spread evenly along the segment between modes 0 and 1: mass on two
    modes, few near either (collapse, blurred)."""

    def points(self, z, centres, std):
        t = torch.special.ndtr(z[:, :1])  # uniform on [0, 1]
        return centres[0] + t * (centres[1] - centres[0])


class SpreadG(ForcedPoints):
    """Samples around every mode at `width` times its std: every mode held, few near
    one (blur between modes)."""

    def __init__(self, start: int = 0, width: float = 15.0):
        super().__init__(start)
        self.width = width

    def points(self, z, centres, std):
        k = len(centres)
        pick = (torch.special.ndtr(z[:, 0]) * k).long().clamp_(max=k - 1)
        return centres[pick] + self.width * std * _normal(z)


class DataG(ForcedPoints):
    """Samples drawn as the data is (every mode alike, within its std): healthy; on
    mode 0 alone during each [from, to) window of generator steps in `collapsed`
    (collapse onsets, and recoveries)."""

    def __init__(self, start: int = 0, collapsed: list | None = None):
        super().__init__(start)
        self.collapsed = [tuple(w) for w in (collapsed or [])]
        self.module = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.module = pl_module

    def points(self, z, centres, std):
        k = len(centres)
        pick = (torch.special.ndtr(z[:, 0]) * k).long().clamp_(max=k - 1)
        step = self.module.g_steps
        if any(first <= step < last for first, last in self.collapsed):
            pick = torch.zeros_like(pick)
        return centres[pick] + std * _normal(z)


class CollapseG(pl.Callback):
    """After every step G makes one sample whatever z: its last layer's weights are
    zeroed (the output is its bias), set to `value` everywhere."""

    def __init__(self, value: float = 0.0):
        self.value = value

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        layer = _last_layer(pl_module.G)
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
            head = _last_layer(pl_module.D)
            with torch.no_grad():
                head.weight.neg_()
                head.bias.neg_()

