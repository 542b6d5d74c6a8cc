"""Named statistics of the training step, after stylegan2-ada's
`training_stats.report(name, value)`: the step reports each value by name, the
callbacks read them by name at a log. Nothing depends on a value's position.

Values stay on the device: each step's are stacked once and added to a running
sum (per set of names, so a step that reports other names adds a set of its own);
a read averages them per name over the steps since the last read, reduces them
over the processes in one collective, and brings them to the host in one transfer.
`note(name, value)` records a value of this step alone (not averaged), read with
the others.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class StepStatistics:
    def __init__(self):
        self._step: dict[str, Tensor] = {}  # this step's reports
        self._repeats: dict[str, int] = {}  # reports of one name in this step, beyond the first
        self._sums: dict[tuple[str, ...], Tensor] = {}
        self._counts: dict[tuple[str, ...], int] = {}
        self._notes: dict[str, Tensor] = {}
        self.steps = 0  # steps since the last read

    def report(self, name: str, value: Tensor) -> None:
        """A value of this step (a 0-d tensor); reported twice in a step, the mean counts."""
        value = value.detach()
        if name in self._step:  # rare: a running mean over the step's reports
            k = self._repeats[name] = self._repeats.get(name, 1) + 1
            value = self._step[name] + (value - self._step[name]) / k
        self._step[name] = value

    def note(self, name: str, value: Tensor) -> None:
        """A value of this step alone, read at the next read as it is."""
        self._notes[name] = value.detach()

    def end_step(self) -> None:
        """Fold this step's reports into the sums (one stack, one add)."""
        if not self._step:
            return
        names = tuple(self._step)
        stacked = torch.stack(list(self._step.values()))
        if names in self._sums:
            self._sums[names].add_(stacked.to(self._sums[names]))
            self._counts[names] += 1
        else:
            self._sums[names], self._counts[names] = stacked, 1
        self._step.clear()
        self._repeats.clear()
        self.steps += 1

    def names(self) -> list[str]:
        """Every name there is to read, the step's reports first, in order of reporting."""
        out = list(dict.fromkeys(name for names in self._sums for name in names))
        return out + [name for name in self._notes if name not in out]

    def stacked(self) -> tuple[list[str], Tensor]:
        """(names, their means since the last read as one tensor, on the device)."""
        if len(self._sums) == 1 and not self._notes:  # the common case: one set of names
            (names, total), = self._sums.items()
            return list(names), total / self._counts[names]
        names = self.names()
        values = []
        for name in names:
            if name in self._notes:
                values.append(self._notes[name])
                continue
            parts = [(total[keys.index(name)], self._counts[keys])
                     for keys, total in self._sums.items() if name in keys]
            values.append(sum(v for v, _ in parts) / sum(c for _, c in parts))
        if not values:
            return [], torch.zeros(0)
        device = values[0].device
        return names, torch.stack([v.to(device, torch.float32) for v in values])

    def all_finite(self) -> bool:
        """Whether every sum is finite (one host sync)."""
        if not self._sums:
            return True
        flags = [torch.isfinite(total).all() for total in self._sums.values()]
        return bool(torch.stack(flags).all())

    def read(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """Every statistic's mean since the last read (`reduce`: over the processes), and
        start again."""
        names, means = self.stacked()
        if reduce is not None and means.numel():
            means = reduce(means)
        self.clear()
        return dict(zip(names, means.tolist(), strict=True))

    def clear(self) -> None:
        self._step.clear()
        self._repeats.clear()
        self._sums.clear()
        self._counts.clear()
        self._notes.clear()
        self.steps = 0
