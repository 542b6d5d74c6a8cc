"""run_fleet(cfgs, run_dirs): train the jobs `cfgs` (one structure, ganrun.fleet.plan)
together in this process, each writing its own run directory as its standalone run
would; return each member's metrics.json."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ganrun.config.schema import validate
from ganrun.errors import Interrupted, UserError
from ganrun.fleet.members import CURRENT, Member, MemberCallbacks, build_member
from ganrun.fleet.plan import difference, refusal, structure_of
from ganrun.loggers import finish
from ganrun.memory import check_training
from ganrun.outputs import CHECKPOINT_FILE, METRICS_FILE, write_json

log = logging.getLogger("ganrun")


def check_fleet(cfgs: list[DictConfig]) -> None:
    """One structure, every component one a fleet can stack: else one line naming why."""
    for cfg in cfgs:
        why = refusal(cfg)
        if why is not None:
            raise UserError(f"{why} cannot join a fleet yet")
    for cfg in cfgs[1:]:
        if structure_of(cfg) != structure_of(cfgs[0]):
            raise UserError(
                f"a fleet's members differ in structure: {difference(cfgs[0], cfg)}; only seeds "
                "and numbers (learning rates, betas, a loss's or regularizer's values) may "
                "differ (regularizer unrolled: not the optimizer's)")


class FleetBatches:
    """Each member's own batches (its InMemoryBatches: its seed's order), as one batch:
    for each of the step's D steps, the members' rows one block after another."""

    def __init__(self, loaders: list, n_critic: int):
        self.loaders, self.n_critic = loaders, n_critic

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)

    def _merge(self, parts: list[torch.Tensor]) -> torch.Tensor:
        n = self.n_critic
        blocks = [p.reshape(n, p.shape[0] // n, *p.shape[1:]) for p in parts]
        return torch.stack(blocks, 1).reshape(-1, *parts[0].shape[1:])

    def __iter__(self):
        for batches in zip(*self.loaders, strict=False):
            if isinstance(batches[0], tuple | list):
                yield tuple(self._merge(list(column)) for column in zip(*batches, strict=True))
            else:
                yield self._merge(list(batches))


def _fleet_data(members: list[Member]):
    import pytorch_lightning as pl

    class FleetData(pl.LightningDataModule):
        def train_dataloader(self):
            return FleetBatches([m.datamodule.train_dataloader() for m in members],
                                members[0].cfg.optim.n_critic)

    return FleetData()


def run_fleet(cfgs: list[DictConfig], run_dirs: list[str | Path],
              choices: list[dict] | None = None,
              hydra_cfgs: list[DictConfig] | None = None) -> list[dict[str, Any]]:
    """Train the members `cfgs` together; member k writes `run_dirs[k]`. Under Hydra's
    launcher, `hydra_cfgs[k]` is member k's Hydra config (its overrides, choices)."""
    import pytorch_lightning as pl

    from ganrun.fleet.module import FleetModule
    from ganrun.training.hparams import choices_of
    from ganrun.training.run import _outcomes, _precision
    from ganrun.training.signals import StopOnSignals

    cfgs = [validate(cfg) for cfg in cfgs]
    check_fleet(cfgs)
    check_training(cfgs)
    run_dirs = [Path(d) for d in run_dirs]
    started = time.perf_counter()
    members: list[Member] = []
    results: list[dict] = []  # every job's metrics.json, in the order given
    stop = StopOnSignals()
    fleet = None
    with stop, warnings.catch_warnings():
        _quiet()
        for k, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
            if hydra_cfgs:  # what this member's HParams and choices read
                from hydra.core.hydra_config import HydraConfig

                HydraConfig.instance().set_config(hydra_cfgs[k])
            given = (choices[k] if choices else
                     dict(hydra_cfgs[k].hydra.runtime.choices) if hydra_cfgs else None)
            chosen = choices_of(cfg, given)
            result = {"status": "running", "reason": None, "g_steps": 0, "images_seen": 0,
                      "choices": chosen, "seed": cfg.seed, "pid": os.getpid(),
                      "host": socket.gethostname()}
            results.append(result)
            try:
                with _quiet_trainer():  # the fleet's own trainer says what hardware it uses
                    member = build_member(cfg, run_dir, chosen)
            except UserError as e:  # this job alone fails (a checkpoint that is not there)
                result.update(status="failed", reason=str(e))
                write_json(run_dir / METRICS_FILE, result)
                token = CURRENT.set(run_dir.name)
                log.error("%s: %s; the fleet goes on without it", run_dir.name, e)
                CURRENT.reset(token)
                continue
            member.result = result
            members.append(member)
        if not members:
            return results
        names = [m.name for m in members]
        for k, member in enumerate(members):  # a job killed outright stays "running"
            member.result["fleet"] = {"size": len(members), "member": k, "members": names}
            write_json(member.run_dir / METRICS_FILE, member.result)
        fleet = FleetModule([m.shell for m in members], [m.stream for m in members])
        stop.attach(fleet)
        first = cfgs[0]
        trainer = pl.Trainer(
            accelerator=first.trainer.accelerator, devices=1, precision=_precision(first.trainer),
            deterministic=first.trainer.deterministic, max_epochs=-1, max_steps=-1,
            logger=False, callbacks=[MemberCallbacks(fleet, members), stop],
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, default_root_dir=str(run_dirs[0].parent))
        try:
            if stop.name is None:
                trainer.fit(fleet, datamodule=_fleet_data(members))
        except SystemExit:  # Lightning's own answer to SIGTERM, after ours has saved
            if stop.name is None:
                raise
        except Exception as e:  # the fleet's step failed: every member says why
            for member in members:
                if member.result["status"] == "running":
                    member.result["reason"] = f"{e.__class__.__name__}: {e}"
            raise
        finally:
            wall = time.perf_counter() - started
            for member in members:
                _finish(member, fleet, stop, wall, _outcomes)
    interrupted = [m for m in members if m.result["status"] == "interrupted"]
    if interrupted:  # every member's metrics.json says so; the caller says how to resume
        raise Interrupted(stop.name, stop.number, max(m.shell.g_steps for m in interrupted),
                          None)
    return results


