"""A fleet's members, each a normal run: its own job directory, config.yaml,
TensorBoard events, samples, metrics, checkpoints and metrics.json, written by its
own callbacks (the very ones a standalone run has, built by ganrun.training.run.build),
called by the fleet's step for each member in turn with the member's own trainer (never
fitted: it holds the member's logger, callbacks, optimizers and run directory) and
module (a GANModule whose weights are views of the fleet's stack).

While a member's callbacks run, the global random stream is the member's own (its
checkpoint saves it, its metrics draw from it), exactly as in its standalone run.
A member whose callbacks raise (it diverged, a metric failed) leaves the fleet alone:
its metrics.json says why, the others go on.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback

from ganrun.errors import DivergedError, UserError
from ganrun.training.module import GANModule

log = logging.getLogger("ganrun")

# The member whose callbacks are running (its job directory's name), for log records.
CURRENT = contextvars.ContextVar("ganrun_fleet_member", default=None)


class MemberModule(GANModule):
    """A fleet's member: a GANModule (its weights views of the fleet's stack) whose
    regularizers' state is the fleet's, member k's part of it, given to it before its
    checkpoint is written and taken back after one is loaded (a resume, a roll-back)."""

    fleet = None  # the FleetModule, once there is one
    index = 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.fleet is not None:
            self.fleet.give_member_state(self.index)
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.fleet is not None:
            self.fleet.take_member_state(self.index)


@dataclass
class Member:
    cfg: Any
    run_dir: Path
    shell: Any  # GANModule
    trainer: pl.Trainer
    datamodule: Any
    stream: torch.Generator
    result: dict = field(default_factory=dict)
    active: bool = True

    @property
    def name(self) -> str:
        return self.run_dir.name


def _compact(module, state_dict: dict, prefix: str, local_metadata) -> None:
    """A member's state_dict holds copies: its tensors are views of the whole stack,
    which torch.save would write entire."""
    for key, value in state_dict.items():
        if value.untyped_storage().nbytes() > value.numel() * value.element_size():
            state_dict[key] = value.clone(memory_format=torch.contiguous_format)


def attach(trainer: pl.Trainer, module, datamodule) -> None:
    """The member's trainer as its callbacks see it in a fitted run: holding its module
    and data (what Lightning's fit sets, through public attributes)."""
    module.trainer = trainer
    trainer.strategy.connect(module)
    trainer.datamodule = datamodule
    datamodule.trainer = trainer
    module.register_state_dict_post_hook(_compact)


def build_member(cfg, run_dir: Path, choices: dict | None) -> Member:
    """Member `cfg` built exactly as its standalone run builds itself (seeded, its
    callbacks, data and networks, in that order); its random stream then starts where
    the standalone run's global one stands when training starts."""
    from ganrun.training.resume import check_fits, checked_ckpt_path
    from ganrun.training.run import build, check_writable

    check_writable(run_dir)
    module, trainer, datamodule, _ = build(cfg, run_dir, choices, write=True,
                                           module_class=MemberModule)
    if cfg.ckpt_path:
        check_fits(checked_ckpt_path(cfg.ckpt_path), cfg.ckpt_path, module)
    stream = torch.Generator()
    stream.set_state(torch.get_rng_state())
    attach(trainer, module, datamodule)
    return Member(cfg, run_dir, module, trainer, datamodule, stream)


@contextlib.contextmanager
def member_stream(member: Member):
    """The member's stream as the global one for the block."""
    saved = torch.get_rng_state()
    torch.set_rng_state(member.stream.get_state())
    token = CURRENT.set(member.name)
    try:
        yield
    finally:
        CURRENT.reset(token)
        member.stream.set_state(torch.get_rng_state())
        torch.set_rng_state(saved)


class MemberCallbacks(Callback):
    """Calls each active member's own callbacks, with its trainer and module, at each
    of the fleet's hooks."""

    def __init__(self, fleet, members: list[Member]):
        self.fleet, self.members = fleet, members

    def _each(self, hook: str, *args) -> None:
        for k, member in enumerate(self.members):
            if not member.active:
                continue
            with member_stream(member):
                try:
                    for callback in member.trainer.callbacks:
                        getattr(callback, hook)(member.trainer, member.shell, *args)
                except Exception as e:  # noqa: BLE001  this member's failure, not the fleet's
                    leave(member, e)
            if member.shell.finished:  # its last callbacks have run
                member.active = False
            self.fleet.active[k] = member.active

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._each("setup", stage)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fleet.prepare_members()
        for member in self.members:
            if member.cfg.ckpt_path:
                with member_stream(member):
                    restore(member)
        for k, member in enumerate(self.members):  # resumed at or past its budget: done,
            if member.shell.g_steps >= member.shell.max_steps:  # as its standalone run is
                member.shell.finished, member.active = True, False
                self.fleet.active[k] = False
        self._each("on_fit_start")

    def on_train_start(self, trainer, pl_module) -> None:
        self._each("on_train_start")
        if not any(member.active for member in self.members):
            trainer.should_stop = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._each("on_train_batch_start", None, batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._each("on_train_batch_end", outputs, None, batch_idx)
        if not any(member.active for member in self.members):
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self._each("on_train_end")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._each("on_exception", exception)


def restore(member: Member) -> None:
    """What Lightning's fit restores of a standalone run from its `ckpt_path`, into the
    member (its views of the stack, its optimizers linked to the stacked ones, its
    callbacks, its random stream): a member resumes from its own checkpoint, or from
    one its standalone run wrote."""
    from ganrun.training.resume import checked_ckpt_path

    shell, trainer = member.shell, member.trainer
    path = checked_ckpt_path(member.cfg.ckpt_path)
    checkpoint = torch.load(path, map_location=shell.device, weights_only=False)
    shell.on_load_checkpoint(checkpoint)
    shell.load_state_dict(checkpoint["state_dict"])
    for optimizer, state in zip(trainer.optimizers, checkpoint["optimizer_states"], strict=True):
        optimizer.load_state_dict(state)
    for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", []),
                             strict=False):
        config.scheduler.load_state_dict(state)
    saved = checkpoint.get("callbacks", {})
    for callback in trainer.callbacks:
        if callback.state_key in saved:
            callback.load_state_dict(saved[callback.state_key])
        callback.on_load_checkpoint(trainer, shell, checkpoint)
    log.info("%s: restored generator step %d from %s", member.name, shell.g_steps, path)


def leave(member: Member, error: Exception) -> None:
    """Member `member` stops alone: its metrics.json says why (diverged, failed)."""
    member.active = False
    member.shell.trained_step = None
    if isinstance(error, DivergedError):
        member.result.update(status="diverged", reason=str(error), diverged_at=error.step)
        log.warning("%s: %s; the fleet's other members go on", member.name, error)
    elif isinstance(error, UserError):
        member.result.update(status="failed", reason=str(error))
        log.error("%s: %s; the fleet's other members go on", member.name, error)
    else:
        member.result.update(status="failed", reason=f"{error.__class__.__name__}: {error}")
        log.exception("%s failed; the fleet's other members go on", member.name,
                      exc_info=(type(error), error, error.__traceback__))
