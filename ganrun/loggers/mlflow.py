"""`logger=mlflow`: each job a run of one experiment per sweep, in a store the sweep's
jobs share: by default sqlite:///<sweep dir>/mlflow.db (MLflow's default backend),
artifacts in <sweep dir>/mlartifacts/; a single run keeps its own in its directory.
A run gets the job's hyperparameters (overrides, group choices, key numbers) as
params, every scalar by generator step, the sample grids and metric pictures as they
are drawn, and at the end metrics.json's final values, config.yaml, metrics.json and
the strip as artifacts, and its status (FINISHED, FAILED or KILLED).

    mlflow ui --backend-store-uri sqlite:///outputs/multiruns/<stamp>/mlflow.db
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from ganrun.loggers.base import LOGGERS, Sink, finals
from ganrun.outputs import METRICS_FILE

STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
# metrics.json's status -> MLflow's run status
STATUS = {"finished": "FINISHED", "interrupted": "KILLED"}


@LOGGERS.register
class MLflow(Sink):
    name = "mlflow"
    package = extra = "mlflow"

    @dataclass
    class Config:
        tracking_uri: str | None = MISSING
        experiment: str | None = MISSING

    def make(self):
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # its store's set-up lines
        # and Lightning's "Experiment with name ... not found. Creating it."
        logging.getLogger("pytorch_lightning.loggers.mlflow").setLevel(logging.ERROR)
        from pytorch_lightning.loggers import MLFlowLogger

        uri = self.params.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.local = uri is None
        self.logged: dict[str, float] = {}  # the last value of each scalar logged
        if self.local:
            uri = f"sqlite:///{self.where.store / STORE_FILE}"
        with self._store_lock():  # the store, its experiment and this run made alone
            logger = MLFlowLogger(
                experiment_name=self.params.experiment or self.where.sweep or self.where.job,
                run_name=self.where.job, tracking_uri=uri,
                tags={"ganrun.run_dir": str(self.where.run_dir)},
                artifact_location=(self.where.store / ARTIFACT_DIR).as_uri() if self.local
                else None)
            logger.experiment  # noqa: B018 - process 0 only (a DDP worker's is a dummy)
        return logger

    @contextlib.contextmanager
    def _store_lock(self):
        """The jobs of a sweep side by side (hydra/launcher=joblib) open the one sqlite
        store at once: the first creates its tables, one at a time (MLflow's own set-up
        of a new store is not safe against another process doing the same)."""
        if not self.local:
            yield
            return
        self.where.store.mkdir(parents=True, exist_ok=True)
        with open(self.where.store / f".{STORE_FILE}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def hparams(self, params: dict[str, Any], metrics: list[str], varied: list[str]) -> None:
        self.logger.log_hyperparams(params)
        if varied:
            self.logger.experiment.set_tag(self.logger.run_id, "ganrun.varied", ",".join(varied))

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.logger.log_metrics(values, step=step)
        self.logged.update({k: float(v) for k, v in values.items()})

    def _artifact(self, path: Path, folder: str | None) -> None:
        self.logger.experiment.log_artifact(self.logger.run_id, str(path), folder)

    def picture(self, tag: str, picture, step: int, path: Path | None) -> None:
        if path is not None and tag != "strip":  # the strip grows: its last, at the end
            self._artifact(path, "samples")

    def finish(self, result: dict[str, Any]) -> None:
        from ganrun.strips import STRIP_FILE

        run_dir = self.where.run_dir
        values = {k: v for k, v in finals(result).items()  # those not logged as they are
                  if k not in self.logged or not _same(self.logged[k], v)}
        if values:
            self.logger.log_metrics(values, step=int(result.get("g_steps") or 0))
        for name in (METRICS_FILE, "config.yaml"):
            if (run_dir / name).is_file():
                self._artifact(run_dir / name, None)
        strip = run_dir / "samples" / STRIP_FILE
        if strip.is_file():
            self._artifact(strip, "samples")
        self.logger.experiment.set_tag(self.logger.run_id, "ganrun.status", result.get("status"))
        self.logger.experiment.set_terminated(self.logger.run_id,
                                              STATUS.get(result.get("status"), "FAILED"))


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN is NaN
