"""The step-statistics logger: losses, penalties and D's mean outputs, averaged
over `every` generator steps (and over the processes under DDP), to TensorBoard
and the console, with the throughput."""

from __future__ import annotations

import logging
import time

from ganrun.callbacks.base import EveryNSteps, mean_step_stats

log = logging.getLogger("ganrun")


class StepStats(EveryNSteps):
    def __init__(self, every: int):
        super().__init__(every)
        self.last: dict[str, float] = {}  # the last values logged: metrics.json's "losses"
        self.logged_at = -1  # the generator step of `last`
        self._clock: tuple[float, int] = (0.0, 0)

    def on_train_start(self, trainer, pl_module) -> None:
        self._clock = (time.perf_counter(), pl_module.images_seen)

    def act(self, trainer, module, step: int) -> None:
        if not module.stat_count:
            return
        stats = mean_step_stats(trainer, module)
        module.stat_sums, module.stat_count = None, 0
        self.last, self.logged_at = stats, step
        now, seen = time.perf_counter(), module.images_seen
        rate = (seen - self._clock[1]) / max(now - self._clock[0], 1e-9)
        self._clock = (now, seen)
        if trainer.is_global_zero:
            if trainer.logger is not None:
                trainer.logger.log_metrics({**stats, "perf/images_per_second": rate}, step=step)
            shown = "  ".join(f"{k} {v:.4f}" for k, v in stats.items()
                              if not k.startswith("health/"))  # TensorBoard and metrics.json
            log.info("step %d/%d  %s  %.0f img/s", step, module.max_steps, shown, rate)
