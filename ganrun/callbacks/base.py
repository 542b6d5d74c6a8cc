"""What every ganrun callback shares: acting every N generator steps, the run
directory, and the few collectives a side job needs under DDP."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

from ganrun.errors import UserError
from ganrun.ranges import at_least, check_ranges


class SideJob(pl.Callback):
    """A ganrun callback: what it needs from the others, and what it adds to
    metrics.json. `needs`: the callbacks it cannot work without (a configuration that
    removes one is refused before training, naming both: `check_needs`); `uses`: those
    it reads when they are there. Both are found with `peer`. `ranges`: a schema of
    its numeric settings (ganrun.ranges), checked with every other key before
    anything is written (ganrun.config.callbacks) and when it is made."""

    order = 0  # place among the callbacks: the divergence guard first, checkpoints last
    needs: tuple[type, ...] = ()
    uses: tuple[type, ...] = ()
    ranges: type | None = None

    def check(self, **settings) -> None:
        """Refuse a setting outside its declared range (`every=0: must be an integer >= 1`)."""
        if self.ranges is not None:
            check_ranges(self.ranges, settings)

    def summary(self) -> dict:
        """Sections of metrics.json this callback contributes ({"losses": ...})."""
        return {}


def peer(trainer: pl.Trainer, kind: type):
    """The trainer's callback of type `kind` (one a callback `needs` or `uses`), or None."""
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


@dataclass
class EveryRanges:
    every: int = at_least(1)


class EveryNSteps(SideJob):
    """A side job every `every` generator steps and at the last one (and, with
    `at_stop`, when a signal stops the run early). It acts only after a step was
    trained: not when the budget was already reached, nor after a roll-back."""

    at_stop = False
    ranges = EveryRanges

    def __init__(self, every: int):
        if not isinstance(every, int):
            raise UserError(f"{type(self).__name__}: every must be an integer (got {every!r})")
        check_ranges(EveryRanges, {"every": every})
        self.every = every

    def due(self, module) -> bool:
        step = module.trained_step
        return step is not None and (step % self.every == 0 or module.finished
                                     or (self.at_stop and module.stopping))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.due(pl_module):
            self.act(trainer, pl_module, pl_module.g_steps)

    def act(self, trainer: pl.Trainer, module, step: int) -> None:
        raise NotImplementedError


def run_dir(trainer: pl.Trainer) -> Path:
    return Path(trainer.default_root_dir)


def mean_step_stats(trainer: pl.Trainer, module) -> dict[str, float]:
    """The step statistics (ganrun.stepstats) averaged since the last read, by name,
    averaged over the processes under DDP: one collective, and one host sync."""
    reduce = ((lambda t: trainer.strategy.reduce(t, reduce_op="mean"))
              if trainer.world_size > 1 else None)
    return module.statistics.read(reduce)


def share_buffers(trainer: pl.Trainer, module) -> None:
    """Under DDP each process's batch norm statistics follow its own batches; samples
    and metrics use process 0's (the ones its checkpoint holds) everywhere."""
    if trainer.world_size > 1:
        for buffer in module.sampler.buffers():
            torch.distributed.broadcast(buffer, src=0)
