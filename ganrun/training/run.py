"""run(cfg) -> metrics: seed, build everything, fit, write metrics.json; build(cfg):
the module, trainer and data a run trains with (for scripts and tests).

Undecorated, so tests call it directly; `ganrun.cli.train` is the only @hydra.main.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ganrun.config.schema import validate
from ganrun.errors import DivergedError, Interrupted, PeerDied, UserError
from ganrun.loggers import finish
from ganrun.memory import check_training
from ganrun.outputs import CHECKPOINT_FILE, METRICS_FILE, write_json
from ganrun.training.hparams import WriteHParams, choices_of, hparams_of, sweep_position
from ganrun.training.launcher import WorkerLauncher, cause_of, global_rank, strategy_for
from ganrun.training.resume import check_fits, checked_ckpt_path
from ganrun.training.signals import StopOnSignals

log = logging.getLogger("ganrun")


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"run directory {run_dir} is not writable: {e.strerror or e}") from None


def run(cfg: DictConfig, run_dir: str | Path | None = None,
        hydra_choices: dict | None = None) -> dict[str, Any]:
    """Train the GAN `cfg` describes; return what metrics.json holds. Under DDP every
    process runs this; process 0 writes the run directory."""
    cfg = validate(cfg)
    run_dir = Path(run_dir or _hydra_output_dir())
    primary = global_rank(_devices_per_node(cfg)) == 0
    check_training(cfg)
    if primary:
        check_writable(run_dir)
    choices = choices_of(cfg, hydra_choices)
    started = time.perf_counter()
    result: dict[str, Any] = {"status": "running", "reason": None, "g_steps": 0,
                              "images_seen": 0, "choices": choices, "seed": cfg.seed,
                              "pid": os.getpid(), "host": socket.gethostname()}
    module = trainer = None
    stop = StopOnSignals()
    try:
        with stop, warnings.catch_warnings():
            if primary:  # a job killed outright stays "running"
                write_json(run_dir / METRICS_FILE, result)
            result["status"] = "failed"
            ignore_known_warnings()
            if stop.name is None:  # not stopped while ganrun started
                ckpt_path = checked_ckpt_path(cfg.ckpt_path)
                module, trainer, datamodule, _ = build(cfg, run_dir, choices, write=primary)
                if ckpt_path:
                    check_fits(ckpt_path, cfg.ckpt_path, module)
                stop.attach(module)
                trainer.callbacks.append(stop)
            if stop.name is None:  # not stopped while setting up
                try:
                    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
                except SystemExit:  # Lightning's own answer to a signal, after ours
                    if stop.at_once is not None:  # a second one: stopped at once
                        raise stop.at_once from None
                    if stop.name is None:
                        raise
                except Exception as e:
                    died = _peer_death(trainer, module)
                    if died is None:
                        raise
                    raise died from e
        if module is not None and module.stopping and not module.finished:
            saved = run_dir / "checkpoints" / CHECKPOINT_FILE
            name, number = stop.name or "SIGTERM", stop.number or signal.SIGTERM
            raise Interrupted(name, number, module.g_steps, str(saved) if saved.is_file() else None)
        if stop.name is not None and not (module and module.finished):
            raise Interrupted(stop.name, stop.number, module.g_steps if module else 0, None)
        result["status"] = "finished"
    except Interrupted as e:
        result.update(status="interrupted", reason=str(e))
        raise
    except KeyboardInterrupt as e:  # a second signal: stopped at once, mid-step
        step = module.g_steps if module is not None else 0
        name = getattr(e, "signal_name", stop.name or "signal")
        e.reason = (f"stopped at once by a second {name} at generator step {step}; "
                    f"{_last_saved(trainer, run_dir)}")
        result.update(status="interrupted", reason=e.reason)
        raise
    except PeerDied as e:
        result["reason"] = str(e)
        # The collective's own traceback (gloo: "Connection reset by peer") is for the
        # log file; the console gets one line (ganrun.cli.train).
        to_log_file(logging.ERROR, "what process 0 saw: %s", e.__cause__,
                    exc_info=(type(e.__cause__), e.__cause__, e.__cause__.__traceback__))
        raise
    except DivergedError as e:
        result.update(status="diverged", reason=str(e), diverged_at=e.step)
        raise
    except UserError as e:
        result["reason"] = str(e)
        raise
    except Exception as e:
        result["reason"] = f"{e.__class__.__name__}: {e}"
        raise
    finally:
        wall = time.perf_counter() - started
        if trainer is not None:
            _join_workers(trainer)
        if module is not None:
            result.update(g_steps=module.g_steps, images_seen=module.images_seen,
                          **_outcomes(trainer, module))
        result["wall_seconds"] = round(wall, 3)
        result["images_per_second"] = round(result["images_seen"] / max(wall, 1e-9), 1)
        if primary:
            write_json(run_dir / METRICS_FILE, result)
            if trainer is not None:
                finish(trainer, result)
    return result


def ignore_known_warnings() -> None:
    """Lightning's and torch's warnings that say nothing to act on in a ganrun run (in
    a `warnings.catch_warnings()` block)."""
    # ganrun logs every log.every generator steps itself, not through Lightning.
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    # Raised inside Lightning's own pytree helper on newer torch; nothing to act on.
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
    # Lightning's all_gather (DDP) goes through a torch function deprecated in 2.10.
    warnings.filterwarnings("ignore", ".*all_gather is deprecated.*")
    # A regularizer's copy of G that samples (an average of its weights) stays in
    # eval mode on purpose.
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
    # Wrong here: the data stream restarts exactly at the checkpoint's step
    # (InMemoryBatches starts from g_steps; tests/test_faults.py's
    # test_sigterm_saves_and_the_resumed_run_matches_an_uninterrupted_one
    # checks the resumed run bit for bit).
    warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")


def _outcomes(trainer, module) -> dict[str, Any]:
    """What the callbacks measured (the last losses and metrics, the health, any
    roll-backs) and the regularizers' own sections, each as it contributes them."""
    out: dict[str, Any] = {"losses": {}, "metrics": {}}
    for callback in trainer.callbacks:
        out.update(getattr(callback, "summary", dict)())
    for reg in module.regularizers:
        section = reg.summary()
        if section:
            out[reg.name] = section
    return out


