"""`ganrun` as a user runs it (its console entry point, in a process of its own), with
SIGINT or SIGTERM sent to itself at a chosen moment: while the n-th evaluation or the
n-th checkpoint write is under way. Moments a test cannot hit by timing from outside.

    python tests/interrupting.py evaluation|checkpoint N SIGINT|SIGTERM TIMES -- <ganrun args>

A checkpoint write is cut in the middle: half its bytes are on disk when the signals
come, the rest follows only if the run goes on."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def main() -> None:
    phase, nth, name, times = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    sys.argv = ["ganrun", *sys.argv[sys.argv.index("--") + 1:]]
    signum, seen = signal.Signals[name], [0]

    def due() -> bool:
        seen[0] += 1
        return seen[0] == nth

    def send() -> None:
        for _ in range(times):
            os.kill(os.getpid(), signum)  # handled at once, in this thread

    if phase == "evaluation":  # after the first batch of generated samples is read
        import ganrun.callbacks.metrics as metrics

        measure = metrics.measure

        def cut_evaluation(module, evaluator, *args, **kwargs):
            if due():
                features = evaluator.features

                def first_batch_then_signal(*a, **k):
                    evaluator.features = features
                    out = features(*a, **k)
                    send()
                    return out

                evaluator.features = first_batch_then_signal
            return measure(module, evaluator, *args, **kwargs)

        metrics.measure = cut_evaluation
    else:
        import pytorch_lightning as pl

        save = pl.Trainer.save_checkpoint

        def cut_write(self, filepath, *args, **kwargs):
            save(self, filepath, *args, **kwargs)
            if due():
                whole = Path(filepath).read_bytes()
                with open(filepath, "wb") as f:
                    f.write(whole[: len(whole) // 2])
                    f.flush()
                    send()
                    f.write(whole[len(whole) // 2:])

        pl.Trainer.save_checkpoint = cut_write
    from ganrun.cli.train import main as ganrun

    ganrun()


if __name__ == "__main__":
    main()
