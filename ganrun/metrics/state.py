"""The generated side of an evaluation as a torchmetrics `Metric`: each process adds
the features (and classifier logits) of its share of the samples; `compute()`
gathers them from every process, puts them back in sample order and scores the
whole set once, with the Evaluator's torch-fidelity-exact functions."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


class GeneratedFeatures(Metric):
    full_state_update = False

    def __init__(self, score: Callable[[dict[str, Tensor]], dict[str, float]],
                 readings: tuple[str, ...] = ()):
        """`readings`: the keys of the metrics' own readings among the features
        (Evaluator.features' "read/<metric>")."""
        super().__init__()
        self.score = score
        self.keys = {"features": "features", "logits": "logits",
                     **{key: f"reading_{i}" for i, key in enumerate(readings)}}
        for state in self.keys.values():
            self.add_state(state, default=[], dist_reduce_fx="cat")
        self.add_state("position", default=[], dist_reduce_fx="cat")  # sample numbers

    def update(self, first: int, out: dict[str, Tensor]) -> None:
        """The features of samples number first, first + 1, ... of the evaluation."""
        n = out["features"].shape[0]
        for key, state in self.keys.items():
            if key in out:
                getattr(self, state).append(out[key].to(self.device))
        self.position.append(torch.arange(first, first + n, device=self.device))

    def gathered(self) -> dict[str, Tensor]:
        """Every process's features, in sample order, on the CPU."""
        order = dim_zero_cat(self.position).argsort()
        out = {}
        for key, state in self.keys.items():
            if len(getattr(self, state)):
                values = dim_zero_cat(getattr(self, state))
                if values.numel() or key == "features":  # (N, 0) when no metric reads them
                    out[key] = values[order].cpu()
        return out

    def compute(self) -> dict[str, float]:
        """The scores, on process 0; {} elsewhere (computed once)."""
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return {}
        return self.score(self.gathered())