def _peer_death(trainer, module) -> PeerDied | None:
    """Another DDP process died (ganrun's launcher saw it exit): what to report, with
    the checkpoint process 0 saved alone (callbacks.checkpoint)."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if not isinstance(launcher, WorkerLauncher) or launcher.dead_peer(wait=5.0) is None:
        return None
    launcher.handled.set()
    rank, returncode = launcher.dead
    saved = next((c.rescued for c in trainer.callbacks if getattr(c, "rescued", None)), None)
    return PeerDied(rank, cause_of(returncode), module.g_steps, str(saved) if saved else None)


def to_log_file(level: int, message: str, *args, exc_info=None) -> None:
    """A record for the run's ganrun.log (Hydra's file handler) and not the console."""
    record = log.makeRecord(log.name, level, __file__, 0, message, args, exc_info)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _devices_per_node(cfg: DictConfig) -> int:
    devices = cfg.trainer.devices
    return devices if isinstance(devices, int) and devices > 0 else 1


def _join_workers(trainer) -> None:
    launcher = getattr(trainer.strategy, "launcher", None)
    if isinstance(launcher, WorkerLauncher):
        launcher.join()


class _DropTips(logging.Filter):
    """Lightning's advertising lines ("Tip: try installing ...") are not run output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropTips())


def _hydra_output_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def build(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None = None,
          write: bool = True, module_class: type | None = None):
    """(module, trainer, datamodule, sinks) for the validated `cfg`, writing in
    `run_dir` (config.yaml and the hyperparameters unless `write` is false); the
    module a GANModule, or of `module_class` (a subclass: a fleet's member); the sinks
    its loggers (ganrun.loggers)."""
    import pytorch_lightning as pl

    from ganrun.callbacks import build_callbacks
    from ganrun.data import GANDataModule, load_dataset
    from ganrun.loggers import make_sinks
    from ganrun.regularizers import samples_per_decision, supplies_labels
    from ganrun.training.module import GANModule

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    callbacks = build_callbacks(cfg.callbacks)
    dataset = load_dataset(cfg.dataset)
    datamodule = GANDataModule(dataset, cfg.dataset.batch_size * samples_per_decision(cfg.regularizer),
                               cfg.optim.n_critic, cfg.seed, with_labels=cfg.model.conditional,
                               with_index=supplies_labels(cfg.regularizer))
    module = (module_class or GANModule)(cfg, dataset.shape, num_classes=dataset.num_classes)
    sinks = make_sinks(cfg, run_dir)
    if write:
        overrides, varied = sweep_position()
        callbacks.append(WriteHParams(hparams_of(cfg, choices or choices_of(cfg), overrides,
                                                 varied), varied))
        OmegaConf.save(cfg, run_dir / "config.yaml")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer = pl.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            num_nodes=cfg.trainer.num_nodes,
            strategy=strategy_for(cfg, run_dir),
            precision=_precision(cfg.trainer),
            deterministic=cfg.trainer.deterministic,
            max_epochs=-1,
            max_steps=-1,
            logger=[sink.logger for sink in sinks] or False,
            callbacks=callbacks,
            enable_checkpointing=False,  # callbacks.checkpoint writes last.ckpt, atomically
            enable_progress_bar=False,   # one line every log.every steps instead
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=str(run_dir),
        )
    return module, trainer, datamodule, sinks


def _last_saved(trainer, run_dir: Path) -> str:
    """What a run stopped at once leaves to resume from: its last whole checkpoint."""
    saved = run_dir / "checkpoints" / CHECKPOINT_FILE
    if not saved.is_file():
        return "no checkpoint was written before it"
    step = next((c.saved_step for c in (trainer.callbacks if trainer else [])
                 if getattr(c, "saved_step", None) is not None), None)
    at = f" (generator step {step})" if step is not None else ""
    return f"the last checkpoint written before it stands: {saved}{at}"


def _precision(trainer_cfg: DictConfig) -> str:
    """`auto`: bf16 autocast where a GPU supports it, 32-bit otherwise (bf16 on a CPU
    is slower than 32-bit and not what a CPU run is for)."""
    if trainer_cfg.precision != "auto":
        return trainer_cfg.precision
    import torch

    gpu = trainer_cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


