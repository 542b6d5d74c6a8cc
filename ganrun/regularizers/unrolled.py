"""Unrolled GAN: G's loss against D some updates ahead."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ganrun.errors import UserError
from ganrun.ranges import at_least
from ganrun.regularizers.base import REGULARIZERS, Regularizer


@REGULARIZERS.register
class Unrolled(Regularizer):
    """Unrolled GAN (Metz et al. 2017): G's loss is taken against D after `steps`
    more updates of D's own rule (the D optimizer's, from its current moments) on the
    step's real and generated batch, differentiated through those updates, so G
    answers D's reply to its move. D's own update is unchanged; the unrolled
    parameters are thrown away. The unrolled objective is D's loss without penalties."""

    name = "unrolled"
    answers = ("mode_collapse",)
    acts_on_d = True
    # In a fleet the unrolled updates are the stacked D's, by one rule for all members:
    # their optimizer's numbers are shared (structure), their seeds and the rest their own.
    joins_fleets, shares_optimizer_numbers = True, True

    @dataclass
    class Config:
        steps: int = at_least(1)

    @staticmethod
    def check(params, cfg) -> None:
        from ganrun.optim import OPTIMIZERS

        able = [n for n, c in OPTIMIZERS.items() if c.differentiable]
        if cfg.optim.name not in able:
            raise UserError(f"regularizer unrolled differentiates through D's optimizer; "
                            f"optim={cfg.optim.name} has no differentiable update (use "
                            f"{' or '.join(able)})")

    def __init__(self, steps: int = 5):
        self.steps = steps

    def unroll(self, D: nn.Module, objective, optimizer, rule) -> dict[str, Tensor]:
        """D's parameters after `steps` updates of `objective(params) -> D's loss` by
        `rule` (ganrun.optim, starting from the torch `optimizer`'s moments), as functions
        of G's output (the graph is kept), and D's buffers, copied."""
        named = dict(D.named_parameters())
        names, params = list(named), list(named.values())
        slots = rule.slots(optimizer, params)
        group = optimizer.param_groups[0]
        buffers = {k: b.clone() for k, b in D.named_buffers()}  # batch norm: no side effects
        current = [p.detach().requires_grad_(True) for p in params]
        for i in range(self.steps):
            # (a fleet's D loss is each member's: their sum gives each its own gradient)
            loss = objective({**dict(zip(names, current, strict=True)), **buffers}).sum()
            grads = torch.autograd.grad(loss, current, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g  # unused by the loss (mmd: the head)
                     for p, g in zip(current, grads, strict=True)]
            current, slots = rule.unrolled_step(current, grads, slots, group, i)
        return {**dict(zip(names, current, strict=True)), **buffers}
