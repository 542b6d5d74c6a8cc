"""A run's hyperparameters as its loggers show them: the group choices and key numbers
(a sweep's varied keys first) beside the metric columns the run logs (TensorBoard's
HParams view, tb/hparams.yaml, MLflow's params, ...: ganrun.loggers)."""

from __future__ import annotations

from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback

from ganrun.loggers import hparams

# Group choices shown in TensorBoard's HParams view, and the key numbers beside them
# (after the job's own overrides, those a sweep varies first).
KEY_NUMBERS = ("optim.lr_g", "optim.lr_d", "optim.n_critic", "dataset.batch_size",
               "model.latent_dim", "train.steps", "seed")

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


class WriteHParams(Callback):
    """Hands the hyperparameters to each logger once the metrics callback has set up its
    evaluator, so that the metric columns are those this run logs (no mode metrics for
    images, no IS from random_conv, ppl only when asked for)."""

    def __init__(self, params: dict[str, Any], varied: list[str]):
        self.params, self.varied, self.written = params, varied, False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.written or not trainer.is_global_zero:
            return
        hparams(trainer, self.params, logged_metrics(trainer), self.varied)
        self.written = True
