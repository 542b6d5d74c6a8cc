"""TensorBoard's HParams view of a run: the group choices and key numbers (a sweep's
varied keys first) beside the metric columns the run logs; also in tb/hparams.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback

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
    """The scalars an HParams row shows as metrics: those the callbacks say they log
    (`hparams_metrics()`: the metrics callback's, those of metrics.names that apply to
    the data and extractor), then the losses. TensorBoard shows the first five columns
    by default: the quality metrics where there are some."""
    from ganrun.config.schema import LOSS_OUTPUTS

    out = [name for callback in trainer.callbacks
           for name in getattr(callback, "hparams_metrics", list)()]
    return [*out, *LOSS_OUTPUTS]


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
