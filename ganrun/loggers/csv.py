"""`logger=csv`: Lightning's CSVLogger layout under the run directory: csv/metrics.csv
(a row per logging call: its generator step and the scalars logged) and
csv/hparams.yaml (the run's hyperparameters). Pictures stay in samples/."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ganrun.loggers.base import LOGGERS, Sink
from ganrun.ranges import at_least


@LOGGERS.register
class CSV(Sink):
    name = "csv"

    @dataclass
    class Config:
        flush_every: int = at_least(1)

    def make(self):
        from pytorch_lightning.loggers import CSVLogger

        self.calls = 0
        return CSVLogger(save_dir=str(self.where.run_dir), name="csv", version="",
                         flush_logs_every_n_steps=self.params.flush_every)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Logged, and written to metrics.csv every `flush_every` calls (and at the end):
        a run that dies loses at most so many rows."""
        self.logger.log_metrics(values, step=step)
        self.calls += 1
        if self.calls % self.params.flush_every == 0:
            self.logger.save()

    def hparams(self, params: dict[str, Any], metrics: list[str], varied: list[str]) -> None:
        self.logger.log_hyperparams(params)
        self.logger.save()
