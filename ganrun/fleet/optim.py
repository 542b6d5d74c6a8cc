"""Optimizers of a fleet: one update for every member's stacked parameters (M, ...),
each member with its own hyperparameters (a learning rate is a number, not
structure). The arithmetic is torch.optim's, per member and in its order, its
scalars computed in double and rounded to the parameters' type once, as torch does:
`stacked_optimizer(cfgs, params, lrs)` makes the one that matches ganrun's `optim`
of the members (adam, rmsprop, sgd; the others cannot join a fleet yet)."""

from __future__ import annotations

import torch
from torch import Tensor

from ganrun.errors import UserError


def _per_member(values: list[float], like: Tensor) -> Tensor:
    """Member values (M,), computed in double, shaped to broadcast over a stacked
    parameter (M, ...) in its type."""
    t = torch.tensor(values, dtype=torch.float64).to(like.dtype).to(like.device)
    return t.reshape(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """The loop every stacked optimizer shares: per parameter, the member scalars of
    this step (`scalars`) shaped for it, and its state, handed to `update`."""

    def __init__(self, params: list[Tensor], hyper: dict[str, list[float]]):
        self.params = list(params)
        self.hyper = {k: [float(x) for x in v] for k, v in hyper.items()}
        self.state: list[dict] = [{} for _ in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def scalars(self, t: int) -> dict[str, list[float]]:
        return self.hyper

    def update(self, p: Tensor, grad: Tensor, state: dict, s: dict[str, Tensor]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        scalars = self.scalars(self.steps)
        decays = any(self.hyper.get("weight_decay", ()))
        shaped: dict[tuple, dict[str, Tensor]] = {}  # one set per parameter rank and type
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            key = (p.dim(), p.dtype, p.device)
            if key not in shaped:
                shaped[key] = {k: _per_member(v, p) for k, v in scalars.items()}
            s = shaped[key]
            grad = p.grad + s["weight_decay"] * p if decays else p.grad
            self.update(p, grad, state, s)


class StackedAdam(StackedOptimizer):
    """torch.optim.Adam (no amsgrad), member k with lr[k], betas[k], eps[k], weight_decay[k]."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        super().__init__(params, {"lr": lr, "beta1": [b[0] for b in betas],
                                  "beta2": [b[1] for b in betas], "eps": eps,
                                  "weight_decay": weight_decay})

    def scalars(self, t):
        h = self.hyper
        return {"one_minus_b1": [1 - b for b in h["beta1"]], "b2": h["beta2"],
                "one_minus_b2": [1 - b for b in h["beta2"]],
                "step_size": [lr / (1 - b ** t) for lr, b in zip(h["lr"], h["beta1"], strict=True)],
                "bc2_sqrt": [(1 - b ** t) ** 0.5 for b in h["beta2"]], "eps": h["eps"],
                "weight_decay": h["weight_decay"]}

    def update(self, p, grad, state, s):
        if not state:
            state.update(m=torch.zeros_like(p), v=torch.zeros_like(p))
        state["m"].lerp_(grad, s["one_minus_b1"])
        state["v"].mul_(s["b2"]).add_(s["one_minus_b2"] * grad * grad)
        denom = (state["v"].sqrt() / s["bc2_sqrt"]).add_(s["eps"])
        p.add_(-s["step_size"] * (state["m"] / denom))


class StackedRMSprop(StackedOptimizer):
    """torch.optim.RMSprop (not centered), member k with lr, alpha, eps, momentum and
    weight_decay of its own."""

    def __init__(self, params, lr, alpha, eps, momentum, weight_decay):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "momentum": momentum,
                                  "weight_decay": weight_decay})

    def scalars(self, t):
        h = self.hyper
        return {**h, "one_minus_alpha": [1 - a for a in h["alpha"]],
                "minus_lr": [-lr for lr in h["lr"]]}

    def update(self, p, grad, state, s):
        if not state:
            state.update(square=torch.zeros_like(p), buf=torch.zeros_like(p))
        state["square"].mul_(s["alpha"]).add_(s["one_minus_alpha"] * grad * grad)
        avg = state["square"].sqrt().add_(s["eps"])
        if any(self.hyper["momentum"]):
            state["buf"].mul_(s["momentum"]).add_(grad / avg)
            p.add_(s["minus_lr"] * state["buf"])
        else:
            p.add_(s["minus_lr"] * (grad / avg))


class StackedSGD(StackedOptimizer):
    """torch.optim.SGD (no dampening), member k with lr, momentum, weight_decay of its
    own; nesterov is structure (one for the fleet)."""

    def __init__(self, params, lr, momentum, weight_decay, nesterov: bool = False):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self.nesterov = nesterov

    def scalars(self, t):
        return {**self.hyper, "minus_lr": [-lr for lr in self.hyper["lr"]]}

    def update(self, p, grad, state, s):
        if any(self.hyper["momentum"]):
            if "buf" not in state:  # torch starts the buffer at the first gradient
                state["buf"] = grad.clone()
            else:
                state["buf"].mul_(s["momentum"]).add_(grad)
            grad = grad + s["momentum"] * state["buf"] if self.nesterov else state["buf"]
        p.add_(s["minus_lr"] * grad)


def stacked_optimizer(cfgs: list, params: list[Tensor], lrs: list[float]) -> StackedOptimizer:
    """The stacked optimizer of members whose `optim` configs are `cfgs` (one option
    for all: it is structure), at the members' learning rates `lrs`."""
    names = {cfg.name for cfg in cfgs}
    if len(names) > 1:
        raise UserError(f"optim: a fleet's members share one optimizer; got {', '.join(sorted(names))}")
    name = names.pop()
    wd = [cfg.weight_decay for cfg in cfgs]
    if name == "adam":
        return StackedAdam(params, lrs, [tuple(cfg.betas) for cfg in cfgs],
                           [cfg.eps for cfg in cfgs], wd)
    if name == "rmsprop":
        return StackedRMSprop(params, lrs, [cfg.alpha for cfg in cfgs], [cfg.eps for cfg in cfgs],
                              [cfg.momentum for cfg in cfgs], wd)
    if name == "sgd":
        nesterov = {bool(cfg.nesterov) for cfg in cfgs}
        if len(nesterov) > 1:
            raise UserError("optim.nesterov: a fleet's members share it (it is structure)")
        return StackedSGD(params, lrs, [cfg.momentum for cfg in cfgs], wd, nesterov.pop())
    raise UserError(f"optim={name} cannot join a fleet yet: fleets train with adam, rmsprop or sgd")
