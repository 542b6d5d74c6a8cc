"""checkpoints/last.ckpt every `every` generator steps, at the end and when a signal
stops the run: written to a temporary file and renamed, so it is never half written.
Besides the module's state, it holds every process's random streams (latents,
penalties' interpolates, dropout), so that a resumed run draws what the
uninterrupted one would have."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

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

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.setdefault("ganrun", {})
        state["rng"] = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()
                        if torch.cuda.is_initialized() else []}
        if trainer.world_size > 1:  # a collective: every process saves, Lightning writes once
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
