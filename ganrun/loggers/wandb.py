"""`logger=wandb`: Weights & Biases, each job a run, its sweep the run's group, its
config the composed config (with the group choices, the job's overrides and the keys
its sweep varies under `ganrun`); every scalar with its generator step
(`trainer/global_step`), the sample grids and metric pictures as images, and at the
end metrics.json's final values as the run's summary, metrics.json, config.yaml and
the strip as the run's files. Offline by default: the run is written to
<run>/wandb/offline-run-*/ and `wandb sync <that directory>` uploads it later."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, OmegaConf

from ganrun.loggers.base import LOGGERS, Sink, finals
from ganrun.outputs import METRICS_FILE


@LOGGERS.register
class Wandb(Sink):
    name = "wandb"
    package = extra = "wandb"

    @dataclass
    class Config:
        project: str = MISSING
        entity: str | None = MISSING
        offline: bool = MISSING

    def make(self):
        os.environ.setdefault("WANDB_SILENT", "true")  # wandb's banners and file notes
        import wandb
        from pytorch_lightning.loggers import WandbLogger

        run_dir = self.where.run_dir
        logger = WandbLogger(
            name=self.where.job, project=self.params.project, entity=self.params.entity,
            group=self.where.sweep, save_dir=str(run_dir), dir=str(run_dir),
            offline=self.params.offline, config=OmegaConf.to_container(self.cfg, resolve=True),
            reinit="create_new",  # a fleet's members, a sweep's jobs: a run each, side by side
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                    x_disable_meta=True))
        logger._wandb_init.pop("anonymous", None)  # Lightning's None: wandb warns it is ignored
        return logger

    def hparams(self, params: dict[str, Any], metrics: list[str], varied: list[str]) -> None:
        self.logger.experiment.config.update(
            {"ganrun": {"hparams": {k: (v if isinstance(v, int | float | str | bool) else str(v))
                                    for k, v in params.items()},
                        "varied": list(varied)}}, allow_val_change=True)

    def picture(self, tag: str, picture, step: int, path) -> None:
        if tag != "strip":  # the strip grows: its last, at the end
            self.logger.log_image(key=tag, images=[picture], step=step)

    def finish(self, result: dict[str, Any]) -> None:
        from ganrun.strips import STRIP_FILE

        run = self.logger.experiment
        run_dir = self.where.run_dir
        run.summary.update({**finals(result), "status": result.get("status"),
                            "g_steps": result.get("g_steps")})
        for path in (run_dir / METRICS_FILE, run_dir / "config.yaml",
                     run_dir / "samples" / STRIP_FILE):
            if path.is_file():
                run.save(str(path), base_path=str(run_dir), policy="now")
        run.finish(exit_code=0 if result.get("status") == "finished" else 1)
