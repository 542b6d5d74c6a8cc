"""Callbacks the DDP tests add with `+callbacks.<name>._target_=ddp_helpers.<Class>`
(the way a user adds their own), to make one process misbehave."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class PoisonOneProcess(pl.Callback):
    """After generator step `step`, process `rank`'s step statistics become NaN, as if
    its batch had blown up; the other processes' stay finite."""

    order = -20  # before the divergence guard looks

    def __init__(self, step: int, rank: int):
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.g_steps == self.step and trainer.global_rank == self.rank:
            pl_module.statistics.report("loss/d", torch.tensor(float("nan")))
            pl_module.statistics.end_step()
