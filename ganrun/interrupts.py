"""A signal that comes while ganrun starts (importing, composing the config, building
the run): recorded rather than raised in the middle of an import, and acted on where
the run can stop cleanly (ganrun.training.signals.StopOnSignals takes it over before
anything trains, and the run ends `interrupted` at generator step 0, in one line).
A second one stops the process at once, also in one line."""

from __future__ import annotations

import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: int | None = None


def defer() -> None:
    """From now on SIGINT and SIGTERM are recorded until a run takes them over."""
    for s in SIGNALS:
        signal.signal(s, _record)


def _record(signum: int, frame) -> None:
    global _pending
    if _pending is not None:
        name = signal.Signals(signum).name
        sys.stderr.write(f"ganrun: interrupted: {name} again while starting: stopped at once, "
                         "before anything was trained\n")
        sys.stderr.flush()
        os._exit(128 + signum)
    _pending = signum


def take() -> int | None:
    """The signal recorded so far (then forgotten), if any."""
    global _pending
    value, _pending = _pending, None
    return value
