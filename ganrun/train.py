"""run(cfg) -> metrics: seed, build everything, fit, write metrics.json.

Undecorated, so tests call it directly; `ganrun.cli` is the only @hydra.main.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback

from ganrun.distributed import global_rank
from ganrun.errors import DivergedError, Interrupted, PeerDied, UserError
from ganrun.outputs import CHECKPOINT_FILE, METRICS_FILE, checkpoint_of, write_json
from ganrun.schema import validate

log = logging.getLogger("ganrun")

# Group choices shown in TensorBoard's HParams view, and the key numbers beside them
# (after the job's own overrides, those a sweep varies first).
KEY_NUMBERS = ("optim.lr_g", "optim.lr_d", "optim.n_critic", "dataset.batch_size",
               "model.latent_dim", "train.steps", "seed")
HPARAMS_FILE = "hparams.yaml"  # in tb/, beside the event files: the same hparams


def choices_of(cfg: DictConfig, hydra_choices: dict | None = None) -> dict[str, str]:
    """Which option of each group this run uses: `{"loss": "wgan_gp", ...}`."""
    choices = {group: str(cfg[group].name) for group in ("dataset", "model", "loss", "optim")}
    choices["regularizer"] = "+".join(sorted(cfg.regularizer)) or "none"
    for group in ("trainer", "protocol", "method", "experiment"):
        value = (hydra_choices or {}).get(group)
        if value is not None:
            choices[group] = str(value)
    return choices


def hparams_of(cfg: DictConfig, choices: dict[str, str], overrides: list[str] | None = None,
               first: list[str] | None = None) -> dict[str, Any]:
    """The run's hyperparameters, in the order the HParams table shows them: the keys of
    `first` (those a sweep varies), the rest of the job's `overrides` (Hydra's
    `key=value` lines, each a hyperparameter whether or not KEY_NUMBERS has it), the
    group choices, the key numbers. Values are the run's (a group: its choice)."""
    from ganrun.outputs import parse_overrides

    given: dict[str, str] = {}
    for override in parse_overrides(overrides or []):
        if not override.is_delete() and override.key_or_group not in given:
            value = override.value()
            given[override.key_or_group] = value if isinstance(value, str) else \
                override.get_value_element_as_str()
    params: dict[str, Any] = {}
    for key in [*(first or []), *sorted(given), *choices, *KEY_NUMBERS]:
        if key not in params:
            params[key] = _value_of(cfg, choices, key, given.get(key))
    return params


def _value_of(cfg: DictConfig, choices: dict[str, str], key: str, given: str | None) -> Any:
    if key in choices:
        return choices[key]
    value = OmegaConf.select(cfg, key, default=None)
    if value is None or OmegaConf.is_config(value):  # a group (its choice) or not in cfg
        return given if given is not None else value
    return value


def sweep_position() -> tuple[list[str], list[str]]:
    """(the job's overrides, the keys that tell it apart from its sweep's other jobs,
    none in a single run), from Hydra's config of this job when there is one."""
    from hydra.core.hydra_config import HydraConfig

    from ganrun.outputs import varied_overrides

    if not HydraConfig.initialized():
        return [], []
    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return overrides, []
    varied = varied_overrides(overrides, OmegaConf.select(hydra_cfg, "sweep.dir", default=None))
    return overrides, [key for key, _ in varied]


def logged_metrics(trainer) -> list[str]:
    """The scalars an HParams row shows as metrics: the metrics this run measures, those
    of metrics.names that apply to its data and extractor (the evaluator's `skipped`
    tells which do not; no metrics callback, none), then the losses. TensorBoard shows
    the first five columns by default: the quality metrics where there are some."""
    from ganrun.callbacks.metrics import Metrics
    from ganrun.schema import LOSS_OUTPUTS, METRIC_OUTPUTS

    out = []
    for callback in trainer.callbacks:
        evaluator = getattr(callback, "evaluator", None) if isinstance(callback, Metrics) else None
        if evaluator is not None:
            skipped = evaluator.skipped
            out += [f"metrics/{output}" for name in evaluator.cfg.names if name not in skipped
                    for output in METRIC_OUTPUTS[name]]
    return [*out, *LOSS_OUTPUTS]


