"""checkpoints/last.ckpt every `every` generator steps, at the end and when a signal
stops the run: written to a temporary file and renamed, so it is never half written."""

from __future__ import annotations

import pytorch_lightning as pl

from ganrun.callbacks.base import EveryNSteps, run_dir
from ganrun.outputs import CHECKPOINT_FILE


def save_checkpoint(trainer: pl.Trainer) -> None:
    """Every process takes part (the random streams are gathered); process 0 writes."""
    path = run_dir(trainer) / "checkpoints" / CHECKPOINT_FILE
    tmp = path.with_name(f".{CHECKPOINT_FILE}.tmp")
    trainer.save_checkpoint(tmp, weights_only=False)  # optimizer state too, to resume
    if trainer.is_global_zero:
        tmp.replace(path)
    trainer.strategy.barrier("ganrun.checkpoint")  # renamed before anyone reads it


class AtomicCheckpoint(EveryNSteps):
    at_stop = True
    order = 10  # after everything else has seen the step

    def act(self, trainer, module, step: int) -> None:
        save_checkpoint(trainer)
