"""Where a run's numbers and pictures go: one `Sink` per logger of the `logger=` group
(TensorBoard, CSV, MLflow, Weights & Biases), each a Lightning logger and what it
takes of ganrun's output.

The callbacks never name a logger: they hand their scalars, pictures and
hyperparameters to `scalars`, `picture` and `hparams` here, which pass them to each
sink of the trainer; a sink takes what its logger can show. `finish` hands each sink
the run's metrics.json once it is written (final values, files, the run's status).
Only process 0 of a DDP run writes: Lightning's loggers write on rank 0 only, and the
callbacks call these on rank 0 only.
"""

from __future__ import annotations

import importlib.util
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ganrun.errors import UserError
from ganrun.registry import Registry

LOGGERS = Registry("logger")


@dataclass
class Where:
    """Where a run logs: its directory; the store the runs of its sweep share (the sweep
    directory, or the run directory for a single run); its name and its sweep's."""
    run_dir: Path
    store: Path
    job: str
    sweep: str | None = None

    @classmethod
    def of(cls, run_dir: Path) -> Where:
        """From Hydra's config of this job (a sweep's job: its sweep directory), else the
        run directory alone."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        run_dir = Path(run_dir).absolute()
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            sweep = Path(HydraConfig.get().sweep.dir).absolute()
            if run_dir.parent == sweep:
                return cls(run_dir, sweep, run_dir.name, sweep.name)
        return cls(run_dir, run_dir, run_dir.name)


class Sink:
    """A logger of the `logger=` group. `make()` builds its Lightning logger; the rest
    say what it takes: every scalar by generator step (`scalars`), the run's
    hyperparameters once (`hparams`), pictures as they are drawn (`picture`, with the
    PNG the run wrote), and metrics.json when the run ends (`finish`)."""

    name = "sink"
    package: str | None = None  # the module it needs beyond ganrun's own, and its extra
    extra: str | None = None

    @dataclass
    class Config:
        pass

    @classmethod
    def check(cls, params, cfg) -> None:
        """Its package is there (else one line naming the extra that installs it)."""
        if cls.package and importlib.util.find_spec(cls.package) is None:
            raise UserError(f"logger={cls.name} needs the {cls.package} package, which is not "
                            f"installed: pip install \"ganrun[{cls.extra}]\"")

    def __init__(self, params: DictConfig, cfg: DictConfig, where: Where):
        self.params, self.cfg, self.where = params, cfg, where
        self.logger = self.make()

    def make(self):
        raise NotImplementedError

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.logger.log_metrics(values, step=step)

    def hparams(self, params: dict[str, Any], metrics: list[str], varied: list[str]) -> None:
        """The run's hyperparameters (`params`: the sweep's varied keys first, the job's
        overrides, the group choices, key numbers) and the metric names it will log."""
        self.logger.log_hyperparams(params)

    def picture(self, tag: str, picture, step: int, path: Path | None) -> None:
        """A picture the run drew at `step` (HWC uint8), saved at `path`."""

    def finish(self, result: dict[str, Any]) -> None:
        """The run ended; `result` is what its metrics.json holds (written)."""
        self.logger.finalize("success" if result.get("status") == "finished" else "failed")


# Each Lightning logger ganrun made, and its sink.
_SINKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def make_sinks(cfg: DictConfig, run_dir: Path) -> list[Sink]:
    """The sinks of `cfg.logger` (in the order given) for a run writing `run_dir`."""
    where = Where.of(run_dir)
    sinks = [LOGGERS[name](params, cfg, where) for name, params in (cfg.logger or {}).items()]
    for sink in sinks:
        _SINKS[sink.logger] = sink
    return sinks


def sinks_of(trainer) -> list[Sink]:
    return [_SINKS[lg] for lg in getattr(trainer, "loggers", None) or [] if lg in _SINKS]


def scalars(trainer, values: dict[str, float], step: int) -> None:
    for sink in sinks_of(trainer):
        sink.scalars(values, step)


def picture(trainer, tag: str, picture, step: int, path: Path | None = None) -> None:
    for sink in sinks_of(trainer):
        sink.picture(tag, picture, step, path)


def hparams(trainer, params: dict[str, Any], metrics: list[str], varied: list[str]) -> None:
    for sink in sinks_of(trainer):
        sink.hparams(params, metrics, varied)


def finish(trainer, result: dict[str, Any]) -> None:
    """Each sink's end of the run, once metrics.json holds `result`. A sink that fails
    here (a store gone away) is named in the log; the run's own files are written."""
    import logging

    for sink in sinks_of(trainer):
        try:
            sink.finish(result)
        except Exception as e:  # noqa: BLE001 - the run is over and saved; say what failed
            logging.getLogger("ganrun").warning("logger=%s could not finish: %s: %s",
                                                sink.name, type(e).__name__, e)


def finals(result: dict[str, Any]) -> dict[str, float]:
    """metrics.json's final numbers as the run logged them: losses by their own names,
    metrics as metrics/<name>, health values as health/<name>."""
    def numbers(section: dict | None, prefix: str) -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in (section or {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool)}

    return {**numbers(result.get("losses"), ""), **numbers(result.get("metrics"), "metrics/"),
            **numbers(result.get("health"), "health/")}