def check_devices(trainer_cfg: DictConfig) -> None:
    """A GPU asked for on a machine without one: one line naming the CPU settings,
    not Lightning's "No supported gpu backend found!" traceback."""
    import torch

    if trainer_cfg.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        cpu = ("trainer=ddp trainer.accelerator=cpu trainer.devices=2 (gloo)"
               if trainer_cfg.strategy == "ddp" else "trainer=cpu (or trainer=default: auto)")
        raise UserError(f"trainer.accelerator={trainer_cfg.accelerator} but torch sees no GPU "
                        f"here (torch.cuda.is_available() is False); on CPUs use {cpu}")


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
            # ganrun logs every log.every generator steps itself, not through Lightning.
            warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
            # Raised inside Lightning's own pytree helper on newer torch; nothing to act on.
            warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
            # Lightning's all_gather (DDP) goes through a torch function deprecated in 2.10.
            warnings.filterwarnings("ignore", ".*all_gather is deprecated.*")
            # The EMA copy of G stays in eval mode on purpose.
            warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
            # Wrong here: the data stream restarts exactly at the checkpoint's step
            # (InMemoryBatches starts from g_steps; tests/test_faults.py's
            # test_sigterm_saves_and_the_resumed_run_matches_an_uninterrupted_one
            # checks the resumed run bit for bit).
            warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
            ckpt_path = _checked_ckpt_path(cfg.ckpt_path)
            check_devices(cfg.trainer)
            module, trainer, datamodule, _ = _build(cfg, run_dir, choices, write=primary)
            if ckpt_path:
                _check_fits(ckpt_path, cfg.ckpt_path, module)
            stop.attach(module)
            trainer.callbacks.append(stop)
            if stop.name is None:  # not stopped while setting up
                try:
                    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
                except SystemExit:  # Lightning's own answer to SIGTERM, after ours has saved
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
    except PeerDied as e:
        result["reason"] = str(e)
        # The collective's own traceback (gloo: "Connection reset by peer") is for the
        # log file; the console gets one line (ganrun.cli).
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
                          **_outcomes(trainer))
            if module.partitioner is not None and module.partitioner.prior is not None:
                result["dyngan"] = module.partitioner.summary()
        result["wall_seconds"] = round(wall, 3)
        result["images_per_second"] = round(result["images_seen"] / max(wall, 1e-9), 1)
        if primary:
            write_json(run_dir / METRICS_FILE, result)
    return result


def _outcomes(trainer) -> dict[str, Any]:
    """What the callbacks measured: the last losses and metrics, any roll-backs."""
    from ganrun.callbacks.divergence import DivergenceGuard
    from ganrun.callbacks.health import HealthMonitor
    from ganrun.callbacks.metrics import Metrics
    from ganrun.callbacks.stats import StepStats

    out: dict[str, Any] = {"losses": {}, "metrics": {}}
    for callback in trainer.callbacks:
        if isinstance(callback, StepStats):  # the health values: their own section
            out["losses"] = {k: v for k, v in callback.last.items()
                             if not k.startswith("health/")}
        elif isinstance(callback, Metrics):
            out["metrics"] = callback.last
        elif isinstance(callback, DivergenceGuard) and callback.restores:
            out["restores"] = callback.restores
        elif isinstance(callback, HealthMonitor):
            out["health"] = callback.summary()
    return out


def _peer_death(trainer, module) -> PeerDied | None:
    """Another DDP process died (ganrun's launcher saw it exit): what to report, with
    the checkpoint process 0 saved alone (callbacks.checkpoint)."""
    from ganrun.callbacks.checkpoint import AtomicCheckpoint
    from ganrun.distributed import WorkerLauncher, cause_of

    launcher = getattr(trainer.strategy, "launcher", None)
    if not isinstance(launcher, WorkerLauncher) or launcher.dead_peer(wait=5.0) is None:
        return None
    launcher.handled.set()
    rank, returncode = launcher.dead
    saved = next((c.rescued for c in trainer.callbacks if isinstance(c, AtomicCheckpoint)), None)
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
    from ganrun.distributed import WorkerLauncher

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


class StopOnSignals(Callback):
    """SIGINT and SIGTERM (what SLURM sends before it kills a job) ask the module to
    finish its generator step, save a checkpoint and stop (under DDP every process
    stops after the same step); a second one stops at once. Only the main thread can
    own signals: elsewhere (joblib threads) this does nothing. Lightning puts its own
    SIGTERM handler in place when fit starts; ours takes over again at the first
    step, so that the decision to stop is ganrun's, taken after a whole step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.name: str | None = None
        self.number = 0
        self.module = None
        self.previous: dict[int, Any] = {}

    def attach(self, module) -> None:
        self.module = module
        module.stop_signal = self.name

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.previous:
            for s in self.SIGNALS:
                signal.signal(s, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.name is not None:
            raise KeyboardInterrupt
        self.name, self.number = signal.Signals(signum).name, signum
        if self.module is not None:
            self.module.stop_signal = self.name
        log.warning("%s: saving a checkpoint after this generator step, then stopping "
                    "(send it again to stop at once)", self.name)


def _checked_ckpt_path(path: str | None) -> str | None:
    """The checkpoint to resume from: a file, or a run directory's last checkpoint."""
    if path is None:
        return None
    try:
        return str(checkpoint_of(path))
    except UserError as e:
        raise UserError(f"ckpt_path={e}") from None


