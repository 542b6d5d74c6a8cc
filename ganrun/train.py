"""run(cfg) -> metrics: seed, build everything, fit, write metrics.json.

Undecorated, so tests call it directly; `ganrun.cli` is the only @hydra.main.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ganrun.errors import DivergedError, UserError
from ganrun.outputs import METRICS_FILE, write_json
from ganrun.schema import validate

log = logging.getLogger("ganrun")

# Group choices shown in TensorBoard's HParams view, and the key numbers beside them.
KEY_NUMBERS = ("optim.lr_g", "optim.lr_d", "optim.n_critic", "dataset.batch_size",
               "model.latent_dim", "train.steps", "seed")
HPARAM_METRICS = ("loss/d", "loss/g", "D/real", "D/fake", "metrics/fid", "metrics/kid", "metrics/is",
                  "metrics/precision", "metrics/recall", "metrics/density", "metrics/coverage",
                  "metrics/classes_covered", "metrics/modes", "metrics/high_quality",
                  "metrics/reverse_kl")


def choices_of(cfg: DictConfig, hydra_choices: dict | None = None) -> dict[str, str]:
    """Which option of each group this run uses: `{"loss": "wgan_gp", ...}`."""
    choices = {group: str(cfg[group].name) for group in ("dataset", "model", "loss", "optim")}
    choices["regularizer"] = "+".join(sorted(cfg.regularizer)) or "none"
    for group in ("trainer", "experiment"):
        value = (hydra_choices or {}).get(group)
        if value is not None:
            choices[group] = str(value)
    return choices


def hparams_of(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    params: dict[str, Any] = dict(choices)
    for key in KEY_NUMBERS:
        params[key] = OmegaConf.select(cfg, key)
    return params


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
    """Train the GAN `cfg` describes; return what metrics.json holds."""
    cfg = validate(cfg)
    run_dir = Path(run_dir or _hydra_output_dir())
    check_writable(run_dir)
    choices = choices_of(cfg, hydra_choices)
    started = time.perf_counter()
    result: dict[str, Any] = {"status": "failed", "reason": None, "g_steps": 0,
                              "images_seen": 0, "choices": choices, "seed": cfg.seed}
    module = None
    try:
        module, trainer, datamodule, logger = _build(cfg, run_dir, choices)
        ckpt_path = _checked_ckpt_path(cfg.ckpt_path)
        with warnings.catch_warnings():
            # ganrun logs every log.every generator steps itself, not through Lightning.
            warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
            # Raised inside Lightning's own pytree helper on newer torch; nothing to act on.
            warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
            # The EMA copy of G stays in eval mode on purpose.
            warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        result["status"] = "interrupted" if trainer.interrupted else "finished"
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
        if module is not None:
            result.update(g_steps=module.g_steps, images_seen=module.images_seen,
                          losses=module.last_stats, metrics=module.last_metrics)
        result["wall_seconds"] = round(wall, 3)
        result["images_per_second"] = round(result["images_seen"] / max(wall, 1e-9), 1)
        write_json(run_dir / METRICS_FILE, result)
    return result


class _DropTips(logging.Filter):
    """Lightning's advertising lines ("Tip: try installing ...") are not run output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropTips())


def _hydra_output_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def _checked_ckpt_path(path: str | None) -> str | None:
    if path is None:
        return None
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        raise UserError(f"ckpt_path={path}: no such file")
    return expanded


def _build(cfg: DictConfig, run_dir: Path, choices: dict[str, str]):
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import TensorBoardLogger

    from ganrun.data import GANDataModule, load_dataset
    from ganrun.module import GANModule

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dataset = load_dataset(cfg.dataset)
    datamodule = GANDataModule(dataset, cfg.dataset.batch_size, cfg.optim.n_critic, cfg.seed,
                               with_labels=cfg.model.conditional)
    preview = None
    if len(dataset.shape) == 1:
        preview = dataset.data[torch.randperm(len(dataset))[:2000]]
    evaluator = None
    if cfg.metrics.names:
        from ganrun.metrics.evaluator import Evaluator

        evaluator = Evaluator(cfg.metrics, dataset, cfg.dataset)
    module = GANModule(cfg, dataset.shape, run_dir, num_classes=dataset.num_classes,
                       real_preview=preview, evaluator=evaluator)
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tb", version="",
                               default_hp_metric=False, flush_secs=cfg.logger.flush_secs)
    write_hparams(logger, hparams_of(cfg, choices))
    OmegaConf.save(cfg, run_dir / "config.yaml")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer = pl.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            strategy=cfg.trainer.strategy,
            precision=cfg.trainer.precision,
            deterministic=cfg.trainer.deterministic,
            max_epochs=-1,
            max_steps=-1,
            logger=logger,
            enable_checkpointing=False,  # GANModule writes last.ckpt itself, atomically
            enable_progress_bar=False,   # one line every log.every steps instead
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=str(run_dir),
        )
    return module, trainer, datamodule, logger


def write_hparams(logger, params: dict[str, Any]) -> None:
    """Write TensorBoard's HParams summaries: every group choice and the key numbers.

    Unlike `logger.log_hyperparams(params, metrics)`, logs no placeholder metric
    values: the metric columns are filled from the scalars the run logs.
    """
    from torch.utils.tensorboard.summary import hparams

    clean = {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in params.items()}
    exp, ssi, sei = hparams(clean, dict.fromkeys(HPARAM_METRICS, 0.0))
    writer = logger.experiment._get_file_writer()
    for summary in (exp, ssi, sei):
        writer.add_summary(summary)
