"""SIGINT and SIGTERM: finish the generator step, save, stop."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from pytorch_lightning import Callback

from ganrun import interrupts
from ganrun.errors import StoppedAtOnce

log = logging.getLogger("ganrun")


class StopOnSignals(Callback):
    """SIGINT and SIGTERM (what SLURM sends before it kills a job) ask the module to
    finish its generator step, save a checkpoint and stop (under DDP every process
    stops after the same step); a second one stops at once. Only the main thread can
    own signals: elsewhere (joblib threads) this does nothing. Lightning puts its own
    SIGTERM handler in place when fit starts; ours takes over again at the first
    step, so that the decision to stop is ganrun's, taken after a whole step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.name: str | None = None
        self.number = 0
        self.module = None
        self.previous: dict[int, Any] = {}
        self.at_once: StoppedAtOnce | None = None  # a second signal: stopped where it was

    def attach(self, module) -> None:
        self.module = module
        module.stop_signal = self.name

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
            early = interrupts.take()  # one that came while ganrun started: stop before training
            if early is not None:
                self.name, self.number = signal.Signals(early).name, early
                log.warning("%s while starting: stopping before training", self.name)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.previous:
            for s in self.SIGNALS:
                signal.signal(s, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.name is not None:
            # Lightning turns a KeyboardInterrupt in fit into its own exit(1): kept here,
            # the run raises it again once fit has returned (ganrun.training.run).
            self.at_once = StoppedAtOnce(signal.Signals(signum).name, signum)
            raise self.at_once
        self.name, self.number = signal.Signals(signum).name, signum
        if self.module is not None:
            self.module.stop_signal = self.name
        log.warning("%s: saving a checkpoint after this generator step, then stopping "
                    "(send it again to stop at once)", self.name)
