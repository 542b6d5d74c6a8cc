"""`logger=tensorboard` (the default): event files in <run>/tb/ with the scalars, the
sample grids, strips and metric pictures, and the HParams view (every group choice
and the key numbers beside the metric columns the run logs; also tb/hparams.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganrun.loggers.base import LOGGERS, Sink
from ganrun.ranges import at_least

HPARAMS_FILE = "hparams.yaml"  # in tb/, beside the event files: the same hparams


@LOGGERS.register
class TensorBoard(Sink):
    name = "tensorboard"

    @dataclass
    class Config:
        flush_secs: int = at_least(1)

    def make(self):
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(self.where.run_dir), name="tb", version="",
                                 default_hp_metric=False, flush_secs=self.params.flush_secs)

    def hparams(self, params: dict[str, Any], metrics: list[str], varied: list[str]) -> None:
        write_hparams(self.logger, params, metrics, varied)

    def picture(self, tag: str, picture, step: int, path: Path | None) -> None:
        self.logger.experiment.add_image(tag, picture, step, dataformats="HWC")


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
