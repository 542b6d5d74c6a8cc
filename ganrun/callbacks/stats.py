"""The step-statistics logger: losses, penalties and D's mean outputs, averaged
over `every` generator steps (and over the processes under DDP), to TensorBoard
and the console, with the throughput and the time left. Between those lines, a
run watched in a terminal (not a sweep) gets a short progress line at least every
HEARTBEAT seconds, so that slow steps (a ResNet on a CPU) are never silent."""

from __future__ import annotations

import datetime
import logging
import sys
import time

from ganrun import loggers
from ganrun.callbacks.base import EveryNSteps, mean_step_stats, run_dir
from ganrun.outputs import METRICS_FILE, heartbeat

log = logging.getLogger("ganrun")


HEARTBEAT = 30.0  # seconds without a console line before a progress line


def duration(seconds: float) -> str:
    """h:mm:ss (days as "1 day, 2:03:04")."""
    return str(datetime.timedelta(seconds=round(seconds)))


def watched() -> bool:
    """A person watching: the console is a terminal and this is not a sweep's job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return sys.stderr.isatty() and not sweep


class StepStats(EveryNSteps):
    def __init__(self, every: int):
        super().__init__(every)
        self.last: dict[str, float] = {}  # the last values logged: metrics.json's "losses"
        self.logged_at = -1  # the generator step of `last`
        self._clock: tuple[float, int] = (0.0, 0)
        self._start: tuple[float, int] = (0.0, 0)  # time and step when training started
        self._printed = 0.0  # when the console last got a line
        self.heartbeat = False

    def summary(self) -> dict:
        """metrics.json's `losses`: the last values logged (the health values have their
        own section)."""
        return {"losses": {k: v for k, v in self.last.items() if not k.startswith("health/")}}

    def on_train_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        self._clock = (now, pl_module.images_seen)
        self._start, self._printed = (now, pl_module.g_steps), now
        self.heartbeat = trainer.is_global_zero and watched()

    def time_left(self, module, now: float) -> str:
        """The wall time the remaining generator steps take at the pace so far (side
        jobs such as metrics included, in proportion)."""
        done = module.g_steps - self._start[1]
        if done <= 0:
            return "?"
        return duration((now - self._start[0]) / done * (module.max_steps - module.g_steps))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.heartbeat:  # sweeps, pipes, files: the step lines only, nothing per step
            return
        now = time.perf_counter()
        if (pl_module.trained_step is not None and not self.due(pl_module)
                and now - self._printed >= HEARTBEAT):
            done = pl_module.g_steps - self._start[1]
            log.info("step %d/%d  %.3g s/step  eta %s", pl_module.g_steps, pl_module.max_steps,
                     (now - self._start[0]) / max(done, 1), self.time_left(pl_module, now))
            self._printed = now

    def act(self, trainer, module, step: int) -> None:
        if not module.statistics.steps:
            return
        stats = mean_step_stats(trainer, module)
        self.last, self.logged_at = stats, step
        now, seen = time.perf_counter(), module.images_seen
        rate = (seen - self._clock[1]) / max(now - self._clock[0], 1e-9)
        self._clock = (now, seen)
        if trainer.is_global_zero:
            loggers.scalars(trainer, {**stats, "perf/images_per_second": rate}, step)
            # What metrics.json says of a run killed outright: the last step logged
            # (before its console line).
            heartbeat(run_dir(trainer) / METRICS_FILE, g_steps=step,
                      images_seen=module.images_seen,
                      logged_at=datetime.datetime.now().isoformat(timespec="seconds"),
                      losses={k: v for k, v in stats.items() if not k.startswith("health/")})
            shown = "  ".join(f"{k} {v:.4f}" for k, v in stats.items()
                              if not k.startswith("health/"))  # TensorBoard and metrics.json
            log.info("step %d/%d  %s  %.0f img/s  eta %s", step, module.max_steps, shown, rate,
                     self.time_left(module, now))
            self._printed = now