def _check_fits(path: str, given: str, module) -> None:
    """A checkpoint that is truncated, not ganrun's, or made by another model is named
    as such here, not deep inside Lightning's restore."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"ckpt_path={given}: not a readable checkpoint, the file is corrupt or "
                        f"truncated ({e.__class__.__name__}: {str(e)[:120]}); resume from "
                        "another checkpoint or start afresh without ckpt_path") from None
    if not isinstance(state, dict) or "ganrun" not in state or "state_dict" not in state:
        raise UserError(f"ckpt_path={given}: not a ganrun checkpoint (give a run's "
                        "checkpoints/last.ckpt)")
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state["state_dict"].items()}
    if ours != theirs:
        made = state["ganrun"].get("config", {})
        was = ", ".join(f"{g}={made[g]['name']}" for g in ("model", "dataset") if g in made)
        raise UserError(f"ckpt_path={given}: made by a different model or data shape ({was}, "
                        f"data {state['ganrun'].get('data_shape')}); resume with the options "
                        "that made it")


def _build(cfg: DictConfig, run_dir: Path, choices: dict[str, str], write: bool = True):
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    from ganrun.callbacks import build_callbacks
    from ganrun.data import GANDataModule, load_dataset
    from ganrun.distributed import strategy_for
    from ganrun.module import GANModule
    from ganrun.regularizers import pack_of

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    callbacks = build_callbacks(cfg.callbacks)
    dataset = load_dataset(cfg.dataset)
    datamodule = GANDataModule(dataset, cfg.dataset.batch_size * pack_of(cfg.regularizer),
                               cfg.optim.n_critic, cfg.seed, with_labels=cfg.model.conditional,
                               with_index="dyngan" in cfg.regularizer)
    module = GANModule(cfg, dataset.shape, num_classes=dataset.num_classes)
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tb", version="",
                               default_hp_metric=False, flush_secs=cfg.logger.flush_secs)
    if write:
        overrides, varied = sweep_position()
        callbacks.append(WriteHParams(hparams_of(cfg, choices, overrides, varied), varied))
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
            logger=logger,
            callbacks=callbacks,
            enable_checkpointing=False,  # callbacks.checkpoint writes last.ckpt, atomically
            enable_progress_bar=False,   # one line every log.every steps instead
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=str(run_dir),
        )
    return module, trainer, datamodule, logger


def _precision(trainer_cfg: DictConfig) -> str:
    """`auto`: bf16 autocast where a GPU supports it, 32-bit otherwise (bf16 on a CPU
    is slower than 32-bit and not what a CPU run is for)."""
    if trainer_cfg.precision != "auto":
        return trainer_cfg.precision
    import torch

    gpu = trainer_cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def write_hparams(logger, params: dict[str, Any], metrics: list[str],
                  varied: list[str] | tuple = ()) -> None:
    """Write TensorBoard's HParams summaries (every group choice and the key numbers,
    `metrics` the metric columns) and the same hparams to tb/hparams.yaml.

    Unlike `logger.log_hyperparams(params, metrics)`, logs no placeholder metric
    values: the metric columns are filled from the scalars the run logs. The `varied`
    hparams (a sweep's) are marked as differing between runs: TensorBoard lists those
    first, the others by name, and shows the first few by default.
    """
    from pytorch_lightning.core.saving import save_hparams_to_yaml
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams

    clean = {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in params.items()}
    exp, ssi, sei = hparams(clean, dict.fromkeys(metrics, 0.0))
    content = exp.value[0].metadata.plugin_data
    data = HParamsPluginData.FromString(content.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in varied
    content.content = data.SerializeToString()
    writer = logger.experiment._get_file_writer()
    for summary in (exp, ssi, sei):
        writer.add_summary(summary)
    logger.hparams = dict(clean)  # what Lightning would write to hparams.yaml: not {}
    save_hparams_to_yaml(Path(logger.log_dir) / HPARAMS_FILE, clean)


class WriteHParams(Callback):
    """Writes the HParams summaries once the metrics callback has set up its evaluator,
    so that the metric columns are those this run logs (no mode metrics for images,
    no IS from random_conv, ppl only when asked for)."""

    def __init__(self, params: dict[str, Any], varied: list[str]):
        self.params, self.varied, self.written = params, varied, False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.written or not trainer.is_global_zero or trainer.logger is None:
            return
        write_hparams(trainer.logger, self.params, logged_metrics(trainer), self.varied)
        self.written = True
