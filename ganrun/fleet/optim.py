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
    this step (`scalars`) shaped for it, and its state, handed to `update`.
    TORCH_STATE names each state tensor as torch's optimizer does (a member's
    checkpoint holds torch's)."""

    TORCH_STATE: dict[str, str] = {}
    counts_steps = True

    def __init__(self, params: list[Tensor], hyper: dict[str, list[float]]):
        self.params = list(params)
        self.hyper = {k: [float(x) for x in v] for k, v in hyper.items()}
        self.state: list[dict] = [{} for _ in self.params]
        self.steps = 0

    @property
    def optimizer(self) -> _TorchFace:
        """What ganrun.optim's differentiable rules read of a torch optimizer (an unrolled
        D starts from its moments), for members whose optimizer numbers are equal."""
        return _TorchFace(self)

    def torch_group(self) -> dict:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
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


class _TorchFace:
    def __init__(self, stacked: StackedOptimizer):
        self.param_groups = [stacked.torch_group()]
        self.state = {}
        for p, state in zip(stacked.params, stacked.state, strict=True):
            if state:
                entry = {stacked.TORCH_STATE[k]: v for k, v in state.items()}
                if stacked.counts_steps:
                    entry["step"] = torch.tensor(float(stacked.steps))
                self.state[p] = entry


class StackedAdam(StackedOptimizer):
    """torch.optim.Adam (no amsgrad), member k with lr[k], betas[k], eps[k], weight_decay[k]."""

    TORCH_STATE = {"m": "exp_avg", "v": "exp_avg_sq"}

    def __init__(self, params, lr, betas, eps, weight_decay):
        super().__init__(params, {"lr": lr, "beta1": [b[0] for b in betas],
                                  "beta2": [b[1] for b in betas], "eps": eps,
                                  "weight_decay": weight_decay})

    def torch_group(self) -> dict:
        h = self.hyper
        return {"lr": h["lr"][0], "betas": (h["beta1"][0], h["beta2"][0]), "eps": h["eps"][0],
                "weight_decay": h["weight_decay"][0]}

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

    TORCH_STATE = {"square": "square_avg", "buf": "momentum_buffer"}

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

    TORCH_STATE = {"buf": "momentum_buffer"}
    counts_steps = False  # torch's SGD keeps no step count

    def __init__(self, params, lr, momentum, weight_decay, nesterov: bool = False):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self.nesterov = nesterov

    def torch_group(self) -> dict:
        h = self.hyper
        return {"lr": h["lr"][0], "momentum": h["momentum"][0],
                "weight_decay": h["weight_decay"][0], "nesterov": self.nesterov}

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


def link_member_optimizer(optimizer: torch.optim.Optimizer, stacked: StackedOptimizer,
                          k: int, pairs: list) -> None:
    """Make member k's own torch `optimizer` (over its views of the stack) the face of
    its part of `stacked`: its state_dict() holds that part in torch's names (a
    member's checkpoint resumes alone, as a standalone run), and load_state_dict()
    writes into it (a fleet resumed from its members' checkpoints). `pairs`: (stacked
    layer, name, stacked parameter, member parameter)."""
    from ganrun.fleet.layers import member_view

    index = {id(p): i for i, p in enumerate(stacked.params)}
    links = [(layer, name, index[id(tensor)], own) for layer, name, tensor, own in pairs]

    def kept(key: str) -> bool:  # torch keeps a momentum buffer only with momentum
        momentum = stacked.hyper.get("momentum")
        return key != "momentum_buffer" or momentum is None or momentum[k] != 0

    def export(opt) -> None:
        opt.state.clear()
        for layer, name, i, own in links:
            state = stacked.state[i]
            if not state:
                continue
            entry = {torch_key: member_view(layer, name, state[key], k).clone()
                     for key, torch_key in stacked.TORCH_STATE.items()
                     if key in state and kept(torch_key)}
            if stacked.counts_steps:
                entry["step"] = torch.tensor(float(stacked.steps))
            opt.state[own] = entry

    def load(opt) -> None:
        for layer, name, i, own in links:
            entry = opt.state.get(own)
            if not entry:
                continue
            state, p = stacked.state[i], stacked.params[i]
            for key, torch_key in stacked.TORCH_STATE.items():
                if key not in state:
                    state[key] = torch.zeros_like(p)
                if torch_key in entry:
                    member_view(layer, name, state[key], k).copy_(entry[torch_key])
            if "step" in entry:
                stacked.steps = int(entry["step"])
        opt.state.clear()

    optimizer.register_state_dict_pre_hook(export)
    optimizer.register_load_state_dict_post_hook(load)
