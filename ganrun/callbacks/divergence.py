"""The divergence guard: looks for NaN / Inf in the step statistics every
`check_every` generator steps and before any other side job acts (so no diverged
model is logged, sampled, measured or saved). Then it stops the run
(`on_diverge: stop`, status diverged) or rolls back to the last checkpoint with
lower learning rates (`restore`). Under DDP the processes decide together:
divergence on any of them stops or rolls back all."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ganrun.callbacks.base import EveryNSteps, run_dir
from ganrun.callbacks.checkpoint import save_checkpoint
from ganrun.errors import DivergedError, one_of
from ganrun.outputs import CHECKPOINT_FILE
from ganrun.ranges import at_least, between

log = logging.getLogger("ganrun")


@dataclass
class DivergenceRanges:
    check_every: int = at_least(1)
    max_restores: int = at_least(0)
    restore_lr_factor: float = between(0, 1, low_open=True)


class DivergenceGuard(EveryNSteps):
    order = -10  # before anything else looks at the step
    ranges = DivergenceRanges

    def __init__(self, check_every: int, on_diverge: str = "stop", max_restores: int = 3,
                 restore_lr_factor: float = 0.5):
        super().__init__(check_every)
        self.check(max_restores=max_restores, restore_lr_factor=restore_lr_factor)
        one_of("on_diverge", on_diverge, ("stop", "restore"))
        self.on_diverge, self.max_restores = on_diverge, max_restores
        self.restore_lr_factor = restore_lr_factor
        self.restores: list[dict] = []  # roll-backs, for metrics.json
        self.finite_at = 0
        self.values: dict[str, float] = {}  # the step statistics that diverged

    def summary(self) -> dict:
        return {"restores": self.restores} if self.restores else {}  # metrics.json's roll-backs

    def on_train_start(self, trainer, pl_module) -> None:
        self.finite_at = pl_module.g_steps
        if self.on_diverge == "restore" and pl_module.g_steps == 0:
            save_checkpoint(trainer)  # something good to roll back to

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Every process takes the same decision here, so the collective below matches.
        if not pl_module.statistics.steps or not (self.due(pl_module) or any(
                c.due(pl_module) for c in trainer.callbacks
                if isinstance(c, EveryNSteps) and c is not self)):
            return
        step = pl_module.g_steps
        finite = pl_module.statistics.all_finite()  # one host sync
        if trainer.world_size > 1:
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self.finite_at = step
            return
        message = f"diverged at generator step {step}: {self._culprits(trainer, pl_module)} " \
                  f"(finite at step {self.finite_at})"
        if self.on_diverge == "restore" and len(self.restores) < self.max_restores:
            self._restore_last_good(trainer, pl_module, step, message)
            return
        raise DivergedError(message, step, self.values)

    def _culprits(self, trainer, module) -> str:
        """The non-finite values, of the first process that has any."""
        names, means = module.statistics.stacked()
        rows = [means]
        if trainer.world_size > 1:
            rows = list(trainer.strategy.all_gather(means))
        for rank, row in enumerate(rows):
            values = dict(zip(names, row.tolist(), strict=True))
            bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
            if bad:
                self.values = values
                where = f"process {rank}: " if len(rows) > 1 else ""
                return where + ", ".join(bad)
        return ""

    def _restore_last_good(self, trainer, module, step: int, message: str) -> None:
        """Load checkpoints/last.ckpt (written before any NaN: checks precede saves) into
        the running model and optimizers, with the learning rates times the factor."""
        path = run_dir(trainer) / "checkpoints" / CHECKPOINT_FILE
        state = torch.load(path, map_location=module.device, weights_only=False)
        saved = state["ganrun"]
        scale = module.lr_scale * self.restore_lr_factor
        module.load_state_dict(state["state_dict"])
        # Not the random streams (callbacks.checkpoint's): the same draws would lead to
        # the same NaN.
        module.on_load_checkpoint({"ganrun": saved})
        change = scale / module.lr_scale  # the checkpoint's rates carry its own scale
        module.lr_scale = scale
        for optimizer, opt_state in zip(module.optimizers_in_use, state["optimizer_states"],
                                        strict=True):
            optimizer.load_state_dict(opt_state)
            for group in optimizer.param_groups:
                group["lr"] *= change
        if module.decays:
            for scheduler, sched_state in zip(module.lr_schedulers(), state["lr_schedulers"],
                                              strict=True):
                scheduler.load_state_dict(sched_state)
                scheduler.base_lrs = [lr * change for lr in scheduler.base_lrs]
        module.statistics.clear()
        module.trained_step = None
        self.finite_at = module.g_steps
        self.restores.append({"at_step": step, "to_step": module.g_steps,
                              "lr_scale": module.lr_scale, "reason": message})
        if trainer.is_global_zero:
            log.warning("%s; restored generator step %d with learning rates x%g (%d of at most %d)",
                        message, module.g_steps, module.lr_scale, len(self.restores),
                        self.max_restores)