def _finish(member: Member, fleet, stop, wall: float, outcomes) -> None:
    result, shell = member.result, member.shell
    if result["status"] == "running":  # else it left the fleet, saying why (members.leave)
        if shell.finished:
            result.update(status="finished")
        elif stop.name is not None:
            saved = member.run_dir / "checkpoints" / CHECKPOINT_FILE
            where = f"; checkpoint {saved}" if saved.is_file() else ""
            result.update(status="interrupted",
                          reason=f"{stop.name} at generator step {shell.g_steps}{where}")
        else:
            result.update(status="failed", reason=result.get("reason") or "the fleet stopped")
    result.update(g_steps=shell.g_steps, images_seen=shell.images_seen,
                  **outcomes(member.trainer, shell))
    result["wall_seconds"] = round(wall, 3)
    result["images_per_second"] = round(result["images_seen"] / max(wall, 1e-9), 1)
    write_json(member.run_dir / METRICS_FILE, result)
    finish(member.trainer, result)
    token = CURRENT.set(member.name)  # the member's line, in its own log
    log.info("%s: %d generator steps, %d images in %.1f s (a fleet of %d); outputs in %s",
             result["status"], result["g_steps"], result["images_seen"], wall,
             len(fleet.shells) if fleet is not None else 1, member.run_dir)
    CURRENT.reset(token)


@contextlib.contextmanager
def _quiet_trainer():
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = lightning.level
    lightning.setLevel(logging.WARNING)
    try:
        yield
    finally:
        lightning.setLevel(level)


def _quiet() -> None:
    from ganrun.training.run import ignore_known_warnings

    ignore_known_warnings()
    # The fleet's optimizers are its own (stacked); the members' are made at fit start.
    warnings.filterwarnings("ignore", ".*configure_optimizers.*returned.*None.*")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
