"""Optimizers of a fleet: one update for every member's stacked parameters (M, ...),
each member with its own hyperparameters (a learning rate is a number, not
structure). The arithmetic is torch.optim's, per member, in its order: scalars
computed in double and rounded to the parameters' type once, as torch does."""

from __future__ import annotations

import torch
from torch import Tensor


def _per_member(values: list[float], like: Tensor) -> Tensor:
    """Member values (M,), computed in double, shaped to broadcast over a stacked
    parameter (M, ...) in its type."""
    t = torch.tensor(values, dtype=torch.float64).to(like.dtype).to(like.device)
    return t.reshape(-1, *([1] * (like.dim() - 1)))


class StackedAdam:
    """torch.optim.Adam (no amsgrad) on stacked parameters: member k with lr[k],
    betas[k], eps[k], weight_decay[k]."""

    def __init__(self, params: list[Tensor], lr, betas, eps, weight_decay):
        self.params = list(params)
        self.lr, self.betas = [float(x) for x in lr], [tuple(map(float, b)) for b in betas]
        self.eps, self.weight_decay = [float(x) for x in eps], [float(x) for x in weight_decay]
        self.state = [{"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _scalars(self, t: int) -> dict[str, list[float]]:
        """torch.optim.Adam's scalars at step t, per member, in double."""
        b1 = [b[0] for b in self.betas]
        b2 = [b[1] for b in self.betas]
        return {"one_minus_b1": [1 - b for b in b1], "b2": b2,
                "one_minus_b2": [1 - b for b in b2],
                "step_size": [lr / (1 - b ** t) for lr, b in zip(self.lr, b1, strict=True)],
                "bc2_sqrt": [(1 - b ** t) ** 0.5 for b in b2], "eps": self.eps,
                "weight_decay": self.weight_decay}

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        scalars = self._scalars(self.steps)
        decays = any(self.weight_decay)
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            s = {k: _per_member(v, p) for k, v in scalars.items()}
            grad = p.grad + s["weight_decay"] * p if decays else p.grad
            state["m"].lerp_(grad, s["one_minus_b1"])
            state["v"].mul_(s["b2"]).add_(s["one_minus_b2"] * grad * grad)
            denom = (state["v"].sqrt() / s["bc2_sqrt"]).add_(s["eps"])
            p.add_(-s["step_size"] * (state["m"] / denom))
