"""checkpoints/last.ckpt every `every` generator steps or `minutes` of wall time,
whichever comes first, at the end and when a signal stops the run: written to a
temporary file and renamed, so it is never half written. Besides the module's
state, it holds every process's random streams (latents, penalties' interpolates,
random layers), so that a resumed run draws what the uninterrupted one would have.

Under DDP, when another process dies (SIGKILL, a segfault, out of memory), process
0 saves the last completed step alone: its copy of the weights and optimizer states
is every process's (DDP keeps them identical), the dead process's random stream is
the one thing lost."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from ganrun.callbacks.base import EveryNSteps, run_dir
from ganrun.errors import UserError
from ganrun.outputs import CHECKPOINT_FILE
from ganrun.ranges import above, at_least


def save_checkpoint(trainer: pl.Trainer) -> None:
    """Every process takes part (the random streams are gathered); process 0 writes."""
    path = run_dir(trainer) / "checkpoints" / CHECKPOINT_FILE
    tmp = path.with_name(f".{CHECKPOINT_FILE}.tmp")
    with _whole_or_absent(tmp):
        trainer.save_checkpoint(tmp, weights_only=False)  # optimizer state too, to resume
        if trainer.is_global_zero:
            tmp.replace(path)
    trainer.strategy.barrier("ganrun.checkpoint")  # renamed before anyone reads it


def save_alone(trainer: pl.Trainer, launcher) -> Path:
    """Process 0's checkpoint with no collective (another process is gone), made by
    ganrun's launcher (the one module that reaches into Lightning's private API)."""
    path = run_dir(trainer) / "checkpoints" / CHECKPOINT_FILE
    tmp = path.with_name(f".{CHECKPOINT_FILE}.tmp")
    checkpoint = launcher.checkpoint_alone(trainer)
    with _whole_or_absent(tmp):
        trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, tmp)
        tmp.replace(path)
    return path


@contextmanager
def _whole_or_absent(tmp: Path):
    """A write into `tmp` cut short (a full disk, a second Ctrl-C, a kill of a peer)
    leaves no partial file behind; last.ckpt itself is only ever replaced whole."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class CheckpointRanges:
    """The values the checkpoint's settings take (train.ckpt_every, train.ckpt_minutes)."""

    every: int = at_least(1)
    minutes: float = above(0)


class AtomicCheckpoint(EveryNSteps):
    at_stop = True
    order = 10  # after everything else has seen the step
    ranges = CheckpointRanges

    def __init__(self, every: int, minutes: float = 10.0):
        super().__init__(every)
        self.check(minutes=minutes)
        self.seconds = 60.0 * minutes
        self.saved_at = 0.0  # time.monotonic() of the last checkpoint (or of the start)
        self.saved_step: int | None = None  # the generator step of the last one written
        self.last_step: LastStep | None = None  # under DDP
        self.alone = False  # saving without the other processes
        self.rescued: Path | None = None  # what process 0 saved after another one died

    def on_train_start(self, trainer, pl_module) -> None:
        self.saved_at = time.monotonic()
        if trainer.world_size > 1 and trainer.is_global_zero:
            self.last_step = LastStep(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Each process's clock; the module shares the decision (any of them) after the step.
        pl_module.checkpoint_asked = time.monotonic() - self.saved_at >= self.seconds
        if self.last_step is not None:
            self.last_step.take()

    def due(self, module) -> bool:
        return super().due(module) or (module.trained_step is not None and module.checkpoint_now)

    def act(self, trainer, module, step: int) -> None:
        save_checkpoint(trainer)
        self.saved_at = time.monotonic()
        self.saved_step = step

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Another process died: the collective in progress failed here (or would hang,
        see ganrun.training.launcher). Process 0 puts back what it had changed of the
        step in progress and saves the last completed step alone. Only ganrun's launcher
        can tell (`dead_peer`); under any other, nothing is saved here."""
        launcher = getattr(trainer.strategy, "launcher", None)
        if (self.last_step is None or not hasattr(launcher, "dead_peer")
                or not isinstance(exception, Exception) or isinstance(exception, UserError)):
            return
        if launcher.dead_peer(wait=5.0) is None:  # a failure of this process: not ours to save
            return
        self.last_step.restore()
        self.alone = True
        try:
            self.rescued = save_alone(trainer, launcher)
        finally:
            self.alone = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.setdefault("ganrun", {})
        state["rng"] = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()
                        if torch.cuda.is_initialized() else []}
        if trainer.world_size > 1 and not self.alone:  # a collective: Lightning writes once
            state["rng_ranks"] = _gathered(pl_module, torch.get_rng_state())
            if pl_module.device.type == "cuda":
                state["cuda_rng_ranks"] = _gathered(
                    pl_module, torch.cuda.get_rng_state(pl_module.device))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Each process its own stream when the process count is the one saved; else
        process 0 takes the saved one and the others keep theirs (seed rule)."""
        state = checkpoint.get("ganrun", {})
        rng, ranks, rank = state.get("rng"), state.get("rng_ranks", []), trainer.global_rank
        device = pl_module.device
        if len(ranks) == trainer.world_size > 1:
            # A copy: rows of a saved stack share its storage, which set_rng_state misreads.
            torch.set_rng_state(ranks[rank].cpu().clone())
            if state.get("cuda_rng_ranks") and device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng_ranks"][rank].cpu().clone(), device)
        elif rng and rank == 0:
            torch.set_rng_state(rng["torch"].cpu())
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])


def _gathered(module, state: Tensor) -> list[Tensor]:
    return [row.clone() for row in module.all_gather(state.to(module.device)).cpu()]


class LastStep:
    """Process 0's state as the last completed step left it, copied before each step
    under DDP (weights, buffers, optimizer states, learning-rate schedules, step
    counters, random stream; on the device, no host sync): the step in progress when
    another process dies is taken back before the checkpoint is saved. The
    regularizers' own state (a replay buffer, say) is not copied: it is the one at the
    failure, as it would be after a roll-back (train.on_diverge=restore)."""

    def __init__(self, trainer: pl.Trainer, module):
        self.trainer, self.module = trainer, module
        self.live: list[Tensor] = []
        self.copies: list[Tensor] = []
        self.counters: tuple = ()
        self.schedules: list[dict] = []

    def _tensors(self) -> list[Tensor]:
        live = [*self.module.parameters(), *self.module.buffers()]
        for optimizer in self.trainer.optimizers:
            for state in optimizer.state.values():
                live += [v for v in state.values() if isinstance(v, Tensor)]
        return live

    @torch.no_grad()
    def take(self) -> None:
        # Listed anew each step: an optimizer makes its state at its first step, and a
        # roll-back (train.on_diverge=restore) replaces it.
        self.live = self._tensors()
        if len(self.copies) == len(self.live):
            torch._foreach_copy_(self.copies, self.live)
        else:
            self.copies = [t.detach().clone() for t in self.live]
        module = self.module
        cuda = module.device.type == "cuda"
        self.counters = (module.g_steps, module.images_seen, torch.get_rng_state(),
                         torch.cuda.get_rng_state(module.device) if cuda else None)
        self.schedules = [c.scheduler.state_dict() for c in self.trainer.lr_scheduler_configs]

    @torch.no_grad()
    def restore(self) -> None:
        if not self.live:
            return
        torch._foreach_copy_(self.live, self.copies)
        module = self.module
        module.g_steps, module.images_seen, cpu_rng, cuda_rng = self.counters
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, module.device)
        for config, state in zip(self.trainer.lr_scheduler_configs, self.schedules, strict=True):
            config.scheduler.load_state_dict(state)
